"""Where the mismatch sits in a toy rollout: token labels, per-class pooling, the CLI flag."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from atesd.cli import main
from atesd.data import Problem, write_problems
from atesd.experiments.positions import (
    GROUPS,
    POSITIONS,
    aggregate,
    measure_positions,
    token_char_spans,
    token_positions,
)

torch.set_num_threads(1)
PROBLEM = "Evaluate (20*3)-(5+4)."
RIGHT = "5+4=9\n\n20*3=60\n\n60-9=51\n\nThe answer is \\boxed{51}."
SLIP_AT_STEP_2 = "5+4=9\n\n20*3=61\n\n61-9=52\n\nThe answer is \\boxed{52}."  # arithmetic slip, carried on


def _labelled(tokenizer, text: str) -> list[tuple[str, str]]:
    """(token text, label) for `text` encoded by the toy tokenizer plus EOS."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    decoded, spans = token_char_spans(tokenizer, ids)
    assert decoded == text and len(spans) == len(ids)
    return [(decoded[s:e], label) for (s, e), label in zip(spans, token_positions(PROBLEM, decoded, spans))]


def _text_of(pairs, label: str) -> str:
    return "".join(piece for piece, lab in pairs if lab == label)


def test_spans_tile_the_text_and_eos_has_an_empty_span(tiny_tokenizer):
    ids = tiny_tokenizer(RIGHT, add_special_tokens=False)["input_ids"] + [tiny_tokenizer.eos_token_id]
    text, spans = token_char_spans(tiny_tokenizer, ids)
    assert spans[0][0] == 0 and spans[-1] == (len(text), len(text))
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))


def test_correct_rollout_is_all_before_then_answer(tiny_tokenizer):
    pairs = _labelled(tiny_tokenizer, RIGHT)
    labels = [lab for _, lab in pairs]
    assert set(labels) == {"before", "answer"}
    cut = labels.index("answer")
    assert all(lab == "answer" for lab in labels[cut:]) and labels[-1] == "answer"  # EOS
    assert "".join(p for p, _ in pairs[:cut]).strip() == "5+4=9\n\n20*3=60\n\n60-9=51"
    assert _text_of(pairs, "answer").strip() == "The answer is \\boxed{51}."


def test_slip_at_step_two_of_three_labels_before_first_error_after_answer_in_order(tiny_tokenizer):
    pairs = _labelled(tiny_tokenizer, SLIP_AT_STEP_2)
    labels = [lab for _, lab in pairs]
    runs = [lab for i, lab in enumerate(labels) if i == 0 or lab != labels[i - 1]]
    assert runs == ["before", "first_error", "after", "answer"]
    assert _text_of(pairs, "before") == "5+4=9"
    # the blank line before a paragraph belongs to that paragraph
    assert _text_of(pairs, "first_error") == "\n\n20*3=61"
    assert _text_of(pairs, "after") == "\n\n61-9=52"
    assert _text_of(pairs, "answer") == "\n\nThe answer is \\boxed{52}."


def test_missing_answer_puts_trailing_tokens_and_eos_in_answer(tiny_tokenizer):
    pairs = _labelled(tiny_tokenizer, "5+4=9\n\n20*3=60\n\n")
    assert _text_of(pairs, "before") == "5+4=9\n\n20*3=60"
    assert _text_of(pairs, "answer") == "\n\n" and pairs[-1][1] == "answer"


def test_kl_shares_sum_to_one_per_group_and_token_counts_partition():
    rng = np.random.default_rng(0)
    labels = list(rng.choice(POSITIONS, size=40))
    token_rollout = np.repeat(np.arange(4), 10)
    kl, agree = rng.exponential(size=40), rng.integers(0, 2, size=40).astype(np.float64)
    rows = aggregate(0.5, kl, agree, labels, token_rollout, [False, True, False, False])
    for group in GROUPS:
        group_rows = [r for r in rows if r.group == group]
        assert [r.position for r in group_rows] == list(POSITIONS)
        assert sum(r.kl_share for r in group_rows) == pytest.approx(1.0)
        assert sum(r.token_share for r in group_rows) == pytest.approx(1.0)
    wrong = {r.position: r for r in rows if r.group == "wrong"}
    mask = (token_rollout != 1) & (np.asarray(labels) == "after")
    assert wrong["after"].n_tokens == mask.sum() and wrong["after"].n_rollouts == 3
    assert wrong["after"].kl_share == pytest.approx(kl[mask].sum() / kl[token_rollout != 1].sum())
    assert wrong["after"].kl_mean == pytest.approx(kl[mask].mean())


def test_end_to_end_on_the_tiny_world_gives_finite_numbers(tiny_model, tiny_tokenizer, toy_problems):
    problems = sorted(toy_problems, key=lambda p: p.difficulty)[::5]  # 4 problems, levels 1, 2, 3/4, 5
    report = measure_positions(tiny_model, tiny_tokenizer, problems, ratios=(0.0, 1.0), seed=0,
                               max_new_tokens=16, batch_size=4, chunk_size=64)
    assert report.ratios == (0.0, 1.0) and len(report.rows) == 2 * len(GROUPS) * len(POSITIONS)
    assert sum(sum(kinds.values()) for kinds in report.error_kinds.values()) == 4
    for ratio in report.ratios:
        rows = [r for r in report.rows if r.ratio == ratio]
        assert 4 <= sum(r.n_tokens for r in rows) <= 4 * 16
        for r in rows:
            if r.n_tokens:
                assert math.isfinite(r.kl_mean) and r.kl_mean >= 0 and 0 <= r.top1_disagreement <= 1
        wrong = [r for r in rows if r.group == "wrong"]
        if wrong[0].n_rollouts:
            assert sum(r.kl_share for r in wrong) == pytest.approx(1.0)
            assert math.isfinite(report.share_after_error(ratio))
    saved = json.loads(json.dumps(report.to_dict()))
    assert set(saved["rows"][0]) >= {"ratio", "group", "position", "n_tokens", "kl_mean", "kl_share",
                                     "top1_disagreement", "token_share", "n_rollouts"}
    assert "KL share after the first error" in report.to_markdown()


def test_cli_positions_writes_positions_json_next_to_mismatch_json(tiny_model_dir, toy_problems, tmp_path, capsys):
    data = tmp_path / "toy.jsonl"
    write_problems(data, toy_problems[:4])
    out = tmp_path / "out"
    code = main(["mismatch", "--model", str(tiny_model_dir), "--data", str(data), "--ratios", "0,1",
                 "--max-new-tokens", "8", "--batch-size", "4", "--chunk-size", "64", "--out", str(out), "--positions"])
    assert code == 0
    positions = json.loads((out / "positions.json").read_text())
    mismatch = json.loads((out / "mismatch.json").read_text())
    assert positions["ratios"] == mismatch["ratios"] == [0.0, 1.0]
    # the same rollouts: every ratio's classes add up to the mismatch sweep's token count
    for row in mismatch["overall"]:
        assert sum(r["n_tokens"] for r in positions["rows"] if r["ratio"] == row["ratio"]) == row["n_tokens"]
    assert "wrote " + str(out / "positions.json") in capsys.readouterr().out


def test_cli_positions_on_non_toy_data_is_a_one_line_error(tiny_model_dir, tmp_path, capsys):
    data = tmp_path / "math.jsonl"
    write_problems(data, [Problem(id="m1", problem="What is 1+1?", solution="\\boxed{2}", answer="2")])
    code = main(["mismatch", "--model", str(tiny_model_dir), "--data", str(data), "--positions",
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and str(data) in err and "toy" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
