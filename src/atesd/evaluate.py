"""Evaluation: k sampled completions per problem, scored, summarised as Average@k, pass@k, maj@k.

ATESD (arXiv 2605.11458) reports Average@12: the accuracy averaged over 12 samples per problem,
i.e. over every (problem, sample) pair. We report that with a 95% confidence interval across
problems, unbiased pass@k (Chen et al. 2021, "Evaluating Large Language Models Trained on Code",
eq. 1), majority-vote accuracy maj@k, per-difficulty accuracy, completion length, truncation and
the share of completions that end in a repetition loop (`atesd.loops`).
The student prompt is the one used for training (atesd.prompts.student_prompt).

Where we depart from the paper / common practice:
1. maj@k votes over answers compared as lightly normalised strings (`vote_key`), not by
   mathematical equivalence; ties go to the answer that occurred first. A sample without a boxed
   answer does not vote; a problem where none voted counts as wrong. The vote is correct when the
   first sample carrying the winning answer was judged correct.
2. The confidence interval is the normal approximation over per-problem mean accuracies,
   mean ± 1.96·sd/√n (sd with n − 1; zero width for one problem), clipped to [0, 1].
3. With a seed, each generation chunk of `batch_size` samples gets its own derived seed
   (seed·1000003 + chunk index), so results depend on batch_size as well as on the seed.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Mapping, Sequence

from atesd import atomic
from atesd.answers import extract_boxed, score_batch
from atesd.loops import ends_in_loop
from atesd.prompts import PromptConfig, student_prompt
from atesd.rollout import Rollout, RolloutEngine, SamplingParams, make_rollout_engine

EVAL_JSON = "eval.json"
EVAL_MARKDOWN = "eval.md"
SAMPLES_JSONL = "samples.jsonl"
Z_95 = 1.96


# ---------------------------------------------------------------- estimators


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021, eq. 1):
    1 − C(n−c, k) / C(n, k), computed as 1 − Π_{i=n−c+1}^{n} (1 − k/i) to stay stable."""
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


_VOTE_SPACING = re.compile(r"\\left|\\right|\\[!,;:]|\\quad|\\qquad|\\displaystyle|~|\s+")


def vote_key(answer: str) -> str:
    """A boxed answer as a string to vote with: outer $ and a trailing period dropped, spacing
    commands and whitespace removed, \\dfrac/\\tfrac → \\frac (departure 1)."""
    text = answer.strip().strip("$")
    text = _VOTE_SPACING.sub("", text)
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    return text.rstrip(".")


def majority_index(answers: Sequence[str | None]) -> int | None:
    """Index of the first sample carrying the most frequent answer (ties: the answer seen first),
    or None when no sample has an answer. answers: extracted answers, None for no answer."""
    keys = [None if a is None else vote_key(a) for a in answers]
    counts = Counter(key for key in keys if key is not None)
    if not counts:
        return None
    best = max(counts.values())
    return next(i for i, key in enumerate(keys) if key is not None and counts[key] == best)


def confidence_interval95(values: Sequence[float]) -> tuple[float, float]:
    """mean ± 1.96·sd/√n of per-problem accuracies, clipped to [0, 1] (departure 2)."""
    if not values:
        raise ValueError("confidence_interval95 needs at least one value")
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    half = Z_95 * sd / math.sqrt(n)
    return max(0.0, mean - half), min(1.0, mean + half)


def paired_difference(
    before_per_problem: Sequence[float] | Mapping[str, float],
    after_per_problem: Sequence[float] | Mapping[str, float],
) -> tuple[float, float]:
    """(mean, standard error) of the per-problem difference after − before.

    Both are per-problem accuracies on the same problems: sequences in the same order, or
    mappings problem id → accuracy (as `per_problem_accuracy` in eval.json) with the same keys.
    se = sd(d)/√n with n − 1 in sd (0 for one problem). A change is "significant" in our issues
    when |mean| > 2·se.
    """
    if isinstance(before_per_problem, Mapping) != isinstance(after_per_problem, Mapping):
        raise TypeError("paired_difference: pass two sequences or two mappings")
    if isinstance(before_per_problem, Mapping):
        if set(before_per_problem) != set(after_per_problem):
            missing = set(before_per_problem) ^ set(after_per_problem)
            raise ValueError(f"paired_difference: problem ids differ ({len(missing)} not in both)")
        keys = sorted(before_per_problem)
        before = [before_per_problem[key] for key in keys]
        after = [after_per_problem[key] for key in keys]
    else:
        before, after = list(before_per_problem), list(after_per_problem)
    if len(before) != len(after) or not before:
        raise ValueError(f"paired_difference: need equal, non-zero lengths, got {len(before)} and {len(after)}")
    diffs = [a - b for a, b in zip(after, before)]
    n = len(diffs)
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1)) if n > 1 else 0.0
    return mean, sd / math.sqrt(n)


