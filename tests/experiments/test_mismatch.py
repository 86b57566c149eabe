"""The fixed-exposure mismatch sweep on the tiny random-weight Qwen3 and the toy problems."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from atesd.data import write_problems
from atesd.experiments.mismatch import (
    PLOT_NAMES,
    MismatchConfig,
    measure_mismatch,
    monotone_summary,
    run_mismatch,
    score_views,
    spearman,
    summarise,
    teacher_solves,
)
from atesd.prompts import PromptConfig, student_prompt, teacher_view
from atesd.reveal import split_steps
from atesd.rollout.hf import HFRolloutEngine

torch.set_num_threads(1)
RATIOS = (0.0, 0.25, 0.5, 0.75, 1.0)


class RecordingEngine(HFRolloutEngine):
    """The real HF engine, keeping every generate call's (prompts, params, rollouts)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls = []

    def generate(self, prompts, params):
        rollouts = super().generate(prompts, params)
        self.calls.append(([tuple(p) for p in prompts], params, rollouts))
        return rollouts


@pytest.fixture(scope="module")
def sweep(tiny_model_dir, toy_problems, tmp_path_factory):
    """One run of the whole sweep: 10 problems (2 per difficulty), 2 rollouts each, 16 tokens."""
    root = tmp_path_factory.mktemp("mismatch")
    data = root / "problems.jsonl"
    problems = sorted(toy_problems, key=lambda p: p.difficulty)[::2]
    write_problems(data, problems)
    report = run_mismatch(tiny_model_dir, str(data), ratios=RATIOS, out_dir=root / "out",
                          samples_per_problem=2, max_new_tokens=16, batch_size=8, chunk_size=64,
                          device="cpu")
    return report, root / "out"


def test_report_has_one_finite_row_per_ratio(sweep):
    report, _ = sweep
    assert [row.ratio for row in report.overall] == list(RATIOS)
    for row in report.overall:
        for name in ("kl_mean", "kl_p95", "kl_p99", "kl_max", "top1_disagreement", "grounding_logprob"):
            assert math.isfinite(getattr(row, name)), name
        assert 0.0 <= row.kl_mean <= row.kl_max and row.kl_p95 <= row.kl_p99 <= row.kl_max
        assert 0.0 <= row.top1_disagreement <= 1.0
        assert 0.0 <= row.teacher_accuracy <= 1.0 and row.grounding_logprob <= 0.0
        assert row.n_problems == 10 and row.n_rollouts == 20


def test_every_ratio_scores_the_same_rollouts(sweep):
    report, _ = sweep
    for rows in [report.overall, *report.per_difficulty.values()]:
        assert len({row.n_tokens for row in rows}) == 1
        assert len({row.rollout_accuracy for row in rows}) == 1
    # a random model still reads its prompt: the teacher's view changes the mismatch
    assert len({row.kl_mean for row in report.overall}) > 1


def test_per_difficulty_rows_partition_the_tokens(sweep):
    report, _ = sweep
    assert list(report.per_difficulty) == ["1", "2", "3", "4", "5"]
    for index, row in enumerate(report.overall):
        group_rows = [rows[index] for rows in report.per_difficulty.values()]
        assert sum(r.n_tokens for r in group_rows) == row.n_tokens
        assert sum(r.n_problems for r in group_rows) == row.n_problems
        weighted = sum(r.kl_mean * r.n_tokens for r in group_rows) / row.n_tokens
        assert weighted == pytest.approx(row.kl_mean, rel=1e-9)


def test_files_hold_the_table_and_plots(sweep):
    report, out = sweep
    saved = json.loads((out / "mismatch.json").read_text())
    assert len(saved["overall"]) == len(RATIOS) and set(saved["per_difficulty"]) == {"1", "2", "3", "4", "5"}
    assert set(saved["overall"][0]) >= {"kl_mean", "kl_p95", "kl_p99", "top1_disagreement", "kl_correct",
                                        "kl_incorrect", "teacher_accuracy", "grounding_logprob", "n_tokens"}
    assert set(saved["monotone"]) == {"kl_mean", "kl_p95", "kl_p99", "top1_disagreement"}
    assert (out / "mismatch.md").read_text() == report.to_markdown()
    for name in PLOT_NAMES:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ratio_zero_teacher_prompt_shows_no_reference_steps(tiny_tokenizer, toy_problems):
    problem = next(p for p in toy_problems if p.difficulty == 3)
    steps, final = split_steps(problem.solution)
    at_zero = tiny_tokenizer.decode(teacher_view(tiny_tokenizer, problem, 0.0, PromptConfig()))
    at_one = tiny_tokenizer.decode(teacher_view(tiny_tokenizer, problem, 1.0, PromptConfig()))
    squash = lambda text: "".join(text.split())  # noqa: E731  (the toy tokenizer may re-space)
    assert not any(squash(step) in squash(at_zero) for step in steps)
    assert squash(final) in squash(at_zero)
    assert all(squash(step) in squash(at_one) for step in steps)


