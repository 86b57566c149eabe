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
"""

from __future__ import annotations

import torch

from atesd.prompts import reference_completion, student_prompt
from atesd.scoring import completion_logprobs, grounding_scores, text_ids


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
    """Measures the probe NLL and g_t on the held-out problems (see the module docstring)."""

    def __init__(self, probe: list, grounding: list, tokenizer, prompts, chunk_size: int,
                 probe_nll: bool, grounding_score: bool, probe_every: int = 1):
        self.tokenizer, self.prompts, self.chunk_size, self.probe_every = tokenizer, prompts, chunk_size, probe_every
        self.want_probe_nll, self.want_grounding = probe_nll, grounding_score
        self.probe, self.grounding = probe, grounding
        self.probe_prompts = [student_prompt(tokenizer, p.problem, prompts) for p in probe]
        self.probe_completions = [text_ids(tokenizer, reference_completion(p.solution, tokenizer)) for p in probe]

    @torch.no_grad()
    def measure(self, model, teacher, reveal_ratio: float, step: int) -> dict:
        """{"probe_nll": …, "grounding_score": …} (the wanted ones) on θ_t; every process calls it.
        The probe NLL is measured on steps that are multiples of `probe_every`."""
        out = {}
        if self.want_probe_nll and step % self.probe_every == 0:
            logprobs = completion_logprobs(model, self.probe_prompts, self.probe_completions,
                                           self.tokenizer.pad_token_id, len(self.probe), self.chunk_size)
            out["probe_nll"] = -float(torch.stack([lp.double().mean() for lp in logprobs]).mean())
        if self.want_grounding:
            with teacher.context(model):
                scores = grounding_scores(teacher.model(model), self.tokenizer, self.grounding, reveal_ratio,
                                          self.prompts, len(self.grounding), self.chunk_size)
            out["grounding_score"] = sum(scores) / len(scores)
        return out
