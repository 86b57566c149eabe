"""Does a reward tell the controller which reveal ratio is better? Two measurements.

1. `reward_correlations(run_dir)`: from a run's exposure.jsonl, the correlation of α with each part
   of the reward its decisions earned (G_lp, G_gt, R; for the counterfactual reward, of α − α′ with
   the paired credit), with a 95% confidence interval (Fisher's z). A controller can only learn
   what its reward correlates with; the sign says which way it will be pushed.
2. `credit_by_ratio(model, problems, ratios)`: on one model (a base or a checkpoint of a
   fixed-ratio run), sample rollouts once and score every ratio on the same θ and the same rollouts
   with the first-order probe credit c_i(α) of `atesd.exposure.credit` (all arms paired), reporting
   the mean credit per α with its paired standard error against α = 1, overall and per difficulty.
   `rank_agreement` then compares that ranking with the held-out accuracy each fixed ratio reached
   in a bench (Spearman ρ): a reward worth learning from ranks α the way accuracy does.

`atesd diagnose rewards RUN_DIR` and `atesd diagnose credit --model M --data D [--bench B]`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from atesd.answers import score_batch
from atesd.config import LossConfig
from atesd.divergence_chunked import auto_chunk_size
from atesd.exposure import ProbeCredit
from atesd.models import load_pretrained
from atesd.prompts import PromptConfig, student_prompt, teacher_view
from atesd.rollout import SamplingParams, make_rollout_engine
from atesd.scoring import build_sequences
from atesd.teacher import Teacher


def correlation_ci(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float, float]:
    """(Pearson r, lower, upper) with the 95% interval of Fisher's z; (nan, nan, nan) for n < 4."""
    n = len(xs)
    if n < 4:
        return (math.nan,) * 3
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx == 0 or syy == 0:
        return (math.nan,) * 3
    r = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / math.sqrt(sxx * syy)
    r = max(-0.999999, min(0.999999, r))
    z, half = math.atanh(r), 1.96 / math.sqrt(n - 3)
    return r, math.tanh(z - half), math.tanh(z + half)


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties)."""
    def ranks(values):
        order = sorted(range(len(values)), key=lambda i: values[i])
        out = [0.0] * len(values)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2
            i = j + 1
        return out

    return correlation_ci(ranks(list(xs)), ranks(list(ys)))[0] if len(xs) >= 4 else math.nan


def _why_no_credit(run_dir: Path) -> str:
    """Why a run has no credit records, from its config.yaml: only a learned policy writes them, at
    its first controller update, once `exposure.decisions_per_update` decisions have completed."""
    from omegaconf import OmegaConf

    exposure = OmegaConf.load(run_dir / "config.yaml").exposure if (run_dir / "config.yaml").is_file() else None
    if exposure is None or exposure.policy != "learned":
        policy = "?" if exposure is None else exposure.policy
        return f"only exposure.policy=learned writes credits (this run: exposure.policy={policy})"
    lines = (run_dir / "metrics.jsonl").read_text().splitlines() if (run_dir / "metrics.jsonl").is_file() else []
    return (f"the first credits come with the controller's first update, after exposure.decisions_per_update="
            f"{exposure.decisions_per_update} decisions have completed (each holds α for exposure.hold_steps="
            f"{exposure.hold_steps} steps and is credited over exposure.lookahead_steps={exposure.lookahead_steps}); "
            f"this run has {len(lines)} step(s)")


def reward_correlations(run_dir: str | Path) -> dict:
    """Correlations of α with the reward parts of every credited decision of a run."""
    records = [json.loads(line) for line in (Path(run_dir) / "exposure.jsonl").read_text().splitlines()
               if line.strip()]
    credits = [r for r in records if r.get("event") == "credit"]
    if not credits:
        raise ValueError(f"{run_dir}: exposure.jsonl holds no credited decision yet; {_why_no_credit(Path(run_dir))}")
    paired = "counterfactual_ratio" in credits[0]
    alphas = [c["reveal_ratio"] - c["counterfactual_ratio"] if paired else c["reveal_ratio"] for c in credits]
    out = {"run": str(run_dir), "decisions": len(credits), "x": "α − α′" if paired else "α", "parts": {}}
    for part in ("progress_return", "grounding_return", "reward"):
        pairs = [(a, c[part]) for a, c in zip(alphas, credits) if c.get(part) is not None]
        if pairs:
            r, lo, hi = correlation_ci([a for a, _ in pairs], [v for _, v in pairs])
            out["parts"][part] = {"r": r, "ci95": [lo, hi], "n": len(pairs)}
    levels = sorted({c["difficulty"] for c in credits if c.get("difficulty") is not None})
    if levels:  # per-example credit records: the reward's correlation within each difficulty level
        out["reward_by_difficulty"] = {}
        for level in levels:
            pairs = [(a, c["reward"]) for a, c in zip(alphas, credits) if c.get("difficulty") == level]
            r, lo, hi = correlation_ci([a for a, _ in pairs], [v for _, v in pairs])
            out["reward_by_difficulty"][str(level)] = {"r": r, "ci95": [lo, hi], "n": len(pairs)}
    return out


@dataclass(frozen=True)
class CreditTable:
    """Mean first-order credit per ratio (and per difficulty) on one model; see the module docstring."""

    ratios: tuple[float, ...]
    mean: dict[str, list[float]]  # group ("all", "1", …) → mean c(α) per ratio
    paired_se: dict[str, list[float]]  # standard error of c(α) − c(1) per ratio
    best_share: dict[str, list[float]]  # share of rollouts where each ratio has the largest credit
    n: dict[str, int]

    def to_markdown(self) -> str:
        head = "| group | n | " + " | ".join(f"α = {a:g}" for a in self.ratios) + " | best α (share) |"
        lines = [head, "|" + "---|" * (len(self.ratios) + 3)]
        for group, means in self.mean.items():
            ses = self.paired_se[group]
            cells = [f"{m:+.4f} ± {s:.4f}" for m, s in zip(means, ses)]
            best = max(range(len(self.ratios)), key=lambda k: self.best_share[group][k])
            lines.append(f"| {group} | {self.n[group]} | " + " | ".join(cells)
                         + f" | {self.ratios[best]:g} ({100 * self.best_share[group][best]:.0f}%) |")
        return "\n".join(lines) + "\n(mean credit c(α) × 1e3 is not rescaled; ± is the standard error of c(α) − c(1))\n"

    def to_dict(self) -> dict:
        return {"ratios": list(self.ratios), "mean": self.mean, "paired_se": self.paired_se,
                "best_share": self.best_share, "n": self.n}


def credit_by_ratio(model, tokenizer, problems: Sequence, probe: Sequence, ratios: Sequence[float],
                    loss: LossConfig, prompts: PromptConfig | None = None, batch_size: int = 16,
                    max_new_tokens: int = 128, seed: int = 0, step: float = 1e-2, kind: str = "reference",
                    samples: int = 4) -> CreditTable:
    """c_i(α) for every ratio on the same rollouts of `problems` (one T = 1 sample each), with the
    probe direction of `probe` (plain gradient: no optimizer state)."""
    prompts = prompts or PromptConfig()
    engine = make_rollout_engine("hf", model, tokenizer, batch_size=64)
    student_prompts = [student_prompt(tokenizer, p.problem, prompts) for p in problems]
    rollouts = engine.generate(student_prompts, SamplingParams(max_new_tokens, 1.0, 1.0, 0, seed=seed))
    correct = score_batch([r.text for r in rollouts], [p.answer for p in problems], workers=0)
    credit = ProbeCredit(probe, tokenizer, prompts, loss, step, kind, samples, max_new_tokens)
    teacher = Teacher("frozen", model)
    model.requires_grad_(True)
    direction = credit.direction(model, torch.optim.AdamW(model.parameters()), seed)
    values = []
    for start in range(0, len(problems), batch_size):
        rows = slice(start, start + batch_size)
        completions = [list(r.completion_ids) for r in rollouts[rows]]
        student = build_sequences(student_prompts[rows], completions, tokenizer.pad_token_id)
        views = [build_sequences([teacher_view(tokenizer, p, a, prompts) for p in problems[rows]], completions,
                                 tokenizer.pad_token_id) for a in ratios]
        values.append(credit.measure(model, teacher, student, views, direction))
    table = torch.cat(values, dim=1).double()  # [ratios, N]
    groups = {"all": list(range(len(problems)))}
    for i, p in enumerate(problems):
        groups.setdefault(str(p.difficulty), []).append(i)
    groups["correct rollouts"] = [i for i, ok in enumerate(correct) if ok]
    groups["wrong rollouts"] = [i for i, ok in enumerate(correct) if not ok]
    mean, paired_se, best_share, n = {}, {}, {}, {}
    reference = len(ratios) - 1
    for group, members in groups.items():
        if len(members) < 2:
            continue
        sub = table[:, members]
        mean[group] = sub.mean(1).tolist()
        diff = sub - sub[reference]
        paired_se[group] = (diff.std(1) / math.sqrt(len(members))).tolist()
        winners = sub.argmax(0)
        best_share[group] = [float((winners == k).double().mean()) for k in range(len(ratios))]
        n[group] = len(members)
    return CreditTable(tuple(ratios), mean, paired_se, best_share, n)


def sweep_accuracy(bench_dir: str | Path, ratios: Sequence[float]) -> list[float | None]:
    """Mean test accuracy of each fixed ratio's runs in a bench folder (fixed-<α>; opsd for α = 1)."""
    out = []
    for ratio in ratios:
        name = "opsd" if ratio == 1 else f"fixed-{ratio:g}"
        results = [json.loads(p.read_text())["test"]["average_at_k"]
                   for p in Path(bench_dir).glob(f"*/{name}/result.json")]
        out.append(sum(results) / len(results) if results else None)
    return out