# ---------------------------------------------------------------- report


@dataclass(frozen=True)
class SampleRecord:
    """One scored completion."""

    problem_id: str
    sample_index: int
    completion: str
    answer: str | None  # content of the last \boxed{}, None when absent
    correct: bool
    n_tokens: int
    truncated: bool
    ends_in_loop: bool = False  # atesd.loops.ends_in_loop of its token ids


@dataclass(frozen=True)
class DifficultyAccuracy:
    average_at_k: float
    n: int  # problems of this difficulty


@dataclass(frozen=True)
class EvalReport:
    """Summary of one evaluation. per_difficulty keys are difficulties as strings ("unknown" for
    none); per_problem_accuracy maps problem id → fraction of its k samples judged correct."""

    k: int
    n_problems: int
    average_at_k: float
    pass_at_1: float
    pass_at_k: float
    maj_at_k: float
    ci95: tuple[float, float]
    per_difficulty: dict[str, DifficultyAccuracy]
    per_problem_accuracy: dict[str, float] = field(repr=False)
    mean_completion_tokens: float
    truncation_rate: float
    loop_rate: float = 0.0  # share of completions ending in a repetition loop (atesd.loops)
    sampling: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    samples: tuple[SampleRecord, ...] = field(default=(), repr=False)

    def to_dict(self) -> dict:
        """Everything but the per-sample records, JSON-ready."""
        out = {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "samples"}
        out["ci95"] = list(self.ci95)
        out["per_difficulty"] = {key: asdict(value) for key, value in self.per_difficulty.items()}
        return out

    def to_json(self, out_dir: str | os.PathLike, samples: bool = True) -> Path:
        """Writes out_dir/eval.json (and out_dir/samples.jsonl when `samples`), each atomically;
        returns the eval.json path."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        if samples:
            lines = "".join(json.dumps(asdict(record), ensure_ascii=False) + "\n" for record in self.samples)
            atomic.write_text(out / SAMPLES_JSONL, lines)
        path = out / EVAL_JSON
        atomic.write_json(path, self.to_dict())
        return path

    def to_markdown(self) -> str:
        """A small table: the headline metrics, then accuracy per difficulty."""
        lo, hi = self.ci95
        k = self.k
        lines = [
            "| metric | value |",
            "| --- | --- |",
            f"| problems | {self.n_problems} |",
            f"| Average@{k} | {100 * self.average_at_k:.2f}% (95% CI {100 * lo:.2f}–{100 * hi:.2f}) |",
            f"| pass@1 | {100 * self.pass_at_1:.2f}% |",
            *([f"| pass@{k} | {100 * self.pass_at_k:.2f}% |"] if k > 1 else []),  # at k = 1 it is pass@1
            f"| maj@{k} | {100 * self.maj_at_k:.2f}% |",
            f"| mean completion tokens | {self.mean_completion_tokens:.1f} |",
            f"| truncation rate | {100 * self.truncation_rate:.2f}% |",
            f"| loop rate | {100 * self.loop_rate:.2f}% |",
        ]
        if self.per_difficulty:
            lines += ["", f"| difficulty | problems | Average@{k} |", "| --- | --- | --- |"]
            lines += [
                f"| {key} | {value.n} | {100 * value.average_at_k:.2f}% |" for key, value in self.per_difficulty.items()
            ]
        return "\n".join(lines) + "\n"

    def save(self, out_dir: str | os.PathLike, samples: bool = True) -> Path:
        """eval.json (+ samples.jsonl) and eval.md into out_dir; returns the eval.json path."""
        path = self.to_json(out_dir, samples=samples)
        atomic.write_text(Path(out_dir) / EVAL_MARKDOWN, self.to_markdown())
        return path


def _difficulty_key(difficulty) -> str:
    return "unknown" if difficulty is None else str(difficulty)


def _difficulty_order(key: str) -> tuple:
    try:
        return (0, float(key), key)
    except ValueError:
        return (1, 0.0, key)


def aggregate(
    problems: Sequence,
    records: Sequence[SampleRecord],
    k: int,
    sampling: dict | None = None,
    meta: dict | None = None,
) -> EvalReport:
    """The report for scored records: exactly k per problem, in problem order (records of problem
    i are records[i*k:(i+1)*k]). problems: atesd.data.Problem (id, difficulty used)."""
    if not problems:
        raise ValueError("aggregate: no problems to evaluate")
    if len(records) != k * len(problems):
        raise ValueError(f"aggregate: expected {k} records per problem ({k * len(problems)}), got {len(records)}")
    per_problem: dict[str, float] = {}
    passes, passes_at_1, majority_correct = [], [], []
    by_difficulty: dict[str, list[float]] = {}
    for index, problem in enumerate(problems):
        group = records[index * k:(index + 1) * k]
        if any(record.problem_id != problem.id for record in group):
            raise ValueError(f"aggregate: records for problem {problem.id!r} are out of order")
        correct = sum(record.correct for record in group)
        accuracy = correct / k
        per_problem[problem.id] = accuracy
        passes.append(pass_at_k(k, correct, k))
        passes_at_1.append(pass_at_k(k, correct, 1))
        winner = majority_index([record.answer for record in group])
        majority_correct.append(winner is not None and group[winner].correct)
        by_difficulty.setdefault(_difficulty_key(problem.difficulty), []).append(accuracy)
    accuracies = list(per_problem.values())
    n = len(problems)
    return EvalReport(
        k=k,
        n_problems=n,
        average_at_k=sum(accuracies) / n,
        pass_at_1=sum(passes_at_1) / n,
        pass_at_k=sum(passes) / n,
        maj_at_k=sum(majority_correct) / n,
        ci95=confidence_interval95(accuracies),
        per_difficulty={
            key: DifficultyAccuracy(average_at_k=sum(values) / len(values), n=len(values))
            for key, values in sorted(by_difficulty.items(), key=lambda item: _difficulty_order(item[0]))
        },
        per_problem_accuracy=per_problem,
        mean_completion_tokens=sum(record.n_tokens for record in records) / len(records),
        truncation_rate=sum(record.truncated for record in records) / len(records),
        loop_rate=sum(record.ends_in_loop for record in records) / len(records),
        sampling=dict(sampling or {}),
        meta=dict(meta or {}),
        samples=tuple(records),
    )


# ---------------------------------------------------------------- running


def _chunk_seed(seed: int | None, chunk: int) -> int | None:
    return None if seed is None else (seed * 1_000_003 + chunk) % (2**63)


def evaluate(
    model,
    tokenizer,
    problems: Sequence,
    k: int = 8,
    sampling: SamplingParams = SamplingParams(max_new_tokens=1024, temperature=0.6, top_p=0.95, top_k=20, seed=0),
    prompt_cfg: PromptConfig | None = None,
    batch_size: int = 64,
    progress: bool = True,
    engine: RolloutEngine | None = None,
    score_workers: int | None = None,
    meta: dict | None = None,
    description: str = "eval",
) -> EvalReport:
    """k completions per problem from `model` (student prompt), judged by atesd.answers.score_batch.

    engine: a rollout engine to sample with (default: the HF engine over `model`, batch_size prompts per call);
    generation runs in chunks of batch_size samples (progress bar over samples, named `description`); an engine with
    `generate_chunks` (`atesd.eval_vllm.DataParallelVLLM`) gets every chunk at once.
    score_workers: passed to score_batch (None: its default pool; 0: in-process).
    """
    if k < 1:
        raise ValueError(f"evaluate: k must be >= 1, got {k}")
    if batch_size < 1:
        raise ValueError(f"evaluate: batch_size must be >= 1, got {batch_size}")
    ids = [problem.id for problem in problems]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i, count in Counter(ids).items() if count > 1)
        raise ValueError(f"evaluate: problem id {duplicate!r} occurs more than once")
    prompt_cfg = prompt_cfg if prompt_cfg is not None else PromptConfig()
    if engine is None:
        engine = make_rollout_engine("hf", model, tokenizer, batch_size=batch_size)

    prompts = []
    for problem in problems:
        prompts += [student_prompt(tokenizer, problem.problem, prompt_cfg)] * k
    rollouts: list[Rollout] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(prompts), desc=description, unit="sample")
    try:
        chunks = [(prompts[start:start + batch_size], replace(sampling, seed=_chunk_seed(sampling.seed, chunk)))
                  for chunk, start in enumerate(range(0, len(prompts), batch_size))]
        if hasattr(engine, "generate_chunks"):  # several engines at once (atesd.eval_vllm)
            rollouts = [r for chunk_rollouts in engine.generate_chunks(chunks) for r in chunk_rollouts]
            if bar is not None:
                bar.update(len(prompts))
        else:
            for chunk_prompts, params in chunks:
                rollouts += engine.generate(chunk_prompts, params)
                if bar is not None:
                    bar.update(len(chunk_prompts))
    finally:
        if bar is not None:
            bar.close()

    golds = [problem.answer for problem in problems for _ in range(k)]
    texts = [rollout.text for rollout in rollouts]
    correct = score_batch(texts, golds, workers=score_workers)
    records = [
        SampleRecord(
            problem_id=problems[index // k].id,
            sample_index=index % k,
            completion=rollout.text,
            answer=extract_boxed(rollout.text),
            correct=bool(is_correct),
            n_tokens=len(rollout.completion_ids),
            truncated=rollout.truncated,
            ends_in_loop=ends_in_loop(rollout.completion_ids),
        )
        for index, (rollout, is_correct) in enumerate(zip(rollouts, correct))
    ]
    return aggregate(problems, records, k, sampling=asdict(sampling), meta=meta)
