"""atesd.evaluate: estimators by hand, aggregation on hand-made records, end to end on the tiny model."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from atesd.data import Problem, write_problems
from atesd.eval_config import EvalConfig, run_eval
from atesd.evaluate import (
    EVAL_JSON,
    EVAL_MARKDOWN,
    SAMPLES_JSONL,
    SampleRecord,
    aggregate,
    confidence_interval95,
    evaluate,
    majority_index,
    paired_difference,
    pass_at_k,
)
from atesd.rollout.base import SamplingParams

REQUIRED_KEYS = {
    "average_at_k", "pass_at_k", "maj_at_k", "ci95", "per_difficulty", "n_problems", "k",
    "mean_completion_tokens", "truncation_rate", "loop_rate",
}


def _problem(pid: str, answer: str = "4", difficulty: int | None = None) -> Problem:
    return Problem(id=pid, problem=f"What is {pid}?", solution=f"It is \\boxed{{{answer}}}.", answer=answer,
                   difficulty=difficulty)


def _records(pid: str, answers, correct, n_tokens: int = 5, truncated: bool = False) -> list[SampleRecord]:
    return [
        SampleRecord(problem_id=pid, sample_index=i, completion=f"\\boxed{{{a}}}" if a else "", answer=a,
                     correct=c, n_tokens=n_tokens, truncated=truncated)
        for i, (a, c) in enumerate(zip(answers, correct))
    ]


def _biased(model, bias: dict[int, float]):
    """A copy whose output logits get `bias` (token id → added logit)."""
    biased = copy.deepcopy(model)
    head = torch.nn.Linear(biased.lm_head.in_features, biased.lm_head.out_features, bias=True)
    with torch.no_grad():
        head.weight.copy_(biased.lm_head.weight)
        head.bias.zero_()
        for token, value in bias.items():
            head.bias[token] = value
    biased.lm_head = head
    return biased


def _without_stop_tokens(model, tokenizer):
    """A copy that can never emit EOS or pad (their logits get −100), so every sample is truncated."""
    return _biased(model, {tokenizer.eos_token_id: -100.0, tokenizer.pad_token_id: -100.0})


def test_pass_at_k_matches_hand_computed_cases():
    assert pass_at_k(5, 0, 1) == 0.0
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)  # 1 − C(3,2)/C(4,2)
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - math.comb(7, 5) / math.comb(10, 5))
    assert pass_at_k(5, 5, 3) == 1.0
    assert pass_at_k(8, 1, 8) == 1.0 and pass_at_k(8, 0, 8) == 0.0  # n = k: "any correct"
    for n, c, k in [(4, 5, 1), (4, -1, 1), (4, 2, 5), (4, 2, 0)]:
        with pytest.raises(ValueError):
            pass_at_k(n, c, k)


def test_majority_vote_normalises_answers_and_breaks_ties_by_first_occurrence():
    assert majority_index(["3", "\\frac{1}{2}", " \\dfrac{1}{2} ", None, "\\frac{1}{2}."]) == 1
    assert majority_index(["3", "4", "4", "3"]) == 0
    assert majority_index([None, "7", "8"]) == 1
    assert majority_index([None, None]) is None


def test_maj_at_k_follows_the_vote_not_any_correct_sample():
    problems = [_problem("a"), _problem("b"), _problem("c")]
    records = (
        _records("a", ["5", "5", "4"], [False, False, True])  # majority wrong, one correct
        + _records("b", ["4", "4 ", "5"], [True, True, False])  # majority right
        + _records("c", [None, None, None], [False, False, False])  # nobody votes
    )
    report = aggregate(problems, records, k=3)
    assert report.maj_at_k == pytest.approx(1 / 3)
    assert report.pass_at_k == pytest.approx(2 / 3)
    assert report.average_at_k == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert report.pass_at_1 == pytest.approx(report.average_at_k)
    assert report.per_problem_accuracy == pytest.approx({"a": 1 / 3, "b": 2 / 3, "c": 0.0})


def test_per_difficulty_accuracy_groups_problems_and_orders_levels():
    problems = [_problem("a", difficulty=2), _problem("b", difficulty=1), _problem("c", difficulty=2),
                _problem("d", difficulty=None), _problem("e", difficulty=10)]
    records = (
        _records("a", ["4", "4"], [True, True]) + _records("b", ["1", "4"], [False, True])
        + _records("c", ["1", "1"], [False, False]) + _records("d", ["4", "1"], [True, False])
        + _records("e", ["1", "1"], [False, False])
    )
    report = aggregate(problems, records, k=2)
    assert list(report.per_difficulty) == ["1", "2", "10", "unknown"]
    assert report.per_difficulty["2"].average_at_k == pytest.approx(0.5) and report.per_difficulty["2"].n == 2
    assert report.per_difficulty["1"].average_at_k == pytest.approx(0.5) and report.per_difficulty["1"].n == 1
    assert report.per_difficulty["unknown"].n == 1
    with pytest.raises(ValueError, match="records per problem"):
        aggregate(problems, records[:-1], k=2)


def test_confidence_interval_has_zero_width_on_constant_data():
    assert confidence_interval95([0.25] * 6) == pytest.approx((0.25, 0.25))
    assert confidence_interval95([1.0]) == (1.0, 1.0)
    lo, hi = confidence_interval95([0.2, 0.4, 0.6])  # mean 0.4, sd 0.2
    half = 1.96 * 0.2 / math.sqrt(3)
    assert (lo, hi) == pytest.approx((0.4 - half, 0.4 + half))
    assert confidence_interval95([0.0, 1.0]) == (0.0, 1.0)  # clipped to [0, 1]


def test_paired_difference_matches_hand_computation_for_lists_and_id_maps():
    mean, se = paired_difference([0.0, 0.5, 1.0], [0.5, 0.5, 1.0])
    assert mean == pytest.approx(1 / 6)
    assert se == pytest.approx(math.sqrt(1 / 12) / math.sqrt(3))
    by_id = paired_difference({"x": 0.0, "y": 0.5, "z": 1.0}, {"z": 1.0, "x": 0.5, "y": 0.5})
    assert by_id == pytest.approx((mean, se))
    assert paired_difference([0.3, 0.3], [0.5, 0.5]) == pytest.approx((0.2, 0.0))
    with pytest.raises(ValueError):
        paired_difference({"x": 0.0}, {"y": 0.0})
    with pytest.raises(ValueError):
        paired_difference([0.0], [0.0, 1.0])


def test_evaluate_end_to_end_on_tiny_model_writes_eval_json(tiny_model, tiny_tokenizer, toy_problems, tmp_path):
    problems = toy_problems[:3]
    model = _without_stop_tokens(tiny_model, tiny_tokenizer)
    sampling = SamplingParams(max_new_tokens=4, temperature=1.0, top_k=20, seed=0)
    report = evaluate(model, tiny_tokenizer, problems, k=2, sampling=sampling, batch_size=4, progress=True,
                      score_workers=0)
    assert report.n_problems == 3 and report.k == 2 and len(report.samples) == 6
    assert report.truncation_rate == 1.0 and report.loop_rate == 0.0  # 4 tokens cannot hold a loop
    assert report.mean_completion_tokens == 4.0
    assert 0.0 <= report.average_at_k <= report.pass_at_k <= 1.0
    assert [r.problem_id for r in report.samples] == [p.id for p in problems for _ in range(2)]
    assert sum(v.n for v in report.per_difficulty.values()) == 3

    path = report.save(tmp_path / "out")
    data = json.loads(path.read_text())
    assert path.name == EVAL_JSON and REQUIRED_KEYS <= set(data)
    assert len(data["ci95"]) == 2 and data["ci95"][0] <= data["average_at_k"] <= data["ci95"][1]
    assert data["sampling"]["max_new_tokens"] == 4
    lines = (tmp_path / "out" / SAMPLES_JSONL).read_text().splitlines()
    assert len(lines) == 6 and json.loads(lines[0])["truncated"] is True
    assert "Average@2" in (tmp_path / "out" / EVAL_MARKDOWN).read_text()


def test_greedy_evaluation_is_deterministic(tiny_model, tiny_tokenizer, toy_problems):
    greedy = SamplingParams(max_new_tokens=6, temperature=0.0)
    runs = [
        evaluate(tiny_model, tiny_tokenizer, toy_problems[:2], k=2, sampling=greedy, progress=False, score_workers=0)
        for _ in range(2)
    ]
    assert runs[0].samples == runs[1].samples
    assert runs[0].samples[0].completion == runs[0].samples[1].completion  # k greedy samples agree


def test_run_eval_loads_a_saved_model_and_writes_reports(tiny_model_dir, toy_problems, tmp_path):
    data = tmp_path / "problems.jsonl"
    write_problems(data, toy_problems[:4])
    cfg = EvalConfig(model=str(tiny_model_dir), data=str(data), k=2, out_dir=str(tmp_path / "eval"),
                     max_new_tokens=3, limit=2, batch_size=4, score_workers=0)
    report = run_eval(cfg, progress=False)
    assert report.n_problems == 2 and report.meta["limit"] == 2
    saved = json.loads((tmp_path / "eval" / EVAL_JSON).read_text())
    assert saved["k"] == 2 and saved["n_problems"] == 2
    assert (tmp_path / "eval" / EVAL_MARKDOWN).exists()
    assert not list((tmp_path / "eval").glob("*.tmp"))


def test_loop_rate_is_the_share_of_records_ending_in_a_loop_and_is_reported(tmp_path):
    records = _records("a", ["1", "2"], [True, False]) + _records("b", ["4", None], [True, False])
    records = [r if i != 1 else SampleRecord(**{**r.__dict__, "ends_in_loop": True}) for i, r in enumerate(records)]
    report = aggregate([_problem("a"), _problem("b")], records, k=2)
    assert report.loop_rate == 0.25
    assert report.to_dict()["loop_rate"] == 0.25
    assert "| loop rate | 25.00% |" in report.to_markdown()


def test_a_model_that_repeats_one_token_ends_every_completion_in_a_loop(tiny_model, tiny_tokenizer, toy_problems,
                                                                         tmp_path):
    token = tiny_tokenizer.convert_tokens_to_ids(tiny_tokenizer.tokenize("7"))[0]
    stuck = _biased(tiny_model, {token: 100.0})
    greedy = SamplingParams(max_new_tokens=24, temperature=0.0)
    report = evaluate(stuck, tiny_tokenizer, toy_problems[:2], k=1, sampling=greedy, progress=False, score_workers=0)
    assert [r.n_tokens for r in report.samples] == [24, 24]
    assert report.loop_rate == 1.0 and all(r.ends_in_loop for r in report.samples)
    report.save(tmp_path)
    assert json.loads((tmp_path / EVAL_JSON).read_text())["loop_rate"] == 1.0
    assert json.loads((tmp_path / SAMPLES_JSONL).read_text().splitlines()[0])["ends_in_loop"] is True


def test_eval_markdown_shows_pass_at_1_once_at_k_1_and_pass_at_k_beside_it_otherwise():
    one = aggregate([_problem("a"), _problem("b")], _records("a", ["1"], [True]) + _records("b", ["4"], [False]), k=1)
    assert one.to_markdown().count("| pass@1 |") == 1
    two = aggregate([_problem("a")], _records("a", ["1", "2"], [True, False]), k=2)
    assert "| pass@1 | 50.00% |" in two.to_markdown() and "| pass@2 | 100.00% |" in two.to_markdown()