def rank_agreement(table: CreditTable, accuracy: Sequence[float | None]) -> float:
    """Spearman ρ between the mean credit and the bench accuracy over the ratios that have both."""
    pairs = [(c, a) for c, a in zip(table.mean["all"], accuracy) if a is not None]
    return spearman([c for c, _ in pairs], [a for _, a in pairs]) if len(pairs) >= 4 else math.nan


def run_credit_diagnostic(model_dir: str, data: str, ratios: Sequence[float], n_problems: int, probe_size: int,
                          seed: int, bench: str | None, out: str | None, divergence: str = "reverse_kl",
                          kind: str = "reference", samples: int = 4) -> dict:
    """`atesd diagnose credit`: load a model and problems, measure, print, write JSON."""
    from atesd.data import load_problems

    problems = load_problems(data)
    order = torch.randperm(len(problems), generator=torch.Generator().manual_seed(seed)).tolist()
    probe = [problems[i] for i in order[:probe_size]]
    sample = [problems[i] for i in order[probe_size: probe_size + n_problems]]
    model, tokenizer = load_pretrained(model_dir, device="cpu")
    vocab = model.get_output_embeddings().weight.shape[0]  # loss.chunk_size: null is automatic in training too
    loss = LossConfig(divergence=divergence, chunk_size=auto_chunk_size(vocab))
    table = credit_by_ratio(model, tokenizer, sample, probe, ratios, loss, seed=seed, kind=kind, samples=samples)
    result = {"model": model_dir, "data": data, "n_problems": len(sample), "probe_size": probe_size, "seed": seed,
              "divergence": divergence, "probe": kind, "samples": samples, **table.to_dict()}
    print(table.to_markdown())
    if bench:
        accuracy = sweep_accuracy(bench, ratios)
        result["bench_accuracy"] = accuracy
        result["spearman_credit_vs_accuracy"] = rank_agreement(table, accuracy)
        print("bench accuracy per α:", ", ".join("—" if a is None else f"{100 * a:.1f}%" for a in accuracy),
              f"; Spearman ρ(credit, accuracy) = {result['spearman_credit_vs_accuracy']:.2f}")
    if out:
        from atesd import atomic

        atomic.write_json(out, result)
    return result
