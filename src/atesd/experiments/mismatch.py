"""Fixed-exposure mismatch: how far the teacher at reveal ratio α sits from the student, per token.

ATESD (arXiv 2605.11458, fixed-exposure sweep) reports that the teacher–student mismatch (upper
tail of the per-token KL, top-1 disagreement) rises monotonically with α. We sample rollouts
ŷ ~ p_S(·|x) once and score the same ids at every α under the student prompt and under the teacher
prompt with ỹ*_α = reveal(y*, α): per token D_n = KL(p_T^α(·|x, ỹ*_α, ŷ_<n) ‖ p_S(·|x, ŷ_<n)) over
the full vocabulary (OPSD, arXiv 2601.18734) and whether the argmaxes agree. A row (overall or one
difficulty) pools its tokens: mean, p95, p99, max, 1 − agreement, and the token-weighted means
over rollouts judged correct / incorrect (as the training loop logs them).

Two per-problem teacher measures at each α (our definitions). `teacher_accuracy`: the teacher
prompt at α generates one solution greedily (temperature 0, max_new_tokens, the rollout engine of
the student samples), judged by atesd.answers.score_batch against the problem's answer; the row
holds the fraction of problems solved. `grounding_logprob`: the controller's grounding score g_t
(atesd.scoring.grounding_scores), i.e. the mean log p_T^α of the tokens of w = withheld(y*, α) (reference_completion,
end-of-turn included) teacher-forced after the teacher prompt; mean over w's tokens per problem,
then over problems (g_t pools the tokens of its batch instead).

Where this departs from, or fills in, the paper:
1. The teacher is the student's own weights (frozen, no adapter): OPSD's frozen teacher at step 0.
2. The KL is the raw mismatch: `kl_temperature` 1.0 and no point-wise clip unless `token_clip` is set.
3. Percentiles pool all tokens of a group (like train/divergence_p95), linear interpolation.
4. The reveal keeps the final-answer sentence at every α (ATESD section 3), so even at α = 0 the
   teacher sees the answer; teacher accuracy measures whether, generating freely, it reaches the
   right box. It is not measured teacher-forced on w: w computes the answer just before its box
   (α < 1) or opens with the answer sentence (α = 1), so forced top-1 on the box is near 1 / 0.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from atesd import atomic
from atesd.answers import score_batch
from atesd.divergence_chunked import chunked_divergence
from atesd.prompts import PromptConfig, student_prompt, teacher_view
from atesd.rollout import SamplingParams, make_rollout_engine
from atesd.scoring import build_sequences, check_same_completions, completion_hidden, grounding_scores

Ids = Sequence[int]  # token ids
DEFAULT_RATIOS = (0.0, 0.25, 0.5, 0.75, 1.0)
MONOTONE_METRICS = ("kl_mean", "kl_p95", "kl_p99", "top1_disagreement")
PLOT_NAMES = ("mismatch_kl.png", "mismatch_by_difficulty.png")
_TABLE = (("α", "ratio", "g"), ("tokens", "n_tokens", "d"), ("KL mean", "kl_mean", ".4g"), ("KL p95", "kl_p95", ".4g"),
          ("KL p99", "kl_p99", ".4g"), ("KL max", "kl_max", ".4g"), ("top-1 disagree", "top1_disagreement", ".3f"),
          ("KL correct", "kl_correct", ".4g"), ("KL incorrect", "kl_incorrect", ".4g"),
          ("teacher acc", "teacher_accuracy", ".3f"), ("grounding logp", "grounding_logprob", ".3f"))


@dataclass(frozen=True)
class MismatchConfig:
    """ratios: α values (sorted, deduplicated); n_problems: the first N problems, as `atesd eval --limit`
    (None: all). Sampling: samples_per_problem, max_new_tokens, temperature, top_p, top_k, seed.
    Scoring: batch_size sequences per forward, chunk_size tokens per logits chunk, kl_temperature, token_clip."""

    ratios: tuple[float, ...] = DEFAULT_RATIOS
    n_problems: int | None = None
    samples_per_problem: int = 1
    max_new_tokens: int = 512
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0
    batch_size: int = 16
    chunk_size: int = 1024
    kl_temperature: float = 1.0
    token_clip: float | None = None

    def __post_init__(self) -> None:
        ratios = tuple(sorted({float(r) for r in self.ratios}))
        if not ratios or not all(0.0 <= r <= 1.0 for r in ratios):
            raise ValueError(f"mismatch: ratios must be a non-empty set in [0, 1], got {self.ratios!r}")
        object.__setattr__(self, "ratios", ratios)
        if min(self.n_problems or 1, self.samples_per_problem, self.batch_size, self.chunk_size) < 1:
            raise ValueError("mismatch: n_problems, samples_per_problem, batch_size, chunk_size must be >= 1")


@dataclass(frozen=True)
class MismatchRow:
    """One ratio of one group (all, or a difficulty); KL in nats, kl_(in)correct None without such rollouts."""

    ratio: float
    n_problems: int
    n_rollouts: int
    n_tokens: int
    kl_mean: float
    kl_p95: float
    kl_p99: float
    kl_max: float
    top1_disagreement: float
    kl_correct: float | None
    kl_incorrect: float | None
    teacher_accuracy: float
    grounding_logprob: float
    rollout_accuracy: float


@dataclass(frozen=True)
class TokenScores:
    """Per-token results of one ratio, flat over the rollouts: kl [N] float64, top1_agree [N], token_rollout [N]."""

    kl: torch.Tensor
    top1_agree: torch.Tensor
    token_rollout: torch.Tensor


@torch.no_grad()
def score_views(model, student_prompts: Sequence[Ids], teacher_prompts_by_ratio: Sequence[Sequence[Ids]],
                completions: Sequence[Ids], pad_id: int, batch_size: int = 16, chunk_size: int = 1024,
                kl_temperature: float = 1.0, token_clip: float | None = None) -> list[TokenScores]:
    """Per-token forward KL (teacher ‖ student) and top-1 agreement of the same completions under the
    student prompts and under each ratio's teacher prompts; one TokenScores per ratio. The student's
    hidden states [N_batch, H] are computed once per batch and reused for every ratio."""
    device, head = next(model.parameters()).device, model.get_output_embeddings()
    parts: list[list[tuple]] = [[] for _ in teacher_prompts_by_ratio]  # per ratio: (kl, agree, rollout)
    for start in range(0, len(completions), batch_size):
        rows = slice(start, start + batch_size)
        student = build_sequences(student_prompts[rows], completions[rows], pad_id, device)
        student_hidden = completion_hidden(model, student)
        for ratio_index, teacher_prompts in enumerate(teacher_prompts_by_ratio):
            teacher = build_sequences(teacher_prompts[rows], completions[rows], pad_id, device)
            check_same_completions(student, teacher)
            out = chunked_divergence(student_hidden, completion_hidden(model, teacher), head.weight,
                                     lm_head_bias=head.bias, kind="forward_kl", token_clip=token_clip,
                                     temperature=kl_temperature, chunk_size=chunk_size)
            parts[ratio_index].append((out.divergence.double().cpu(), out.top1_agree.cpu(),
                                       student.token_rollout.cpu() + start))
    return [TokenScores(*(torch.cat([p[i] for p in ratio_parts]) for i in range(3))) for ratio_parts in parts]


def teacher_solves(engine, problems: Sequence, teacher_prompts_by_ratio: Sequence[Sequence[Ids]],
                   max_new_tokens: int) -> list[list[bool]]:
    """Per ratio, per problem: does the teacher prompt's greedy generation (temperature 0) reach the
    problem's answer (score_batch, in-process)? One engine call for all ratios × problems."""
    prompts = [list(ids) for teacher_prompts in teacher_prompts_by_ratio for ids in teacher_prompts]
    rollouts = engine.generate(prompts, SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0))
    solved = score_batch([r.text for r in rollouts], [p.answer for p in problems] * len(teacher_prompts_by_ratio),
                         workers=0)
    return [solved[i:i + len(problems)] for i in range(0, len(solved), len(problems))]


