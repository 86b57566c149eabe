"""Tests of atesd.experiments.report on small run directories written by hand in the training loop's formats."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from atesd.experiments.report import (beta_mean_by_level, beta_pdf, final_beta_mean, load_run, loss_kl_panels,
                                     make_report, run_summary, snapshot_indices, summarize_run)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STEPS = 20


def _write_jsonl(path: Path, records: list[dict], tail: str = "") -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)


def _metrics(step: int) -> dict:
    """One metrics.jsonl line: α = 0.9 on steps 0-1, 0.1 on steps 18-19, 0.5 between."""
    ratio = 0.9 if step < 2 else 0.1 if step >= STEPS - 2 else 0.5
    return {
        "step": step,
        "train/loss": 2.0 - 0.05 * step,
        "train/divergence_mean": 0.3,
        "train/divergence_p95": 0.8,
        "train/divergence_p99": 1.2,
        "train/top1_disagreement": 0.2,
        "train/divergence_correct": 0.25 if step % 3 else None,
        "train/divergence_incorrect": 0.35,
        "train/skipped": False,
        "exposure/reveal_ratio": ratio,
        "rollout/accuracy": 0.1 * (step % 5),
        "rollout/completion_length": 40.0,
        "rollout/truncated": 0.25,
        "rollout/loop_rate": 0.05 * (step % 3),
        "timing/step_s": 1.0 + step % 2,
        "exposure/probe_nll": 1.5,
        "exposure/grounding_score": -2.0,
    }


def _learned_exposure() -> list[dict]:
    records: list[dict] = []
    for step in range(0, STEPS, 4):
        a, b = 2.0 + step / 4, 2.0
        records.append({"step": step, "event": "decision", "decision_step": step, "raw_reveal_ratio": 0.03,
                        "reveal_ratio": 0.05, "state": {"progress": step / STEPS},
                        "beta_a": a, "beta_b": b, "beta_mean": a / (a + b)})
    for step in (8, 16):
        for decision_step in (step - 8, step - 4):
            records.append({"step": step, "event": "credit", "decision_step": decision_step,
                            "closed_step": step, "progress_return": 0.1, "grounding_return": -1.0,
                            "reward": 0.0, "advantage": 1.0 if decision_step % 8 else -1.0})
        records.append({"step": step, "event": "update", "update": step // 8, "loss": 0.4,
                        "policy_loss": 0.3, "entropy": -0.1, "entropy_penalty": 0.0,
                        "target_entropy": -0.5, "decision_steps": [step - 8, step - 4]})
    records.append({"step": 19, "event": "dropped", "decision_step": 16, "reason": "test"})
    return records


@pytest.fixture
def learned_run(tmp_path) -> Path:
    """20 steps; the last step was skipped (NaN loss); a resumed run repeated step 5; the last line
    of exposure.jsonl was cut off mid-write."""
    metrics = [_metrics(s) for s in range(STEPS)]
    metrics[-1]["train/loss"] = float("nan")
    stale = {**_metrics(5), "exposure/reveal_ratio": 0.0, "timing/step_s": 100.0}
    _write_jsonl(tmp_path / "metrics.jsonl", [*metrics[:5], stale, *metrics[5:]])
    _write_jsonl(tmp_path / "exposure.jsonl", _learned_exposure(), tail='{"event": "decis')
    return tmp_path


@pytest.fixture
def fixed_run(tmp_path) -> Path:
    """10 steps at α = 1 (OPSD); one decision record without Beta parameters."""
    metrics = [{**_metrics(s), "exposure/reveal_ratio": 1.0} for s in range(10)]
    _write_jsonl(tmp_path / "metrics.jsonl", metrics)
    _write_jsonl(tmp_path / "exposure.jsonl", [{"step": 0, "event": "decision", "decision_step": 0,
                                                "raw_reveal_ratio": 1.0, "reveal_ratio": 1.0}])
    return tmp_path


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert len(data) > 1000 and data.startswith(PNG_MAGIC), path


def test_learned_run_draws_all_four_plots_as_valid_pngs(learned_run):
    paths = make_report(learned_run)
    names = ["reveal_ratio.png", "beta_density.png", "reward.png", "loss_kl.png"]
    assert paths == [learned_run / "plots" / n for n in names]
    for path in paths:
        _assert_png(path)
    assert sorted(p.name for p in (learned_run / "plots").iterdir()) == sorted(names)


def test_fixed_run_draws_no_beta_density_or_reward_and_removes_a_stale_one(fixed_run):
    (fixed_run / "plots").mkdir()
    (fixed_run / "plots" / "beta_density.png").write_bytes(b"stale")
    paths = make_report(fixed_run)
    assert [p.name for p in paths] == ["reveal_ratio.png", "loss_kl.png"]
    for path in paths:
        _assert_png(path)
    assert not (fixed_run / "plots" / "beta_density.png").exists()
    assert not (fixed_run / "plots" / "reward.png").exists()


@pytest.mark.parametrize("exposure_log", ["missing", "empty", "garbage"])
def test_missing_or_empty_exposure_log_draws_the_metric_plots(fixed_run, exposure_log):
    _write_jsonl(fixed_run / "metrics.jsonl",  # two metrics keep the drawing fast
                 [{"step": s, "train/loss": 1.0 / (s + 1), "exposure/reveal_ratio": 1.0} for s in range(5)])
    log = fixed_run / "exposure.jsonl"
    if exposure_log == "missing":
        log.unlink()
    else:
        log.write_text("" if exposure_log == "empty" else "not json\n[1, 2]\n\n")
    assert [p.name for p in make_report(fixed_run)] == ["reveal_ratio.png", "loss_kl.png"]
    summary = run_summary(fixed_run)
    assert summary.decisions == 0 and not summary.learned
    assert "exposure decisions: 0" in summarize_run(fixed_run)


def test_records_missing_every_metric_draw_nothing_and_summarize_as_na(tmp_path):
    _write_jsonl(tmp_path / "metrics.jsonl", [{"step": 0}, {"step": 1, "train/loss": None},
                                              {"step": 2, "train/loss": "NaN"}, {"no_step": 1}])
    (tmp_path / "exposure.jsonl").write_text("")
    assert make_report(tmp_path) == []
    summary = run_summary(tmp_path)
    assert summary.steps == 3 and summary.final_loss is None and summary.reveal_ratio_first is None
    assert "final train/loss: n/a" in summarize_run(tmp_path)


def test_empty_metrics_log_does_not_crash(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("")
    assert make_report(tmp_path) == []
    assert run_summary(tmp_path).steps == 0


def test_run_dir_without_logs_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither metrics.jsonl nor exposure.jsonl"):
        make_report(tmp_path)


def test_summarize_run_reports_last_finite_loss_ratio_windows_decisions_and_step_time(learned_run):
    summary = run_summary(learned_run)
    assert summary.steps == STEPS  # the repeated step 5 counts once, its last line wins
    assert summary.final_step == STEPS - 2  # step 19 was skipped (NaN loss)
    assert summary.final_loss == pytest.approx(2.0 - 0.05 * (STEPS - 2))
    assert summary.window_steps == 2  # 10 % of 20 steps
    assert summary.reveal_ratio_first == pytest.approx(0.9)
    assert summary.reveal_ratio_last == pytest.approx(0.1)
    assert summary.decisions == 5 and summary.learned
    assert summary.mean_step_s == pytest.approx(1.5)
    text = summarize_run(learned_run)
    assert "final train/loss: 1.1000 (step 18)" in text
    assert "first 10% 0.900, last 10% 0.100 (2 steps each)" in text
    assert "exposure decisions: 5, learned" in text
    assert "mean timing/step_s: 1.500 s" in text


def test_reveal_ratio_window_is_at_least_one_step(fixed_run):
    _write_jsonl(fixed_run / "metrics.jsonl", [{"step": 0, "exposure/reveal_ratio": 0.25},
                                               {"step": 1, "exposure/reveal_ratio": 0.75}])
    summary = run_summary(fixed_run)
    assert summary.window_steps == 1
    assert (summary.reveal_ratio_first, summary.reveal_ratio_last) == (0.25, 0.75)


def test_beta_pdf_matches_closed_form_and_integrates_to_one():
    assert beta_pdf(0.5, 2.0, 2.0) == pytest.approx(1.5)  # 6·x(1−x)
    assert beta_pdf(0.3, 1.0, 1.0) == pytest.approx(1.0)
    assert beta_pdf(0.2, 3.0, 5.0) == pytest.approx(105 * 0.2**2 * 0.8**4)
    assert beta_pdf(0.0, 2.0, 2.0) == beta_pdf(1.0, 2.0, 2.0) == 0.0
    n = 20000
    mass = sum(beta_pdf((i + 0.5) / n, 7.5, 2.5) for i in range(n)) / n
    assert math.isclose(mass, 1.0, rel_tol=1e-4)


def test_snapshot_indices_pick_first_quartiles_and_last_without_repeats():
    assert snapshot_indices(0) == []
    assert snapshot_indices(1) == [0]
    assert snapshot_indices(3) == [0, 1, 2]
    assert snapshot_indices(101) == [0, 25, 50, 75, 100]


def test_loss_kl_plots_loop_rate_and_truncation_over_steps(learned_run):
    panels = {panel.ylabel: dict(panel.lines) for panel in loss_kl_panels(load_run(learned_run))}
    rollouts = panels["share of rollouts"]
    steps, loop_rates = rollouts["rollout/loop_rate"]
    assert steps == list(range(STEPS)) and loop_rates == [0.05 * (s % 3) for s in range(STEPS)]
    assert rollouts["rollout/truncated"] == (list(range(STEPS)), [0.25] * STEPS)


def test_a_run_logging_only_loop_rate_and_truncation_still_gets_loss_kl(tmp_path):
    _write_jsonl(tmp_path / "metrics.jsonl",
                 [{"step": s, "rollout/loop_rate": 0.5, "rollout/truncated": 1.0} for s in range(3)])
    assert [p.name for p in make_report(tmp_path)] == ["loss_kl.png"]


def test_rolling_mean_averages_the_last_window_values():
    from atesd.experiments.report import rolling_mean

    assert rolling_mean([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
    assert rolling_mean([], 5) == []


def test_per_level_beta_means_are_read_per_difficulty_and_global_decisions_have_none(tmp_path):
    decisions = [{"event": "decision", "decision_step": step, "beta_mean": 0.5,
                  "beta_mean_by_difficulty": {"2": 0.5 + step / 10, "1": 0.5 - step / 10}} for step in range(3)]
    assert beta_mean_by_level(decisions) == {"1": ([0, 1, 2], [0.5, 0.4, 0.3]), "2": ([0, 1, 2], [0.5, 0.6, 0.7])}
    assert beta_mean_by_level([{"event": "decision", "decision_step": 0, "beta_mean": 0.5}]) == {}
    (tmp_path / "exposure.jsonl").write_text("".join(json.dumps({"step": d["decision_step"], **d}) + "\n"
                                                     for d in decisions))
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "exposure/reveal_ratio": 0.5}) + "\n"
                                                    for s in range(3)))
    assert (tmp_path / "plots" / "reveal_ratio.png") in make_report(tmp_path)


def test_final_beta_mean_takes_each_levels_last_logged_value(tmp_path):
    records = [{"event": "decision", "decision_step": 0, "beta_mean": 0.7, "beta_mean_by_difficulty": {"1": 0.8, "5": 0.6}},
               {"event": "credit", "decision_step": 0, "difficulty": 5},
               {"event": "decision", "decision_step": 1, "beta_mean": 0.75, "beta_mean_by_difficulty": {"1": 0.9}}]
    (tmp_path / "exposure.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert final_beta_mean(tmp_path) == {"decision_step": 1, "all": 0.75, "by_difficulty": {"1": 0.9, "5": 0.6}}
    records.append({"event": "decision", "decision_step": 2, "beta_mean": 0.6, "beta_mean_by_difficulty": {"1": 0.8},
                    "beta_mean_by_bin": {"0": 0.4, "1": 0.85}})  # per feature: each bin's Beta too
    (tmp_path / "exposure.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert final_beta_mean(tmp_path)["by_bin"] == {"0": 0.4, "1": 0.85}
    (tmp_path / "exposure.jsonl").write_text(json.dumps({"event": "decision", "decision_step": 0, "reveal_ratio": 1.0}))
    assert final_beta_mean(tmp_path) is None  # a fixed exposure logs no Beta


def test_a_run_that_stopped_before_its_planned_steps_says_so_and_how_to_continue(learned_run):
    assert not run_summary(learned_run).stopped_early  # no config.yaml: nothing planned to compare with
    (learned_run / "config.yaml").write_text(f"steps: {STEPS + 10}\n")
    text = summarize_run(learned_run)
    assert f"stopped early: {STEPS} of {STEPS + 10} steps logged and no final/ model" in text
    assert f"atesd train --config {learned_run / 'config.yaml'} --resume" in text
    assert f"steps: {STEPS} of {STEPS + 10}" in text
    (learned_run / "final").mkdir()
    assert "stopped early" not in summarize_run(learned_run)


def test_step_axes_have_whole_number_ticks_on_a_short_run():
    from atesd.experiments.report import _figure, _style

    fig, [ax] = _figure(1)
    ax.plot([0, 1, 2], [0.5, 0.4, 0.3], label="loss")
    _style(ax, "step", "train/loss")
    fig.canvas.draw()
    ticks = [t for t in ax.get_xticks() if 0 <= t <= 2]
    assert ticks and all(float(t).is_integer() for t in ticks)
