"""The exposure controller's extra measurements on θ_t: probe NLL and grounding score g_t.

Only the learned exposure policy needs them (`ExposurePolicy.needs_probe_nll`,
`needs_grounding_score`). Both use problems held out of training: `hold_out_probe` takes
2 × `exposure.probe_size` problems of the training data (seeded) out of the prompts the loop
samples, the first half for the probe NLL, the second for g_t.

- probe NLL: the student's mean NLL per token of the probe problems' reference solutions under the
  student prompt (mean over problems of each problem's token mean), one no-grad forward; every
  step when it is the reward's progress signal ℓ_t, else (a state feature only) every 4th step.
- g_t (ATESD's teacher-grounded score): `atesd.scoring.grounding_scores` on the grounding problems
  at the step's reveal ratio, averaged over them.
Both are measured before the step's update (their cost: timing/probe_s).

Several processes share the work: process r scores the problems r, r + W, ... (W processes),
padded to the same count on every process (sharded forwards are collectives), and the per-problem
values are gathered back in problem order, so every process reports the same value whatever W.
With a frozen teacher (`teacher.kind=frozen`) a problem's grounding score depends only on the
problem and the steps revealed at α, so it is cached under (problem, withheld text) and only
problems whose revealed steps are new are scored; the cache is part of the checkpoint
(`state_dict`), so a resumed run reuses exactly the values an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
from typing import Callable

import torch
import torch.distributed as dist

from atesd.prompts import reference_completion, student_prompt
from atesd.reveal import withheld
from atesd.scoring import completion_logprobs, grounding_scores, text_ids


def sharded_values(compute: Callable[[list], list[float]], items: list, padding) -> list[float]:
    """compute(items) over the processes: this process computes its share items[r::W], padded with
    `padding` to the size of the largest share (every process runs the same forwards), and the
    shares are gathered (`torch.distributed.all_gather_object`) into items' order."""
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    if world == 1:
        return compute(items) if items else []
    rank = dist.get_rank()
    share = items[rank::world]
    size = -(-len(items) // world)
    values = compute(share + [padding] * (size - len(share)))[:len(share)] if size else []
    shares: list = [None] * world
    dist.all_gather_object(shares, values)
    out: list = [None] * len(items)
    for r, part in enumerate(shares):
        out[r::world] = part
    return out


def hold_out_probe(problems: list, size: int, seed: int) -> tuple[list, list, list]:
    """(training problems, probe problems, grounding problems): 2·size problems drawn with `seed`
    leave the training pool (at most half of it)."""
    if 4 * size > len(problems):
        raise ValueError(f"exposure.probe_size={size} holds out {2 * size} of only {len(problems)} training "
                         "problems; lower exposure.probe_size")
    order = torch.randperm(len(problems), generator=torch.Generator().manual_seed(seed + 7)).tolist()
    held = set(order[: 2 * size])
    return ([p for i, p in enumerate(problems) if i not in held], [problems[i] for i in order[:size]],
            [problems[i] for i in order[size: 2 * size]])


class ExposureProbe:
    """Measures the probe NLL and g_t on the held-out problems (see the module docstring).
    cache_grounding: keep each problem's grounding score per revealed-steps text (frozen teacher)."""

    def __init__(self, probe: list, grounding: list, tokenizer, prompts, chunk_size: int,
                 probe_nll: bool, grounding_score: bool, probe_every: int = 1, cache_grounding: bool = False):
        self.tokenizer, self.prompts, self.chunk_size, self.probe_every = tokenizer, prompts, chunk_size, probe_every
        self.want_probe_nll, self.want_grounding = probe_nll, grounding_score
        self.probe, self.grounding = probe, grounding
        self.probe_prompts = [student_prompt(tokenizer, p.problem, prompts) for p in probe]
        self.probe_completions = [text_ids(tokenizer, reference_completion(p.solution, tokenizer)) for p in probe]
        self.cache_grounding = cache_grounding
        self.grounding_cache: dict[str, float] = {}
        self.scored_last = 0  # grounding problems scored (not found in the cache) by the last measure

    def _probe_means(self, model, rows: list[int]) -> list[float]:
        logprobs = completion_logprobs(model, [self.probe_prompts[i] for i in rows],
                                       [self.probe_completions[i] for i in rows], self.tokenizer.pad_token_id,
                                       len(rows), self.chunk_size)
        return [float(lp.double().mean()) for lp in logprobs]

    def _grounding_key(self, index: int, reveal_ratio: float) -> str:
        text = withheld(self.grounding[index].solution, reveal_ratio, self.prompts.reveal_rounding)
        return f"{index}:{hashlib.blake2b(text.encode(), digest_size=16).hexdigest()}"

    def _grounding_values(self, model, teacher, reveal_ratio: float) -> list[float]:
        keys = [self._grounding_key(i, reveal_ratio) for i in range(len(self.grounding))]
        if not self.cache_grounding:
            self.grounding_cache = {}
        missing = [i for i, key in enumerate(keys) if key not in self.grounding_cache]

        def score(rows: list[int]) -> list[float]:
            with teacher.context(model):
                return grounding_scores(teacher.model(model), self.tokenizer, [self.grounding[i] for i in rows],
                                        reveal_ratio, self.prompts, len(rows), self.chunk_size)

        for index, value in zip(missing, sharded_values(score, missing, 0)):
            self.grounding_cache[keys[index]] = value
        self.scored_last = len(missing)
        return [self.grounding_cache[key] for key in keys]

    @torch.no_grad()
    def measure(self, model, teacher, reveal_ratio: float, step: int) -> dict:
        """{"probe_nll": …, "grounding_score": …} (the wanted ones) on θ_t; every process calls it.
        The probe NLL is measured on steps that are multiples of `probe_every`."""
        out = {}
        if self.want_probe_nll and step % self.probe_every == 0:
            means = sharded_values(lambda rows: self._probe_means(model, rows), list(range(len(self.probe))), 0)
            out["probe_nll"] = -float(torch.tensor(means, dtype=torch.float64).mean())
        if self.want_grounding:
            scores = self._grounding_values(model, teacher, reveal_ratio)
            out["grounding_score"] = sum(scores) / len(scores)
        return out

    def state_dict(self) -> dict:
        return {"grounding_cache": dict(self.grounding_cache)} if self.cache_grounding else {}

    def load_state_dict(self, state: dict) -> None:
        self.grounding_cache = dict(state.get("grounding_cache", {})) if self.cache_grounding else {}