def _mean(values) -> float:
    return float(sum(values) / len(values)) if len(values) else float("nan")


def summarise(ratio: float, scores: TokenScores, rollouts: Sequence[int], correct: Sequence[bool],
              solved: Sequence[bool], grounding: Sequence[float], problem_of: Sequence[int]) -> MismatchRow:
    """The row of one ratio over the given rollout indices (problem_of[r]: rollout r's problem;
    solved / grounding: per problem, the teacher's greedy success and grounding log-prob)."""
    rollout_of = scores.token_rollout.numpy()
    tokens = np.isin(rollout_of, list(rollouts))
    kl, agree = scores.kl.numpy()[tokens], scores.top1_agree.numpy()[tokens]
    token_correct = np.asarray(correct, dtype=bool)[rollout_of[tokens]]
    problems = sorted({problem_of[r] for r in rollouts})
    p95, p99, top = np.quantile(kl, [0.95, 0.99, 1.0]) if kl.size else (float("nan"),) * 3
    return MismatchRow(
        ratio=ratio, n_problems=len(problems), n_rollouts=len(rollouts), n_tokens=int(kl.size),
        kl_mean=_mean(kl), kl_p95=float(p95), kl_p99=float(p99), kl_max=float(top),
        top1_disagreement=1.0 - _mean(agree.astype(np.float64)),
        kl_correct=_mean(kl[token_correct]) if token_correct.any() else None,
        kl_incorrect=_mean(kl[~token_correct]) if (~token_correct).any() else None,
        teacher_accuracy=_mean([float(solved[p]) for p in problems]),
        grounding_logprob=_mean([grounding[p] for p in problems]),
        rollout_accuracy=_mean([float(correct[r]) for r in rollouts]))


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman's ρ with average ranks for ties; None when either side is constant or < 2 points."""
    ranks = lambda v: np.array([sorted(v).index(x) + (list(v).count(x) - 1) / 2 for x in v])  # noqa: E731
    rx, ry = ranks(xs), ranks(ys)
    return float(np.corrcoef(rx, ry)[0, 1]) if len(rx) > 1 and rx.std() > 0 and ry.std() > 0 else None


