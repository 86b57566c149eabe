"""atesd diagnose rewards: the correlation of α with the reward, overall and within difficulty levels."""

from __future__ import annotations

import json
import math
import random

import pytest

from atesd.experiments.exposure_diagnostic import correlation_ci, reward_correlations


def _write(run_dir, credits):
    lines = [{"step": 0, "event": "decision", "reveal_ratio": 0.5}] + credits
    (run_dir / "exposure.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))


def test_per_example_credit_is_split_by_difficulty_and_opposite_levels_show_opposite_signs(tmp_path):
    rng = random.Random(0)
    credits = []
    for i in range(400):
        level = 1 + i % 2
        chosen, other = rng.random(), rng.random()
        reward = (chosen - other) * (1 if level == 1 else -1) + rng.gauss(0, 0.3)
        credits.append({"event": "credit", "step": i, "difficulty": level, "reveal_ratio": chosen,
                        "counterfactual_ratio": other, "progress_return": reward, "grounding_return": None,
                        "reward": reward})
    _write(tmp_path, credits)
    result = reward_correlations(tmp_path)
    assert result["x"] == "α − α′" and result["decisions"] == 400
    by_level = result["reward_by_difficulty"]
    assert by_level["1"]["r"] > 0.7 and by_level["2"]["r"] < -0.7 and by_level["1"]["n"] == 200
    assert abs(result["parts"]["reward"]["r"]) < 0.2  # pooled, the two levels cancel
    assert "grounding_return" not in result["parts"]  # never measured


def test_global_decisions_have_no_per_level_split_and_a_run_without_credit_is_an_error(tmp_path):
    _write(tmp_path, [{"event": "credit", "reveal_ratio": a, "progress_return": a, "grounding_return": -a,
                       "reward": a} for a in (0.1, 0.4, 0.6, 0.9, 0.3)])
    result = reward_correlations(tmp_path)
    assert result["x"] == "α" and "reward_by_difficulty" not in result
    assert result["parts"]["reward"]["r"] == pytest.approx(1.0, abs=1e-5)
    assert result["parts"]["grounding_return"]["r"] == pytest.approx(-1.0, abs=1e-5)
    _write(tmp_path, [])
    with pytest.raises(ValueError, match="no credited decision"):
        reward_correlations(tmp_path)


def test_correlation_interval_is_fishers_and_needs_four_points():
    r, lo, hi = correlation_ci([1, 2, 3, 4, 5, 6, 7], [1, 3, 2, 5, 4, 7, 6])
    z, half = math.atanh(r), 1.96 / math.sqrt(7 - 3)
    assert r == pytest.approx(25 / 28) and (lo, hi) == pytest.approx((math.tanh(z - half), math.tanh(z + half)))
    assert all(math.isnan(v) for v in correlation_ci([1, 2, 3], [1, 2, 3]))


def test_a_short_learned_run_without_credit_says_the_first_comes_after_decisions_per_update(tmp_path):
    from atesd.config import load_config, save_config

    base = ["model.name_or_path=m", "data.train=t.jsonl"]
    save_config(load_config(None, [*base, "exposure.policy=learned", "exposure.decisions_per_update=3"]),
                tmp_path / "config.yaml")
    (tmp_path / "metrics.jsonl").write_text('{"step": 0}\n{"step": 1}\n')
    _write(tmp_path, [])
    with pytest.raises(ValueError) as err:
        reward_correlations(tmp_path)
    assert "the first credits come with the controller's first update, after exposure.decisions_per_update=3 " \
           "decisions have completed" in str(err.value) and "this run has 2 step(s)" in str(err.value)
    save_config(load_config(None, [*base, "exposure.policy=fixed"]), tmp_path / "config.yaml")
    with pytest.raises(ValueError, match=r"only exposure.policy=learned writes credits \(this run: exposure.policy=fixed\)"):
        reward_correlations(tmp_path)
