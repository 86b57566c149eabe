"""Where the teacher–student mismatch sits inside a toy rollout: before, at or after its first error.

`atesd mismatch` pools every completion token. On the toy task the step checker
(atesd.toy.task.check_steps) finds the first wrong step of a rollout, so each sampled token gets a
position class:

- "before": a step before the first wrong step (every step of a rollout with no wrong step);
- "first_error": the first wrong step itself;
- "after": the steps after it;
- "answer": the paragraph with the last \\boxed{} and everything after it, EOS included.

A rollout whose steps are all right but whose answer line is wrong or missing (error_kind
"wrong_answer", "missing_answer", "incomplete") has no "first_error" tokens: its error is the
answer line. Per ratio α, and separately for rollouts judged correct / wrong (score_batch, as in
atesd.experiments.mismatch), we pool the per-token KL(p_T^α ‖ p_S) and top-1 agreement of score_views by class:
token count and share, mean KL, top-1 disagreement, and kl_share, the class's fraction of the
group's total KL (the headline: how much of the KL on wrong rollouts sits after the first error).

Token → class: a token sits at its first non-whitespace character, or at its end offset when it has
none (whitespace only, or no text: EOS and other special tokens), and belongs to the first
paragraph ending after that offset: the one holding it, else the next one. So the blank-line
separators belong to the following paragraph, and whatever follows the last paragraph (trailing
whitespace, EOS) is "answer". Character spans come from decoding each prefix of the completion ids
(skip_special_tokens, no clean-up).

This is a diagnosis only: the step checker reads rollouts after the fact and never shapes a
training loss (training sees only the final-answer verdict and the teacher's distribution).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from atesd.experiments.mismatch import (DEFAULT_RATIOS, MismatchConfig, MismatchReport, Sweep, finite, fmt, load_frozen,
                            measure_mismatch, sample_and_score, write_report)
from atesd.prompts import PromptConfig
from atesd.toy.task import SOURCE, StepCheck, check_steps

POSITIONS = ("before", "first_error", "after", "answer")
GROUPS = ("wrong", "correct")
_TABLE = (("α", "ratio", "g"), ("position", "position", "s"), ("tokens", "n_tokens", "d"),
          ("token share", "token_share", ".3f"), ("KL mean", "kl_mean", ".4g"), ("KL share", "kl_share", ".3f"),
          ("top-1 disagree", "top1_disagreement", ".3f"))


def token_char_spans(tokenizer, ids: Sequence[int]) -> tuple[str, list[tuple[int, int]]]:
    """(text, spans): the completion decoded without special tokens and each token's (start, end)
    in it, from the lengths of the decoded prefixes (special tokens get an empty span)."""
    kwargs = dict(skip_special_tokens=True, clean_up_tokenization_spaces=False)
    text = tokenizer.decode(list(ids), **kwargs)
    ends = [min(len(p), len(text)) for p in tokenizer.batch_decode([list(ids[:n + 1]) for n in range(len(ids))],
                                                                     **kwargs)]
    spans, start = [], 0
    for end in ends:
        end = max(end, start)  # a split multi-byte character may decode shorter for a moment
        spans.append((start, end))
        start = end
    return text, spans


def _anchor(text: str, start: int, end: int) -> int:
    """Where a token sits: its first non-whitespace offset, or its end when it has none."""
    piece = text[start:end]
    return start + len(piece) - len(piece.lstrip()) if piece.strip() else end


def token_positions(problem_text: str, completion_text: str, token_char_spans: Sequence[tuple[int, int]],
                    check: StepCheck | None = None) -> list[str]:
    """A class of POSITIONS per completion token (module docstring), from check_steps' paragraphs
    (pass `check`, check_steps of the same texts, when already computed)."""
    check = check or check_steps(problem_text, completion_text)
    first = check.first_error
    labels = ["before" if first is None or i < first else "first_error" if i == first else "after"
              for i in range(len(check.step_spans))]
    paragraphs = list(check.step_spans) + ([check.answer_span] if check.answer_span else [])
    out = []
    for start, end in token_char_spans:
        at = _anchor(completion_text, start, end)
        index = next((k for k, (_, p_end) in enumerate(paragraphs) if at < p_end), len(paragraphs))
        out.append(labels[index] if index < len(labels) else "answer")
    return out


@dataclass(frozen=True)
class PositionRow:
    """One ratio × group (wrong / correct rollouts) × position class; NaN means no tokens (or no KL)."""

    ratio: float
    group: str
    position: str
    n_rollouts: int
    n_tokens: int
    token_share: float
    kl_mean: float
    kl_share: float
    top1_disagreement: float


def aggregate(ratio: float, kl: np.ndarray, agree: np.ndarray, labels: Sequence[str],
              token_rollout: np.ndarray, correct: Sequence[bool]) -> list[PositionRow]:
    """Rows of one ratio: per group and class, from flat per-token kl, top-1 agreement, labels and rollout index."""
    labels, token_correct = np.asarray(labels), np.asarray(correct, dtype=bool)[token_rollout]
    rows = []
    for group in GROUPS:
        in_group = token_correct == (group == "correct")
        n_rollouts = int(sum(bool(c) == (group == "correct") for c in correct))
        total_tokens, total_kl = int(in_group.sum()), float(kl[in_group].sum())
        for position in POSITIONS:
            mask = in_group & (labels == position)
            n = int(mask.sum())
            rows.append(PositionRow(
                ratio=ratio, group=group, position=position, n_rollouts=n_rollouts, n_tokens=n,
                token_share=n / total_tokens if total_tokens else float("nan"),
                kl_mean=float(kl[mask].mean()) if n else float("nan"),
                kl_share=float(kl[mask].sum()) / total_kl if total_kl > 0 else float("nan"),
                top1_disagreement=1.0 - float(agree[mask].mean()) if n else float("nan")))
    return rows


@dataclass(frozen=True)
class PositionsReport:
    """rows: per ratio, group, class; error_kinds: per group, check_steps' error_kind counts ("none": no error)."""

    ratios: tuple[float, ...]
    rows: tuple[PositionRow, ...]
    error_kinds: dict[str, dict[str, int]]
    config: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def share_after_error(self, ratio: float) -> float:
        """kl_share of "after" on wrong rollouts at `ratio` (NaN without wrong-rollout KL)."""
        return next(r.kl_share for r in self.rows if (r.ratio, r.group, r.position) == (ratio, "wrong", "after"))

    def to_dict(self) -> dict:
        return {"ratios": list(self.ratios), "rows": [{k: finite(v) for k, v in asdict(r).items()} for r in self.rows],
                "error_kinds": self.error_kinds, "config": self.config, "meta": self.meta}

    def to_markdown(self) -> str:
        """One table per group (ratio rows × classes), the first-error kinds and the headline shares."""
        lines = []
        for group in GROUPS:
            rows = [r for r in self.rows if r.group == group]
            lines += [f"{group} rollouts ({rows[0].n_rollouts if rows else 0}):", "",
                      "| " + " | ".join(c[0] for c in _TABLE) + " |", "|" + " --- |" * len(_TABLE)]
            lines += ["| " + " | ".join(fmt(getattr(r, name), spec) if spec != "s" else getattr(r, name)
                                        for _, name, spec in _TABLE) + " |" for r in rows]
            kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.error_kinds.get(group, {}).items())) or "–"
            lines += ["", f"first-error kinds ({group}): {kinds}", ""]
        lines.append("KL share after the first error (wrong rollouts): " + "; ".join(
            f"α={ratio:g}: {fmt(self.share_after_error(ratio), '.1%')}" for ratio in self.ratios))
        return "\n".join(lines) + "\n"

    def save(self, out_dir: str | os.PathLike) -> list[Path]:
        """positions.json and positions.md into out_dir; returns their paths."""
        return write_report(out_dir, "positions", self.to_dict(), self.to_markdown())


