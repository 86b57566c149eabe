"""The toy bench: the method table, the quick suite end to end on the tiny fixture model, resuming."""

from __future__ import annotations

import json
import shutil

import pytest

from atesd.experiments.bench import FULL_BUDGET, METHODS, METHODS_BY_NAME, QUICK_BUDGET, method_config, planned_seconds, run_bench
from atesd.experiments.bench_report import PLOTS
from atesd.experiments.bench_stats import tokens_to_reach
from atesd.data import write_problems
from atesd.toy.task import toy_problems

BENCH_METHODS = ["base", "opsd", "grpo", "atesd"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """train/val/test JSONL files of toy problems, as a toy world's data folder holds them."""
    folder = tmp_path_factory.mktemp("bench-data")
    write_problems(folder / "train.jsonl", toy_problems(64, seed=0, split="train"))
    write_problems(folder / "val.jsonl", toy_problems(10, seed=0, split="val"))
    write_problems(folder / "test.jsonl", toy_problems(10, seed=0, split="test"))
    return folder


@pytest.fixture(scope="module")
def quick_bench(tiny_model_dir, data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "out"
    outcome = run_bench(quick=True, out=out, methods=BENCH_METHODS, model_dir=tiny_model_dir, data_dir=data_dir)
    return out, outcome


def test_method_table_has_every_method_once():
    names = [m.name for m in METHODS]
    assert names == ["base", "sft", "grpo", "grpo-16x8", "grpo-16x8-lr1e-5", "opsd", "fixed-0", "fixed-0.25", "fixed-0.5", "fixed-0.75", "random",
                     "schedule", "schedule-down", "by-difficulty-easy-full", "by-difficulty-hard-full", "by-correct",
                     "by-pass-rate", "opsd-g4", "by-confidence", "by-divergence", "by-random", "atesd", "atesd-per-example",
                     "atesd-per-difficulty", "atesd-per-difficulty-paper-start",
                     "atesd-per-difficulty-floor", "atesd-per-difficulty-beta22", "atesd-per-feature", "atesd-per-feature-divergence", "atesd-slow", "atesd-paper-exact", "atesd-paper", "atesd-discounted",
                     "atesd-one-step", "atesd-no-gt"]
    assert [m.name for m in METHODS if not m.trains] == ["base"]


def test_every_method_config_loads_with_the_same_rollout_budget(tmp_path, tiny_model_dir, data_dir):
    expected = {"sft": ("sft", "fixed"), "grpo": ("grpo", "fixed"), "opsd": ("distill", "fixed"),
                "random": ("distill", "random"), "schedule": ("distill", "schedule"),
                "atesd": ("distill", "learned")}
    for method in METHODS:
        cfg = method_config(method, 1, FULL_BUDGET, tmp_path / method.name, str(tiny_model_dir), str(data_dir))
        f = method.batch_factor  # f times the rollouts per step for 1/f of the steps: the same rollouts in all
        assert cfg.prompts_per_step * cfg.rollout.num_generations * cfg.steps == FULL_BUDGET.rollouts_per_run
        assert cfg.prompts_per_step * cfg.rollout.num_generations == FULL_BUDGET.prompts_per_step * f
        assert cfg.seed == 1 and cfg.steps == FULL_BUDGET.steps // f
        assert cfg.validation.every == cfg.save_every == FULL_BUDGET.validation_every // f
        if method.name in expected:
            assert (cfg.loss.objective, cfg.exposure.policy) == expected[method.name]
        if method.name == "fixed-0.25":
            assert cfg.exposure.reveal_ratio == 0.25
        if method.name == "atesd":
            assert (cfg.exposure.reward, cfg.exposure.granularity) == ("counterfactual", "global")
        if method.name == "atesd-per-example":
            assert (cfg.exposure.reward, cfg.exposure.granularity) == ("counterfactual", "per_example")
        if method.name == "atesd-per-difficulty":
            assert (cfg.exposure.reward, cfg.exposure.granularity, cfg.exposure.credit_examples,
                    cfg.exposure.probe_size) == ("counterfactual", "per_difficulty", 32, 64)
            assert (cfg.prompts.reveal_rounding, cfg.exposure.initial_beta_a) == ("nearest", 6.0)
        if method.name == "atesd-per-difficulty-paper-start":  # the paper's rounding and start
            assert (cfg.prompts.reveal_rounding, cfg.exposure.initial_beta_a, cfg.exposure.initial_beta_b) == (
                "floor", 2.0, 2.0)
        if method.config == "toy-atesd-paper.yaml":  # the paper's controller and its ablations
            assert cfg.exposure.hold_steps == 4 and cfg.exposure.decisions_per_update == 4
        if method.name in ("atesd-paper", "atesd-paper-exact"):
            assert (cfg.exposure.reward, cfg.exposure.progress_signal, cfg.exposure.lookahead_steps) == (
                "discounted", "distill_loss", 8)
        if method.name == "atesd-paper-exact":  # λ_gt after scaling, g_{t0+1} … g_{t0+L}, the 6 features
            assert (cfg.exposure.grounding_scale, cfg.exposure.grounding_steps, len(cfg.exposure.state_features)) == (
                "zscore", "next", 6)
        if method.name in ("atesd-paper", "atesd-one-step", "atesd-no-gt"):  # as their committed results ran
            assert (cfg.exposure.grounding_scale, cfg.exposure.grounding_steps, len(cfg.exposure.state_features)) == (
                "none", "own", 7)
        if method.name == "atesd-one-step":
            assert cfg.exposure.reward == "one_step"
        if method.name == "atesd-no-gt":
            assert cfg.exposure.grounding_weight == 0 and cfg.exposure.reward == "discounted"
    grpo = method_config(METHODS_BY_NAME["grpo"], 0, FULL_BUDGET, tmp_path / "g", str(tiny_model_dir), str(data_dir))
    assert (grpo.prompts_per_step, grpo.rollout.num_generations, grpo.steps, grpo.optim.lr) == (4, 8, 500, 3e-5)
    wide = method_config(METHODS_BY_NAME["grpo-16x8"], 0, FULL_BUDGET, tmp_path / "w", str(tiny_model_dir),
                         str(data_dir))
    assert (wide.prompts_per_step, wide.rollout.num_generations, wide.steps, wide.validation.every) == (16, 8, 125, 31)
    assert wide.optim.lr == 3e-5 and method_config(METHODS_BY_NAME["grpo-16x8-lr1e-5"], 0, FULL_BUDGET, tmp_path / "l",
                                                   str(tiny_model_dir), str(data_dir)).optim.lr == 1e-5


def test_label_free_oracles_give_the_hard_looking_rollouts_half_exposure(tmp_path, tiny_model_dir, data_dir):
    by_name = {m.name: m for m in METHODS}
    expected = {"by-correct": ("correct", "value", [0.5], [0.5, 1.0]),
                "by-pass-rate": ("pass_rate", "value", [0.5], [0.5, 1.0]),
                "by-confidence": ("confidence", "batch_quantile", [0.4], [0.5, 1.0]),
                "by-divergence": ("divergence", "batch_quantile", [0.6], [1.0, 0.5])}
    for name, (feature, binning, edges, ratios) in expected.items():
        cfg = method_config(by_name[name], 0, FULL_BUDGET, tmp_path / name, str(tiny_model_dir), str(data_dir))
        e = cfg.exposure
        assert (e.policy, e.feature, e.feature_binning, e.feature_thresholds, e.feature_ratios) == (
            "by_feature", feature, binning, edges, ratios)
        assert cfg.loss.objective == "distill"
    pass_rate = method_config(by_name["by-pass-rate"], 0, FULL_BUDGET, tmp_path / "p", str(tiny_model_dir),
                              str(data_dir))  # a group of 4 rollouts per problem, the same rollout budget
    assert (pass_rate.prompts_per_step, pass_rate.rollout.num_generations) == (8, 4)


def test_seed_offset_runs_the_fresh_seeds_only(tiny_model_dir, data_dir, tmp_path):
    out = tmp_path / "fresh"
    outcome = run_bench(quick=True, seeds=2, seed_offset=6, out=out, methods=["base", "by-pass-rate"],
                        model_dir=tiny_model_dir, data_dir=data_dir)
    assert sorted(outcome.ran) == [(6, "base"), (6, "by-pass-rate"), (7, "base"), (7, "by-pass-rate")]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["6", "7"]
    bench = json.loads((out / "bench.json").read_text())
    assert bench["seeds"] == [6, 7] and sorted({r["seed"] for r in bench["results"]}) == [6, 7]
    assert "--seed-offset 6" in bench["command"]
    result = json.loads((out / "7" / "by-pass-rate" / "result.json").read_text())
    assert (result["seed"], result["prompts_per_step"], result["num_generations"]) == (7, 1, 2)
    with pytest.raises(ValueError, match="seed-offset"):
        run_bench(quick=True, seeds=1, seed_offset=-1, out=tmp_path / "bad", methods=["base"],
                  model_dir=tiny_model_dir, data_dir=data_dir)


def test_bench_overrides_reach_every_method_but_the_method_own_override_wins(tmp_path, tiny_model_dir, data_dir):
    shared = ("optim.lr=7e-05", "exposure.reveal_ratio=0.5")  # neither is a toy config's default
    for method in METHODS:
        cfg = method_config(method, 0, FULL_BUDGET, tmp_path / method.name, str(tiny_model_dir), str(data_dir),
                            overrides=shared)
        own = dict(o.split("=", 1) for o in method.overrides)
        assert cfg.optim.lr == float(own.get("optim.lr", 7e-05))  # the GRPO rows name their own rate
        if method.name == "fixed-0.25":
            assert cfg.exposure.reveal_ratio == 0.25
        elif method.name == "opsd":
            assert cfg.exposure.reveal_ratio == 0.5


def test_full_budget_is_the_toy_configuration_under_the_toy_protocol():
    from atesd.config import load_config
    from atesd.experiments.protocol import TOY_PROTOCOL

    toy = load_config("configs/toy-opsd.yaml")
    assert FULL_BUDGET.steps == toy.steps and FULL_BUDGET.prompts_per_step == toy.prompts_per_step
    assert FULL_BUDGET.max_new_tokens == toy.rollout.max_new_tokens and FULL_BUDGET.test == TOY_PROTOCOL
    assert FULL_BUDGET.steps // FULL_BUDGET.validation_every == 4
    one_seed = planned_seconds(FULL_BUDGET, METHODS, n_seeds=1)
    assert planned_seconds(FULL_BUDGET, METHODS, n_seeds=3) == pytest.approx(3 * one_seed)


def test_quick_bench_writes_results_report_and_plots(quick_bench):
    out, outcome = quick_bench
    assert sorted(outcome.ran) == sorted((0, m) for m in BENCH_METHODS) and not outcome.skipped
    for method in BENCH_METHODS:
        result = json.loads((out / "0" / method / "result.json").read_text())
        assert result["method"] == method and result["test"]["k"] == QUICK_BUDGET.test.k
        assert result["test"]["n_problems"] == QUICK_BUDGET.test.n_problems
        if method == "base":
            assert result["chosen_step"] == 0 and result["rollout_tokens_total"] == 0
            assert result["test_last_step"] is None
        else:  # the checkpoint comes from validation, and the tokens are counted up to it
            assert result["test_last_step"]["n_problems"] == QUICK_BUDGET.test.n_problems  # the last step's too
            assert 1 <= result["chosen_step"] <= QUICK_BUDGET.steps
            assert (out / "0" / method / "best" / "validation.json").is_file()
            assert [p["step"] for p in result["val_curve"]] == [1, 2]
            assert 0 < result["rollout_tokens_to_chosen"] <= result["rollout_tokens_total"]
        if method == "atesd":  # the learned controller's Beta at its last decision (global: no levels)
            assert result["reward_correlations"] is None  # 2 steps: no controller update, no credited decision
            final = result["final_beta_mean"]
            assert 0 < final["all"] < 1 and final["by_difficulty"] == {}
            assert final["decision_step"] == QUICK_BUDGET.steps - 1
        else:
            assert result["final_beta_mean"] is None and result["reward_correlations"] is None
    bench = json.loads((out / "bench.json").read_text())
    assert len(bench["results"]) == len(BENCH_METHODS) and bench["budget"]["steps"] == QUICK_BUDGET.steps
    text = (out / "BENCHMARKS-toy.md").read_text()
    for needle in ("atesd bench --suite toy", "torch", "Paired difference against OPSD", "Paired difference against the base",
                   "reach GRPO's final validation accuracy", "| atesd |", "difficulty 1"):
        assert needle in text
    for plot in PLOTS:
        assert (out / plot).stat().st_size > 1000


def test_tokens_to_reach_grpo_uses_the_first_validation_point_at_or_above_its_final_accuracy():
    def run(method, curve):
        return {"method": method, "seed": 0, "val_curve": [{"tokens": t, "val_accuracy": a} for t, a in curve]}

    groups = {"grpo": [run("grpo", [(10, 0.2), (20, 0.5)])], "fast": [run("fast", [(5, 0.6), (9, 0.7)])],
              "slow": [run("slow", [(5, 0.1), (9, 0.4)])]}
    assert tokens_to_reach(groups, "grpo") == [20]
    assert tokens_to_reach(groups, "fast") == [5]
    assert tokens_to_reach(groups, "slow") == [None]


def test_killed_bench_redoes_only_the_run_without_result_resuming_its_checkpoint(quick_bench, tiny_model_dir,
                                                                                  data_dir):
    out, _ = quick_bench
    run_dir = out / "0" / "opsd"
    (run_dir / "result.json").unlink()  # as if killed during the last step: no result, no step-2 checkpoint
    shutil.rmtree(run_dir / "checkpoints" / "step-000002")
    first_step_line = (run_dir / "metrics.jsonl").read_text().splitlines()[0]
    kept = {m: (out / "0" / m / "result.json").stat().st_mtime_ns for m in BENCH_METHODS if m != "opsd"}
    outcome = run_bench(quick=True, out=out, methods=BENCH_METHODS, model_dir=tiny_model_dir, data_dir=data_dir)
    assert outcome.ran == ((0, "opsd"),)
    assert sorted(outcome.skipped) == sorted((0, m) for m in kept)
    assert (run_dir / "result.json").is_file()
    assert {m: (out / "0" / m / "result.json").stat().st_mtime_ns for m in kept} == kept
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [0, 1]
    assert lines[0] == first_step_line  # step 0 was not run again: the run resumed from step-000001


def test_bench_folder_refuses_another_budget(quick_bench, tiny_model_dir, data_dir):
    out, _ = quick_bench
    with pytest.raises(ValueError, match="another budget"):
        run_bench(quick=False, out=out, methods=["base"], model_dir=tiny_model_dir, data_dir=data_dir)
    with pytest.raises(ValueError, match="another budget"):  # --steps changes the budget
        run_bench(quick=True, out=out, methods=["base"], model_dir=tiny_model_dir, data_dir=data_dir, steps=8)
    with pytest.raises(ValueError, match="overrides"):
        run_bench(quick=True, out=out, methods=["base"], model_dir=tiny_model_dir, data_dir=data_dir,
                  overrides=["optim.lr=1e-05"])


def test_a_learned_runs_reward_correlations_are_kept_with_undefined_ones_as_null(tmp_path):
    from atesd.experiments.bench import credited_reward_correlations

    def credit(alpha, other, reward):
        return {"event": "credit", "reveal_ratio": alpha, "counterfactual_ratio": other, "progress_return": reward,
                "grounding_return": None, "reward": reward}

    lines = [credit(0.9, 0.1, 1.0), credit(0.2, 0.6, -0.5), credit(0.5, 0.3, 0.2), credit(0.8, 0.7, 0.1),
             credit(0.1, 0.9, -1.0), {"event": "decision", "reveal_ratio": 0.5}]
    (tmp_path / "exposure.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    found = credited_reward_correlations(tmp_path)
    assert found["decisions"] == 5 and found["x"] == "α − α′" and "run" not in found
    assert found["parts"]["reward"]["r"] > 0.9 and found["parts"]["reward"]["n"] == 5
    (tmp_path / "exposure.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines[:3]))
    assert credited_reward_correlations(tmp_path)["parts"]["reward"] == {"r": None, "ci95": [None, None], "n": 3}
    (tmp_path / "exposure.jsonl").write_text(json.dumps(lines[-1]) + "\n")
    assert credited_reward_correlations(tmp_path) is None  # no credited decision (a fixed policy)
