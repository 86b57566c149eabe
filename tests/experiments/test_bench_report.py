"""The bench report's markdown on hand-made results (no training): which comparisons it shows, each
seed's difference beside their mean, and the learned Beta's final means."""

from __future__ import annotations

from dataclasses import asdict

from atesd.experiments.bench import QUICK_BUDGET, machine_info
from atesd.experiments.bench_report import markdown


def _run(method: str, seed: int, accuracies: list[float], policy: str = "fixed", final_beta_mean=None) -> dict:
    test = {"average_at_k": sum(accuracies) / len(accuracies), "per_difficulty": {},
            "per_problem_accuracy": dict(enumerate(accuracies))}
    return {"method": method, "seed": seed, "exposure_policy": policy, "chosen_step": 4, "test": test,
            "test_last_step": test, "rollout_tokens_to_chosen": 1, "rollout_tokens_total": 1, "val_curve": [],
            "final_beta_mean": final_beta_mean}


def _section(groups: dict[str, list[dict]], title: str) -> str:
    """The markdown section under `title` of the report on `groups`."""
    seeds = sorted({r["seed"] for runs in groups.values() for r in runs})
    meta = {"command": "c", "machine": machine_info(), "date": "d", "seeds": seeds, "budget": asdict(QUICK_BUDGET)}
    return markdown(groups, meta, plots=()).split(title)[1].split("###")[0]


def test_markdown_compares_only_the_learned_controllers_with_random_exposure():
    groups = {"opsd": [_run("opsd", 0, [1.0, 0.0])], "random": [_run("random", 0, [0.5, 0.0], "random")],
              "atesd": [_run("atesd", 0, [1.0, 0.5], "learned")]}
    section = _section(groups, "### Paired difference against uniformly random exposure")
    assert "| atesd | +50.0 |" in section
    assert "| opsd |" not in section and "| random |" not in section


def test_markdown_shows_each_seed_difference_and_their_mean_with_the_se_over_seeds():
    groups = {"opsd": [_run("opsd", s, [0.5, 0.5]) for s in (0, 1, 2)],
              "sft": [_run("sft", 0, [1.0, 0.5]), _run("sft", 1, [0.5, 0.5]), _run("sft", 2, [1.0, 1.0])]}
    section = _section(groups, "### Paired difference against OPSD")
    assert f"| +25.0 / +0.0 / +50.0 → +25.0 ± {100 * 0.25 / 3 ** 0.5:.1f} |" in section


def test_markdown_shows_the_learned_betas_final_mean_per_level_and_seed():
    finals = ((0, 0.8, {"1": 0.9, "5": 0.2}), (1, 0.6, {"1": 0.7, "5": 0.4}))
    groups = {"opsd": [_run("opsd", 0, [0.5])],
              "atesd-per-difficulty": [_run("atesd-per-difficulty", s, [0.5], "learned",
                                            {"decision_step": 9, "all": a, "by_difficulty": lv}) for s, a, lv in finals]}
    section = _section(groups, "### The learned Beta's mean at the last decision")
    assert "| atesd-per-difficulty | 0.70 [0.80, 0.60] | 0.80 [0.90, 0.70] | 0.30 [0.20, 0.40] |" in section
    assert "| opsd |" not in section and "| method | overall | difficulty 1 | difficulty 5 |" in section


def test_every_paired_difference_shows_the_seed_as_the_unit_beside_the_pooled_pairs_se():
    # chosen checkpoints ("test"): per seed Δ +50, +0, +25 → +25 ± 14.4 with the seed as the unit
    groups = {"opsd": [_run("opsd", s, [0.5, 0.5]) for s in (0, 1, 2)],
              "sft": [_run("sft", 0, [1.0, 1.0]), _run("sft", 1, [0.5, 0.5]), _run("sft", 2, [1.0, 0.5])]}
    section = _section(groups, "### Paired difference against OPSD")
    assert "| method | Δ vs OPSD | pooled-pairs SE | seed as unit: Δ ± SE |" in section
    row = [line for line in section.splitlines() if line.startswith("| sft |")][0]
    assert row.startswith("| sft | +25.0 | ") and f"| +25.0 ± {100 * 0.25 / 3 ** 0.5:.1f} | 6 |" in row


def test_per_difficulty_differences_show_each_levels_seed_unit_mean_and_se():
    # problem 0 is level 1, problem 1 level 2; on level 1 sft gains +50 on seed 0 and +0 on seed 1
    groups = {"opsd": [_run("opsd", s, [0.5, 0.5]) for s in (0, 1)],
              "sft": [_run("sft", 0, [1.0, 0.0]), _run("sft", 1, [0.5, 0.0])]}
    meta = {"command": "c", "machine": machine_info(), "date": "d", "seeds": [0, 1], "budget": asdict(QUICK_BUDGET),
            "test_difficulty": {0: 1, 1: 2}}
    section = markdown(groups, meta, plots=()).split("### Paired difference against OPSD by difficulty")[1]
    row = [line for line in section.splitlines() if line.startswith("| sft |")][0]
    assert row == "| sft | +25.0 ± 25.0 [+25.0 ± 25.0] | -50.0 ± 0.0 [-50.0 ± 0.0] |"
