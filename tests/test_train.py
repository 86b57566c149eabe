"""The training loop end to end on a tiny random model: run directory, exact resume after SIGKILL,
gradient-accumulation invariance, two processes under accelerate, non-finite steps."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from atesd.config import load_config
from atesd.data import write_problems
from atesd.train import train

REPO = Path(__file__).resolve().parents[1]
TIMING_KEYS = ("timing/", "train/tokens_per_s")


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model_dir):
    from atesd.toy.task import toy_problems

    root = tmp_path_factory.mktemp("train-world")
    write_problems(root / "train.jsonl", toy_problems(40, seed=3, split="train"))
    return root, tiny_model_dir


def _config(world, out, steps=3, extra=""):
    root, model = world
    path = Path(out).with_suffix(".yaml")
    path.write_text(
        f"model:\n  name_or_path: {model}\ndata:\n  train: {root / 'train.jsonl'}\n"
        "rollout:\n  max_new_tokens: 12\n  temperature: 1.0\n  top_p: 1.0\n  top_k: 0\n"
        f"optim:\n  lr: 0.01\n  max_grad_norm: 1.0\nsteps: {steps}\nprompts_per_step: 4\n"
        f"save_every: 1\nprogress: false\noutput_dir: {out}\n{extra}"
    )
    return path


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _metrics_with_timing(run):
    return [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]


def _metrics(run):
    lines = (Path(run) / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(l).items() if not k.startswith(TIMING_KEYS)} for l in lines]


def test_opsd_run_writes_config_metrics_checkpoints_and_final_model(world, tmp_path):
    out = tmp_path / "run"
    result = train(load_config(_config(world, out)))
    assert (out / "config.yaml").exists() and (out / "final" / "model.safetensors").exists()
    metrics = _metrics(out)
    assert [m["step"] for m in metrics] == [0, 1, 2]
    for key in ("train/loss", "train/divergence_mean", "train/divergence_p95", "train/divergence_p99",
                "train/top1_disagreement", "train/clip_fraction", "train/student_entropy",
                "train/teacher_entropy", "rollout/completion_length", "exposure/reveal_ratio",
                "train/divergence_correct", "train/divergence_incorrect", "rollout/accuracy", "rollout/truncated",
                "rollout/loop_rate"):
        assert key in metrics[0], key
    assert all(m["exposure/reveal_ratio"] == 1.0 for m in metrics)
    assert result.reveal_ratios == [1.0, 1.0, 1.0]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000002", "step-000003"]


LEARNED = ("exposure:\n  policy: learned\n  hold_steps: 3\n  lookahead_steps: 2\n"
           "  decisions_per_update: 2\n  probe_size: 4\n")


COUNTERFACTUAL = ("exposure:\n  policy: learned\n  reward: counterfactual\n  hold_steps: 2\n"
                  "  decisions_per_update: 2\n  probe_size: 4\n  credit_examples: 2\n  credit_refresh_steps: 3\n")
PER_EXAMPLE = COUNTERFACTUAL + "  granularity: per_example\n"
PER_DIFFICULTY = COUNTERFACTUAL + "  granularity: per_difficulty\n"


@pytest.mark.parametrize("exposure", ["", LEARNED, COUNTERFACTUAL], ids=["fixed", "learned", "counterfactual"])
def test_killed_run_resumes_to_bitwise_identical_weights_and_metrics(world, tmp_path, exposure):
    # learned: hold 3 steps, so the kill after step 2 lands inside a hold window and a lookahead
    full = tmp_path / "full"
    cmd = [sys.executable, "-m", "atesd.cli", "train", "--config"]
    subprocess.run(cmd + [str(_config(world, full, steps=7, extra=exposure))], check=True, capture_output=True)

    killed = tmp_path / "killed"
    config = _config(world, killed, steps=7, extra=exposure)
    proc = subprocess.Popen(cmd + [str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        done = (killed / "checkpoints").exists() and any((killed / "checkpoints").glob("step-000002"))
        if done or proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "final").exists(), "the run finished before it could be killed"
    subprocess.run(cmd + [str(config), "--resume"], check=True, capture_output=True)

    a, b = load_file(full / "final" / "model.safetensors"), load_file(killed / "final" / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert _metrics(full) == _metrics(killed)
    assert (full / "exposure.jsonl").read_text() == (killed / "exposure.jsonl").read_text()


def test_learned_exposure_logs_decisions_rewards_and_controller_updates(world, tmp_path):
    out = tmp_path / "atesd"
    result = train(load_config(_config(world, out, steps=8, extra=LEARNED)))
    records = [json.loads(line) for line in (out / "exposure.jsonl").read_text().splitlines()]
    events = [r["event"] for r in records]
    assert events.count("decision") == 3 and "credit" in events and "update" in events
    decisions = [r for r in records if r["event"] == "decision"]
    assert all(0.05 <= r["reveal_ratio"] <= 1.0 and r["beta_a"] > 1 and r["beta_b"] > 1 for r in decisions)
    # the hold window: one ratio per 3 steps
    assert result.reveal_ratios[:3] == [decisions[0]["reveal_ratio"]] * 3
    assert result.reveal_ratios[3:6] == [decisions[1]["reveal_ratio"]] * 3
    metrics = _metrics(out)
    # g_t and the probe NLL on their held-out problems, every step
    assert all("exposure/grounding_score" in m and "exposure/probe_nll" in m for m in metrics)


@pytest.mark.parametrize("exposure", [COUNTERFACTUAL, PER_EXAMPLE, PER_DIFFICULTY],
                         ids=["global", "per_example", "per_difficulty"])
def test_counterfactual_credit_is_measured_and_learned_from(world, tmp_path, exposure):
    out = tmp_path / "cf"
    result = train(load_config(_config(world, out, steps=6, extra=exposure)))
    records = [json.loads(line) for line in (out / "exposure.jsonl").read_text().splitlines()]
    credits = [r for r in records if r["event"] == "credit"]
    assert credits and all(math.isfinite(r["reward"]) for r in credits)
    assert any(r["event"] == "update" for r in records)
    metrics = _metrics_with_timing(out)
    credited = [m["step"] for m in metrics if "timing/credit_s" in m]
    if "granularity" in exposure:
        assert credited == list(range(6))  # every step
        decisions = [r for r in records if r["event"] == "decision"]
        assert all(len(d["reveal_ratios"]) == 4 for d in decisions)
        assert result.reveal_ratios == [pytest.approx(d["reveal_ratio"]) for d in decisions]
        if "per_difficulty" in exposure:  # one Beta per level: examples of a level share its mean
            assert all(d["beta_mean_by_difficulty"] and set(d["beta_mean_by_difficulty"]) == set(
                d["reveal_ratio_by_difficulty"]) for d in decisions)
    else:
        assert credited == [0, 2, 4]  # the first step of each hold window


BY_FEATURE = "exposure:\n  policy: by_feature\n  feature_ratios: [0.5, 1.0]\n"


@pytest.mark.parametrize("feature, extra", [
    ("divergence", "  feature: divergence\n  feature_binning: batch_quantile\n  feature_thresholds: [0.5]\n"),
    ("pass_rate", "  feature: pass_rate\n  feature_thresholds: [0.5]\n"),
    ("confidence", "  feature: confidence\n  feature_binning: batch_quantile\n  feature_thresholds: [0.5]\n"),
    ("correct", "  feature: correct\n  feature_thresholds: [0.5]\n"),
], ids=["divergence", "pass_rate", "confidence", "correct"])
def test_by_feature_exposure_bins_every_rollout_from_its_measured_feature(world, tmp_path, feature, extra):
    out = tmp_path / "by-feature"
    groups = ["rollout.num_generations=2"] if feature == "pass_rate" else []
    result = train(load_config(_config(world, out, steps=2, extra=BY_FEATURE + extra), groups))
    records = [json.loads(line) for line in (out / "exposure.jsonl").read_text().splitlines()]
    assignments = [r for r in records if r["event"] == "assignment"]
    assert [r["step"] for r in assignments] == [0, 1]
    for record, mean_ratio in zip(assignments, result.reveal_ratios):
        assert record["feature"] == feature and record["unknown_share"] == 0.0  # measured for every rollout
        assert sum(record["bin_shares"]) == 1.0
        assert mean_ratio == pytest.approx(0.5 * record["bin_shares"][0] + 1.0 * record["bin_shares"][1])
        if feature == "divergence":  # half the batch (4 distinct divergences > 0) in each bin
            assert record["bin_shares"] == [0.5, 0.5] and record["feature_mean"] > 0
        if feature == "pass_rate":  # 4 problems × a group of 2 rollouts: rates 0, ½ or 1 per group
            assert (8 * record["feature_mean"]) == pytest.approx(round(8 * record["feature_mean"]))


def test_gradient_accumulation_gives_the_same_update_as_one_batch(world, tmp_path):
    # A large Adam ε makes the first update proportional to the gradient (not its sign), so the
    # comparison sees gradient differences instead of amplifying float noise near zero.
    same = ["optim.eps=1.0", "optim.max_grad_norm=1e9"]
    one = train(load_config(_config(world, tmp_path / "one", steps=1), same + ["optim.grad_accum_steps=1"]))
    two = train(load_config(_config(world, tmp_path / "two", steps=1), same + ["optim.grad_accum_steps=2"]))
    for (name, p), q in zip(one.model.named_parameters(), two.model.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5, msg=name)


def test_non_finite_losses_are_skipped_then_the_run_stops(world, tmp_path, monkeypatch):
    from atesd import objectives

    real = objectives.Distill.loss

    def poisoned(self, *args, **kwargs):
        loss, stats = real(self, *args, **kwargs)
        return loss * float("nan"), stats

    monkeypatch.setattr(objectives.Distill, "loss", poisoned)
    out = tmp_path / "nan"
    with pytest.raises(FloatingPointError, match="2 steps in a row"):
        train(load_config(_config(world, out, steps=5), ["max_bad_steps=2"]))
    metrics = _metrics(out)
    assert [m["train/skipped"] for m in metrics] == [True, True]


@pytest.mark.slow
def test_two_processes_share_reveal_ratios_and_end_with_identical_weights(world, tmp_path):
    out = tmp_path / "dist"
    config = _config(world, out, steps=3, extra="exposure:\n  policy: random\n  hold_steps: 1\n")
    # ACCELERATE_USE_CPU: without it the Accelerator ignores torchrun's environment on a machine
    # without GPUs and each process would train alone.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    proc = subprocess.run(
        # torchrun: on CPU, `accelerate launch` starts several processes only through MPI; the
        # Accelerator reads torchrun's environment and sets up gloo the same way.
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
         str(REPO / "tests" / "scripts" / "dist_train.py"), str(config), str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, "\n".join(l for l in proc.stderr.splitlines() if "Warning" not in l)[-6000:]
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0["num_processes"] == r1["num_processes"] == 2
    assert r0["ratios"] == r1["ratios"] and len(set(r0["ratios"])) > 1
    assert r0["weights"] == r1["weights"]
    # the ranks trained on different prompts, so equal weights mean the gradients were averaged;
    # and the two-process run is the same optimisation as one process with the whole batch
    single = train(load_config(_config(world, tmp_path / "single", steps=3, extra="exposure:\n  policy: random\n  hold_steps: 1\n")))
    assert r0["ratios"] == single.reveal_ratios


def test_resume_inside_a_credit_refresh_block_reuses_the_saved_probe_direction(world, tmp_path, monkeypatch):
    """The probe direction is recomputed every credit_refresh_steps steps and reused in between; a run
    resumed inside such a block must reuse the saved one (found by benchmarks/kill_resume.py)."""
    from atesd import run as run_module

    extra = COUNTERFACTUAL.replace("hold_steps: 2", "hold_steps: 1").replace("credit_refresh_steps: 3",
                                                                             "credit_refresh_steps: 4")
    full = tmp_path / "full"
    train(load_config(_config(world, full, steps=6, extra=extra)))

    class Stop(Exception):
        pass

    real_after_step = run_module.TrainingRun.after_step

    def stop_after_step_2(self, step, finite):
        real_after_step(self, step, finite)
        if step == 2:  # checkpoint step-000003 is written: resume at step 3, inside block 0-3
            raise Stop

    interrupted = tmp_path / "interrupted"
    config = _config(world, interrupted, steps=6, extra=extra)
    monkeypatch.setattr(run_module.TrainingRun, "after_step", stop_after_step_2)
    with pytest.raises(Stop):
        train(load_config(config))
    monkeypatch.setattr(run_module.TrainingRun, "after_step", real_after_step)
    train(load_config(config), resume=True)
    assert (full / "exposure.jsonl").read_text() == (interrupted / "exposure.jsonl").read_text()