def test_identical_prompts_give_exactly_zero_kl(tiny_model, tiny_tokenizer, toy_problems):
    prompts = [student_prompt(tiny_tokenizer, p.problem, PromptConfig()) for p in toy_problems[:4]]
    completions = [tiny_tokenizer(p.solution, add_special_tokens=False)["input_ids"] for p in toy_problems[:4]]
    (same,) = score_views(tiny_model, prompts, [prompts], completions, tiny_tokenizer.pad_token_id,
                          batch_size=3, chunk_size=16)
    assert same.kl.numel() == sum(len(c) for c in completions)
    assert torch.equal(same.kl, torch.zeros_like(same.kl)) and bool(same.top1_agree.all())
    assert same.token_rollout.tolist() == [i for i, c in enumerate(completions) for _ in c]


def test_sweep_generates_once_greedily_per_problem_and_ratio(tiny_model, tiny_tokenizer, toy_problems):
    engine = RecordingEngine(tiny_model.eval(), tiny_tokenizer, batch_size=8)
    problems, ratios = toy_problems[:3], (0.0, 1.0)
    cfg = MismatchConfig(ratios=ratios, samples_per_problem=2, max_new_tokens=8, batch_size=8, chunk_size=64)
    report = measure_mismatch(tiny_model, tiny_tokenizer, problems, cfg, engine=engine)
    (student_prompts, _, _), (teacher_prompts, params, rollouts) = engine.calls
    assert len(student_prompts) == 6 and params.greedy and params.max_new_tokens == 8
    assert params.temperature == 0.0 and len(rollouts) == len(problems) * len(ratios)
    expected = [tuple(teacher_view(tiny_tokenizer, p, r, PromptConfig())) for r in ratios for p in problems]
    assert teacher_prompts == expected
    for row in report.overall:
        assert row.teacher_accuracy in (0.0, 1 / 3, 2 / 3, 1.0) and row.grounding_logprob <= 0.0


def test_teacher_greedy_generation_is_deterministic_and_judged(tiny_model, tiny_tokenizer, toy_problems):
    engine = RecordingEngine(tiny_model.eval(), tiny_tokenizer, batch_size=4)
    problems = toy_problems[:4]
    prompts = [[teacher_view(tiny_tokenizer, p, r, PromptConfig()) for p in problems] for r in (0.0, 0.5)]
    first, second = (teacher_solves(engine, problems, prompts, max_new_tokens=12) for _ in range(2))
    assert first == second and [len(s) for s in first] == [4, 4]
    assert all(isinstance(ok, bool) for solved in first for ok in solved)
    (_, _, a), (_, _, b) = engine.calls
    assert [r.completion_ids for r in a] == [r.completion_ids for r in b]


def test_kl_is_split_by_rollout_correctness(tiny_model, tiny_tokenizer, toy_problems):
    prompts = [student_prompt(tiny_tokenizer, p.problem, PromptConfig()) for p in toy_problems[:2]]
    teachers = [teacher_view(tiny_tokenizer, p, 1.0, PromptConfig()) for p in toy_problems[:2]]
    completions = [[5, 6, 7], [8, 9]]
    (scores,) = score_views(tiny_model, prompts, [teachers], completions, tiny_tokenizer.pad_token_id)
    row = summarise(1.0, scores, [0, 1], [True, False], [True, False], [-0.1, -0.3], [0, 1])
    assert row.kl_correct == pytest.approx(float(scores.kl[:3].mean()))
    assert row.kl_incorrect == pytest.approx(float(scores.kl[3:].mean()))
    assert row.teacher_accuracy == 0.5 and row.grounding_logprob == pytest.approx(-0.2)
    assert row.rollout_accuracy == 0.5
    first = summarise(1.0, scores, [0], [True, False], [True, False], [-0.1, -0.3], [0, 1])
    assert first.teacher_accuracy == 1.0 and first.grounding_logprob == pytest.approx(-0.1)


def test_monotone_summary_counts_increases_and_ranks():
    assert spearman([0, 0.5, 1], [1.0, 2.0, 3.0]) == pytest.approx(1.0)
    assert spearman([0, 0.5, 1], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert spearman([0, 0.5, 1], [1.0, 1.0, 1.0]) is None
    # ranks x = (0, 1, 3, 2), y = (0, 1.5, 1.5, 3): ρ = 3 / sqrt(5 · 4.5)
    assert spearman([0, 0.5, 1, 0.75], [1.0, 2.0, 2.0, 3.0]) == pytest.approx(3 / math.sqrt(22.5))
    rows = [SimpleNamespace(ratio=r, kl_mean=v, kl_p95=v, kl_p99=1.0, top1_disagreement=1 - v)
            for r, v in [(0.0, 0.1), (0.5, 0.3), (1.0, 0.2)]]
    summary = monotone_summary(rows)
    assert summary["kl_mean"] == {"non_decreasing": False, "increases": 1, "steps": 2, "spearman": 0.5}
    assert summary["kl_p99"]["non_decreasing"] and summary["kl_p99"]["increases"] == 0
    assert summary["top1_disagreement"]["spearman"] == pytest.approx(-0.5)


def test_config_sorts_ratios_and_rejects_bad_ones():
    assert MismatchConfig(ratios=(1, 0.5, 0, 0.5)).ratios == (0.0, 0.5, 1.0)
    with pytest.raises(ValueError):
        MismatchConfig(ratios=(0.0, 1.5))
    with pytest.raises(ValueError):
        MismatchConfig(samples_per_problem=0)