def require_toy(problems: Sequence, data: str | os.PathLike) -> None:
    """ValueError (naming the data file) unless every problem comes from the toy task."""
    if any(p.source != SOURCE for p in problems):
        raise ValueError(f"mismatch --positions: {data} is not toy-task data (source {SOURCE!r}); "
                         "the step checker only reads toy problems")


def positions_from_sweep(tokenizer, sweep: Sweep, config: dict | None = None,
                         meta: dict | None = None) -> PositionsReport:
    """The per-position report of a sample_and_score sweep on toy problems (labels once, every ratio)."""
    labels, kinds = [], {g: Counter() for g in GROUPS}
    for rollout, i, ok in zip(sweep.rollouts, sweep.problem_of, sweep.correct):
        problem = sweep.problems[i].problem
        text, spans = token_char_spans(tokenizer, rollout.completion_ids)
        check = check_steps(problem, text)
        labels += token_positions(problem, text, spans, check)
        kinds["correct" if ok else "wrong"][check.error_kind or "none"] += 1
    rows = []
    for ratio, scores in zip(sweep.ratios, sweep.scores):
        if scores.kl.numel() != len(labels):
            raise ValueError(f"positions: {scores.kl.numel()} scored tokens but {len(labels)} labels")
        rows += aggregate(ratio, scores.kl.numpy(), scores.top1_agree.numpy().astype(np.float64), labels,
                          scores.token_rollout.numpy(), sweep.correct)
    return PositionsReport(tuple(sweep.ratios), tuple(rows), {g: dict(c) for g, c in kinds.items()},
                           dict(config or {}), dict(meta or {}))


