"""The bench report's markdown on hand-made results (no training): which comparisons it shows, and
each seed's difference beside their mean."""

from __future__ import annotations

def test_markdown_compares_only_the_learned_controllers_with_random_exposure():
    from dataclasses import asdict

    from atesd.experiments.bench import QUICK_BUDGET, machine_info
    from atesd.experiments.bench_report import markdown

    def run(method, policy, accuracies):
        test = {"average_at_k": sum(accuracies) / len(accuracies), "per_difficulty": {},
                "per_problem_accuracy": dict(enumerate(accuracies))}
        return {"method": method, "seed": 0, "exposure_policy": policy, "chosen_step": 4, "test": test,
                "test_last_step": test, "rollout_tokens_to_chosen": 1, "rollout_tokens_total": 1, "val_curve": []}

    groups = {"opsd": [run("opsd", "fixed", [1.0, 0.0])], "random": [run("random", "random", [0.5, 0.0])],
              "atesd": [run("atesd", "learned", [1.0, 0.5])]}
    meta = {"command": "c", "machine": machine_info(), "date": "d", "seeds": [0], "budget": asdict(QUICK_BUDGET)}
    text = markdown(groups, meta, plots=())
    section = text.split("### Paired difference against uniformly random exposure")[1].split("###")[0]
    assert "| atesd | +50.0 |" in section
    assert "| opsd |" not in section and "| random |" not in section


def test_markdown_shows_each_seed_difference_and_their_mean_with_the_se_over_seeds():
    from dataclasses import asdict

    from atesd.experiments.bench import QUICK_BUDGET, machine_info
    from atesd.experiments.bench_report import markdown

    def run(method, seed, accuracies):
        test = {"average_at_k": sum(accuracies) / len(accuracies), "per_difficulty": {},
                "per_problem_accuracy": dict(enumerate(accuracies))}
        return {"method": method, "seed": seed, "exposure_policy": "fixed", "chosen_step": 4, "test": test,
                "test_last_step": test, "rollout_tokens_to_chosen": 1, "rollout_tokens_total": 1, "val_curve": []}

    groups = {"opsd": [run("opsd", s, [0.5, 0.5]) for s in (0, 1, 2)],
              "sft": [run("sft", 0, [1.0, 0.5]), run("sft", 1, [0.5, 0.5]), run("sft", 2, [1.0, 1.0])]}
    meta = {"command": "c", "machine": machine_info(), "date": "d", "seeds": [0, 1, 2], "budget": asdict(QUICK_BUDGET)}
    section = markdown(groups, meta, plots=()).split("### Paired difference against OPSD")[1].split("###")[0]
    assert f"| +25.0 / +0.0 / +50.0 → +25.0 ± {100 * 0.25 / 3 ** 0.5:.1f} |" in section


def test_markdown_shows_the_learned_betas_final_mean_per_level_and_seed():
    from dataclasses import asdict

    from atesd.experiments.bench import QUICK_BUDGET, machine_info
    from atesd.experiments.bench_report import markdown

    def run(method, seed, final):
        test = {"average_at_k": 0.5, "per_difficulty": {}, "per_problem_accuracy": {"a": 0.5}}
        return {"method": method, "seed": seed, "exposure_policy": "learned" if final else "fixed", "chosen_step": 4,
                "test": test, "test_last_step": test, "rollout_tokens_to_chosen": 1, "rollout_tokens_total": 1,
                "val_curve": [], "final_beta_mean": final}

    groups = {"opsd": [run("opsd", 0, None)],
              "atesd-per-difficulty": [run("atesd-per-difficulty", s, {"decision_step": 9, "all": a, "by_difficulty": lv})
                                       for s, a, lv in ((0, 0.8, {"1": 0.9, "5": 0.2}), (1, 0.6, {"1": 0.7, "5": 0.4}))]}
    meta = {"command": "c", "machine": machine_info(), "date": "d", "seeds": [0, 1], "budget": asdict(QUICK_BUDGET)}
    section = markdown(groups, meta, plots=()).split("### The learned Beta's mean at the last decision")[1].split("###")[0]
    assert "| atesd-per-difficulty | 0.70 [0.80, 0.60] | 0.80 [0.90, 0.70] | 0.30 [0.20, 0.40] |" in section
    assert "| opsd |" not in section and "| method | overall | difficulty 1 | difficulty 5 |" in section