def monotone_summary(rows: Sequence[MismatchRow]) -> dict[str, dict]:
    """Per metric of MONOTONE_METRICS, over rows sorted by ratio: non_decreasing, increases (how
    many of the `steps` adjacent pairs go up) and spearman ρ(ratio, metric)."""
    out = {}
    for metric in MONOTONE_METRICS:
        values = [getattr(row, metric) for row in rows]
        pairs = list(zip(values, values[1:]))
        out[metric] = {"non_decreasing": all(b >= a for a, b in pairs),
                       "increases": sum(b > a for a, b in pairs), "steps": len(pairs),
                       "spearman": spearman([row.ratio for row in rows], values)}
    return out


def finite(value):  # JSON has no NaN / ±inf
    return None if isinstance(value, float) and not math.isfinite(value) else value


def fmt(value, spec: str = ".4g") -> str:
    return "–" if finite(value) is None else format(value, spec)


def write_report(out_dir: str | os.PathLike, stem: str, payload: dict, markdown: str) -> list[Path]:
    """<stem>.json and <stem>.md into out_dir (created); returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_json(out / f"{stem}.json", payload)
    atomic.write_text(out / f"{stem}.md", markdown)
    return [out / f"{stem}.json", out / f"{stem}.md"]


@dataclass(frozen=True)
class MismatchReport:
    """Rows per ratio, overall and per difficulty ("unknown" for none); monotone_summary(overall)."""

    ratios: tuple[float, ...]
    overall: tuple[MismatchRow, ...]
    per_difficulty: dict[str, tuple[MismatchRow, ...]]
    monotone: dict[str, dict]
    config: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        rows = lambda rs: [{k: finite(v) for k, v in asdict(r).items()} for r in rs]  # noqa: E731
        return {"ratios": list(self.ratios), "overall": rows(self.overall),
                "per_difficulty": {k: rows(v) for k, v in self.per_difficulty.items()},
                "monotone": self.monotone, "config": self.config, "meta": self.meta}

    def to_markdown(self) -> str:
        """One table (overall rows, then each difficulty's) and the monotonicity summary."""
        lines = ["| group | " + " | ".join(c[0] for c in _TABLE) + " |", "|" + " --- |" * (len(_TABLE) + 1)]
        lines += [f"| {group} | " + " | ".join(fmt(getattr(r, name), spec) for _, name, spec in _TABLE) + " |"
                  for group, rows in [("all", self.overall), *self.per_difficulty.items()] for r in rows]
        lines += ["", "Monotone in α (overall): " + "; ".join(
            f"{m}: {'non-decreasing' if s['non_decreasing'] else 'not monotone'} ({s['increases']}/{s['steps']} "
            f"steps up, ρ={fmt(s['spearman'], '.2f')})" for m, s in self.monotone.items())]
        return "\n".join(lines) + "\n"

    def save(self, out_dir: str | os.PathLike) -> list[Path]:
        """mismatch.json, mismatch.md and the two PNGs into out_dir; returns their paths."""
        return [*write_report(out_dir, "mismatch", self.to_dict(), self.to_markdown()),
                *plot_report(self, Path(out_dir))]


def plot_report(report: MismatchReport, out: Path) -> list[Path]:
    """mismatch_kl.png (overall KL mean/p95/p99; top-1 disagreement and teacher accuracy vs α) and
    mismatch_by_difficulty.png (KL mean and top-1 disagreement vs α, one line per difficulty)."""
    from matplotlib.figure import Figure  # no pyplot: savefig renders with Agg

    from atesd.experiments.report import save_figure

    rows, groups = report.overall, list(report.per_difficulty.items())
    by_difficulty = lambda m: [(f"difficulty {g}", rs, m) for g, rs in groups]  # noqa: E731
    figures = {
        "mismatch_kl.png": [("per-token KL(teacher ‖ student), nats",
                             [(m.replace("kl_", "KL "), rows, m) for m in ("kl_mean", "kl_p95", "kl_p99")]),
                            ("fraction", [("top-1 disagreement", rows, "top1_disagreement"),
                                          ("teacher accuracy", rows, "teacher_accuracy")])],
        "mismatch_by_difficulty.png": [("mean per-token KL, nats", by_difficulty("kl_mean")),
                                       ("top-1 disagreement", by_difficulty("top1_disagreement"))]}
    for name, panels in figures.items():
        fig = Figure(figsize=(10.0, 3.6))
        fig.subplots_adjust(left=0.09, right=0.98, bottom=0.15, top=0.95, wspace=0.32)
        for ax, (ylabel, lines) in zip(fig.subplots(1, 2, squeeze=False)[0], panels):
            for label, rs, metric in lines:
                ax.plot([r.ratio for r in rs], [finite(getattr(r, metric)) for r in rs], "o-", label=label)
            ax.set(xlabel="reveal ratio α", ylabel=ylabel)
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
        save_figure(fig, out / name)
    return [out / name for name in figures]


@dataclass(frozen=True)
class Sweep:
    """The sampled rollouts and their scores at every ratio, shared by measure_mismatch and the toy
    world's per-position analysis (atesd.experiments.positions). problem_of[r]: rollout r's problem;
    correct[r]: score_batch's verdict; teachers[k][i]: the teacher prompt of problem i at ratios[k];
    scores[k]: score_views' TokenScores at ratios[k], rollouts in order."""

    ratios: tuple[float, ...]
    problems: list
    problem_of: list[int]
    rollouts: list
    correct: list[bool]
    teachers: list[list[list[int]]]
    scores: list[TokenScores]


def sample_and_score(model, tokenizer, problems: Sequence, cfg: MismatchConfig = MismatchConfig(),
                     prompt_cfg: PromptConfig | None = None, engine=None) -> Sweep:
    """Sample cfg.samples_per_problem student rollouts for the first cfg.n_problems problems (one
    seeded engine call), judge them, and score them under the teacher prompt at every ratio."""
    prompt_cfg = prompt_cfg or PromptConfig()
    problems = list(problems[:cfg.n_problems] if cfg.n_problems else problems)
    if not problems:
        raise ValueError("mismatch: no problems")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    engine = engine or make_rollout_engine("hf", model.eval(), tokenizer, batch_size=cfg.batch_size)
    problem_of = [i for i in range(len(problems)) for _ in range(cfg.samples_per_problem)]
    student = [student_prompt(tokenizer, problems[i].problem, prompt_cfg) for i in problem_of]
    sampling = SamplingParams(cfg.max_new_tokens, cfg.temperature, cfg.top_p, cfg.top_k, cfg.seed)
    rollouts = engine.generate(student, sampling)
    correct = score_batch([r.text for r in rollouts], [problems[i].answer for i in problem_of], workers=0)
    teachers = [[teacher_view(tokenizer, p, ratio, prompt_cfg) for p in problems] for ratio in cfg.ratios]
    scores = score_views(model.eval(), student, [[t[i] for i in problem_of] for t in teachers],
                         [list(r.completion_ids) for r in rollouts], pad_id, cfg.batch_size,
                         cfg.chunk_size, cfg.kl_temperature, cfg.token_clip)
    return Sweep(cfg.ratios, problems, problem_of, list(rollouts), list(correct), teachers, scores)


def measure_mismatch(model, tokenizer, problems: Sequence, cfg: MismatchConfig = MismatchConfig(),
                     prompt_cfg: PromptConfig | None = None, engine=None, meta: dict | None = None,
                     sweep: Sweep | None = None) -> MismatchReport:
    """The sweep on a loaded model (module docstring): sample once, score at every ratio, and one
    greedy teacher generation per problem and ratio. The model is left in eval mode; engine (also
    used for the teacher generations) defaults to the HF rollout engine with cfg.batch_size.
    sweep: sample_and_score(model, tokenizer, problems, cfg, prompt_cfg) already run (not redone)."""
    prompt_cfg = prompt_cfg or PromptConfig()
    engine = engine or make_rollout_engine("hf", model.eval(), tokenizer, batch_size=cfg.batch_size)
    sweep = sweep or sample_and_score(model, tokenizer, problems, cfg, prompt_cfg, engine)
    problems, problem_of, correct, teachers = sweep.problems, sweep.problem_of, sweep.correct, sweep.teachers
    solved = teacher_solves(engine, problems, teachers, cfg.max_new_tokens)
    grounding = [grounding_scores(model, tokenizer, problems, ratio, prompt_cfg, cfg.batch_size, cfg.chunk_size)
                 for ratio in cfg.ratios]
    by_group: dict[str, list[int]] = {}
    for r, i in enumerate(problem_of):
        by_group.setdefault("unknown" if problems[i].difficulty is None else str(problems[i].difficulty), []).append(r)
    rows = lambda members: tuple(summarise(ratio, s, members, correct, ok, g, problem_of)  # noqa: E731
                                 for ratio, s, ok, g in zip(cfg.ratios, sweep.scores, solved, grounding))
    overall = rows(list(range(len(problem_of))))
    per_difficulty = {g: rows(by_group[g]) for g in sorted(by_group, key=lambda g: (not g.isdigit(), g.zfill(9)))}
    return MismatchReport(
        ratios=cfg.ratios, overall=overall, per_difficulty=per_difficulty, monotone=monotone_summary(overall),
        config={**asdict(cfg), "prompts": asdict(prompt_cfg)}, meta=dict(meta or {}))


def load_frozen(model_dir: str | os.PathLike, dtype: str = "float32", device: str | None = None):
    """(model, tokenizer, device): a frozen model (atesd.models) on `device` (default: cuda if present)."""
    from atesd.models import load_pretrained

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer = load_pretrained(model_dir, dtype, device)
    return model, tokenizer, device


def run_mismatch(model_dir: str | os.PathLike, data: str, ratios: Sequence[float] = DEFAULT_RATIOS,
                 out_dir: str | os.PathLike = "mismatch", split: str | None = None, thinking: bool = False,
                 dtype: str = "float32", device: str | None = None, **options) -> MismatchReport:
    """Load a model (atesd.models, frozen) and problems (atesd.data.load_problems), run the sweep and
    write mismatch.json, mismatch.md and the PNGs into out_dir. options: MismatchConfig's other
    fields (n_problems, max_new_tokens, seed, ...). thinking: the student's enable_thinking."""
    from atesd.data import load_problems

    cfg = MismatchConfig(ratios=tuple(ratios), **options)
    problems = load_problems(data, split=split)
    model, tokenizer, device = load_frozen(model_dir, dtype, device)
    meta = dict(model=str(model_dir), data=str(data), split=split, dtype=dtype, device=device)
    report = measure_mismatch(model, tokenizer, problems, cfg, PromptConfig(student_thinking=thinking), meta=meta)
    report.save(out_dir)
    return report