def measure_positions(model, tokenizer, problems: Sequence, ratios: Sequence[float] = DEFAULT_RATIOS,
                      n_problems: int | None = None, seed: int = 0, max_new_tokens: int = 512,
                      batch_size: int = 16, chunk_size: int = 1024, prompt_cfg: PromptConfig | None = None,
                      engine=None, meta: dict | None = None) -> PositionsReport:
    """One student rollout per problem (temperature 1, atesd.experiments.mismatch's sampling and scoring),
    labelled by position and pooled per ratio, group and class."""
    require_toy(problems, "the given problems")
    cfg = MismatchConfig(ratios=tuple(ratios), n_problems=n_problems, seed=seed, max_new_tokens=max_new_tokens,
                         batch_size=batch_size, chunk_size=chunk_size)
    sweep = sample_and_score(model, tokenizer, problems, cfg, prompt_cfg, engine)
    return positions_from_sweep(tokenizer, sweep, asdict(cfg), meta)


def run_mismatch_positions(model_dir: str | os.PathLike, data: str, ratios: Sequence[float] = DEFAULT_RATIOS,
                           out_dir: str | os.PathLike = "mismatch", split: str | None = None, thinking: bool = False,
                           dtype: str = "float32", device: str | None = None,
                           **options) -> tuple[MismatchReport, PositionsReport]:
    """atesd.experiments.mismatch.run_mismatch plus the per-position report of the same rollouts (sampled once):
    mismatch.json/.md, the PNGs, positions.json/.md into out_dir. ValueError before loading the
    model when `data` holds anything but toy problems."""
    from atesd.data import load_problems

    cfg = MismatchConfig(ratios=tuple(ratios), **options)
    problems = load_problems(data, split=split)
    require_toy(problems, data)
    model, tokenizer, device = load_frozen(model_dir, dtype, device)
    meta = dict(model=str(model_dir), data=str(data), split=split, dtype=dtype, device=device)
    prompt_cfg = PromptConfig(student_thinking=thinking)
    sweep = sample_and_score(model, tokenizer, problems, cfg, prompt_cfg)
    report = measure_mismatch(model, tokenizer, problems, cfg, prompt_cfg, meta=meta, sweep=sweep)
    positions = positions_from_sweep(tokenizer, sweep, report.config, meta)
    report.save(out_dir)
    positions.save(out_dir)
    return report, positions
