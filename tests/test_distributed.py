"""The scale path on 2 CPU processes: FSDP2 and DeepSpeed ZeRO-2/3, launched with the shipped
`configs/accelerate/*.yaml`, end where DDP ends; gradient accumulation goes through accelerate (one
optimizer step per step, also under DeepSpeed); a non-finite loss on one process skips the step
everywhere; DeepSpeed takes clipping and accumulation from the training config.

accelerate 1.15 enables FSDP and DeepSpeed only on accelerator devices, while torch's FSDP2 and
DeepSpeed run on CPU over gloo: `tests/scripts/dist_train.py` (the worker) sets the distributed
type the launcher gives on GPUs and says exactly what it sets. Each run takes 15-30 s on 2 cores.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from atesd.data import write_problems

REPO = Path(__file__).resolve().parents[1]
LORA = ["model.lora.enabled=true", "model.lora.rank=4", "model.lora.alpha=8"]
# A large Adam ε makes an update proportional to the gradient (not its sign), so comparisons see
# gradient differences instead of amplified float noise near zero (as in tests/test_train.py).
PLAIN_STEP = ["optim.eps=1.0", "optim.max_grad_norm=1e9"]
needs_deepspeed = pytest.mark.skipif(
    __import__("importlib").util.find_spec("deepspeed") is None, reason="needs the deepspeed extra")


@pytest.fixture(scope="module")
def config(tmp_path_factory, tiny_model_dir):
    """A tiny toy run: the chunked forward KL, and the learned controller with its default reward
    (discounted), which measures the probe NLL and the grounding score every step."""
    from atesd.toy.task import toy_problems

    root = tmp_path_factory.mktemp("dist-world")
    write_problems(root / "train.jsonl", toy_problems(40, seed=3, split="train"))
    path = root / "config.yaml"
    path.write_text(
        f"model:\n  name_or_path: {tiny_model_dir}\ndata:\n  train: {root / 'train.jsonl'}\n"
        "rollout:\n  max_new_tokens: 12\n  temperature: 1.0\n  top_p: 1.0\n  top_k: 0\n"
        "optim:\n  lr: 0.01\n  max_grad_norm: 1.0\nsteps: 3\nprompts_per_step: 8\nsave_every: 100\n"
        "progress: false\nexposure:\n  policy: learned\n  hold_steps: 1\n  lookahead_steps: 1\n"
        "  decisions_per_update: 2\n  probe_size: 4\n")
    return path


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(config, out: Path, launcher: str = "ddp", overrides=(), nan: str | None = None) -> dict:
    """Two processes: torchrun for DDP, else `accelerate launch --config_file configs/accelerate/
    <launcher>.yaml`. Returns rank 0's record with the final weights and the metrics."""
    out.mkdir(parents=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    if nan:
        env["ATESD_TEST_NAN"] = nan
    worker = [str(REPO / "tests" / "scripts" / "dist_train.py"), str(config), str(out),
              f"output_dir={out / 'run'}", *overrides]
    port = str(_free_port())
    if launcher == "ddp":
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port]
    else:
        command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                   str(REPO / "configs" / "accelerate" / f"{launcher}.yaml"), "--num_processes", "2",
                   "--mixed_precision", "no", "--main_process_port", port]
    proc = subprocess.run(command + worker, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, "\n".join(l for l in proc.stderr.splitlines() if "Warning" not in l)[-6000:]
    return read_run(out)


def read_run(out: Path) -> dict:
    """What a launched run left in `out`: rank 0's record, the final weights and the metrics."""
    record = json.loads((out / "rank0.json").read_text())
    record["final"] = {}
    for file in sorted((out / "run" / "final").glob("*.safetensors")):
        record["final"].update(load_file(file))
    record["metrics"] = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    return record


def launch_two_machines(config, out: Path) -> dict:
    """configs/accelerate/multinode.yaml as 2 machines of 1 process on this host: two `accelerate
    launch` commands differing only in --machine_rank, as on two nodes."""
    out.mkdir(parents=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    port = str(_free_port())
    procs = [subprocess.Popen(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
         str(REPO / "configs" / "accelerate" / "multinode.yaml"), "--num_machines", "2", "--num_processes", "2",
         "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1", "--main_process_port", port,
         "--mixed_precision", "no", str(REPO / "tests" / "scripts" / "dist_train.py"), str(config), str(out),
         f"output_dir={out / 'run'}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        for rank in (0, 1)]
    for proc in procs:
        _, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, "\n".join(l for l in err.splitlines() if "Warning" not in l)[-6000:]
    return read_run(out)


def assert_same_weights(a: dict, b: dict, atol: float) -> None:
    assert sorted(a["final"]) == sorted(b["final"])
    for name, value in b["final"].items():
        torch.testing.assert_close(a["final"][name], value, atol=atol, rtol=0, msg=name)


def assert_same_metrics(a: dict, b: dict, keys=("train/loss", "train/grad_norm", "exposure/probe_nll",
                                                 "exposure/grounding_score")) -> None:
    for mine, theirs in zip(a["metrics"], b["metrics"], strict=True):
        for key in keys:
            if key in theirs and theirs[key] == theirs[key]:  # NaN on skipped steps
                assert mine[key] == pytest.approx(theirs[key], rel=1e-4, abs=1e-7), (mine["step"], key)


@pytest.fixture(scope="module")
def ddp(config, tmp_path_factory):
    return launch(config, tmp_path_factory.mktemp("ddp") / "out")


@pytest.fixture(scope="module")
def ddp_lora(config, tmp_path_factory):
    return launch(config, tmp_path_factory.mktemp("ddp-lora") / "out", overrides=LORA)


@pytest.mark.slow
def test_fsdp2_with_chunked_loss_probe_and_grounding_ends_with_the_ddp_weights(config, ddp, tmp_path):
    fsdp = launch(config, tmp_path / "fsdp2", "fsdp2")
    assert fsdp["kind"] == "fsdp2" and fsdp["sharded"] and fsdp["head_type"] == "DTensor"
    assert fsdp["ratios"] == ddp["ratios"]
    assert_same_metrics(fsdp, ddp)
    assert "exposure/probe_nll" in fsdp["metrics"][0] and "exposure/grounding_score" in fsdp["metrics"][0]
    assert_same_weights(fsdp, ddp, atol=1e-6)


@pytest.mark.slow
def test_fsdp2_lora_ends_with_the_ddp_weights(config, ddp_lora, tmp_path):
    # peft's generate runs the inner model, not FSDP's root (atesd.distributed.unsharded_for_generation); the
    # merged weights of final/ are gathered module by module (atesd.weights)
    fsdp = launch(config, tmp_path / "fsdp2-lora", "fsdp2", LORA)
    assert fsdp["sharded"]
    assert fsdp["ratios"] == ddp_lora["ratios"]
    assert_same_metrics(fsdp, ddp_lora)
    assert_same_weights(fsdp, ddp_lora, atol=1e-6)


@pytest.mark.slow
def test_fsdp2_gradient_accumulation_4_equals_1(config, tmp_path):
    one = launch(config, tmp_path / "one", "fsdp2", PLAIN_STEP + ["steps=1"])
    four = launch(config, tmp_path / "four", "fsdp2", PLAIN_STEP + ["steps=1", "optim.grad_accum_steps=4"])
    assert four["sharded"]
    assert_same_metrics(four, one, keys=("train/loss", "train/grad_norm"))
    assert_same_weights(four, one, atol=1e-6)


@pytest.mark.slow
@needs_deepspeed
def test_zero3_lora_with_chunked_loss_probe_and_grounding_ends_with_the_ddp_weights(config, ddp_lora, tmp_path):
    # LoRA: the frozen teacher is the model with its adapter off (a teacher copy cannot be made of a
    # model zero3_init_flag loaded partitioned; atesd.teacher refuses it)
    zero3 = launch(config, tmp_path / "zero3", "zero3", LORA)
    assert zero3["kind"] == "zero3" and zero3["sharded"]
    assert zero3["zero3_offload_found"]  # HF rollouts gathered the model once per call (tests/rollout/test_hf_sharded.py)
    assert zero3["ratios"] == ddp_lora["ratios"]
    assert_same_metrics(zero3, ddp_lora)  # the probe on θ_t, before DeepSpeed's step in the backward
    assert_same_weights(zero3, ddp_lora, atol=1e-6)


@pytest.mark.slow
@needs_deepspeed
def test_zero2_steps_once_per_step_with_accumulation(config, tmp_path):
    # With 4 micro-batches DeepSpeed used to step the engine in every backward: 4 updates per step.
    one = launch(config, tmp_path / "ddp", "ddp", PLAIN_STEP + ["steps=2"])
    four = launch(config, tmp_path / "zero2", "zero2", PLAIN_STEP + ["steps=2", "optim.grad_accum_steps=4"])
    assert four["kind"] == "zero2"
    assert_same_metrics(four, one, keys=("train/loss", "train/grad_norm"))
    assert_same_weights(four, one, atol=1e-6)


@pytest.mark.slow
@needs_deepspeed
def test_a_non_finite_loss_on_one_process_skips_the_step_everywhere(config, tmp_path):
    # process 1's first micro-batch of step 1 has loss + inf with finite gradients: DeepSpeed's own
    # overflow check cannot see it, the loop must (and it must not be the last micro-batch)
    poisoned = [*LORA, "optim.grad_accum_steps=2"]
    zero3 = launch(config, tmp_path / "zero3", "zero3", poisoned, nan="1:2")
    ddp = launch(config, tmp_path / "ddp", "ddp", poisoned, nan="1:2")
    for run in (zero3, ddp):
        assert [m["train/skipped"] for m in run["metrics"]] == [False, True, False]
    assert_same_weights(zero3, ddp, atol=1e-6)


@pytest.mark.slow
def test_the_multinode_config_launched_as_two_machines_ends_with_the_ddp_weights(config, ddp, tmp_path):
    nodes = launch_two_machines(config, tmp_path / "nodes")
    assert nodes["num_processes"] == 2 and nodes["ratios"] == ddp["ratios"]
    assert_same_metrics(nodes, ddp)
    assert_same_weights(nodes, ddp, atol=1e-6)


def test_accelerate_configs_load_and_leave_clipping_and_accumulation_to_the_training_config():
    from accelerate.commands.config.config_args import load_config_from_file

    files = sorted((REPO / "configs" / "accelerate").glob("*.yaml"))
    assert {f.stem for f in files} >= {"ddp", "fsdp2", "zero2", "zero3", "multinode", "single_gpu"}
    for file in files:
        loaded = load_config_from_file(str(file))
        for key in ("gradient_clipping", "gradient_accumulation_steps"):
            assert key not in (loaded.deepspeed_config or {}), (file.name, key)
    nodes = load_config_from_file(str(REPO / "configs" / "accelerate" / "multinode.yaml"))
    assert nodes.num_machines > 1 and nodes.num_processes % nodes.num_machines == 0


def test_deepspeed_config_takes_clipping_and_accumulation_from_the_training_config():
    pytest.importorskip("deepspeed")
    from accelerate.utils import DeepSpeedPlugin

    from atesd.distributed import configure_deepspeed

    plugin = DeepSpeedPlugin(hf_ds_config={"zero_optimization": {"stage": 3}, "gradient_accumulation_steps": "auto",
                                           "train_micro_batch_size_per_gpu": "auto"})
    configure_deepspeed(plugin, max_grad_norm=0.1, grad_accum_steps=4, micro_batch=2)
    config = plugin.deepspeed_config
    assert (config["gradient_clipping"], config["gradient_accumulation_steps"],
            config["train_micro_batch_size_per_gpu"]) == (0.1, 4, 2)
    fixed = DeepSpeedPlugin(hf_ds_config={"zero_optimization": {"stage": 2}, "gradient_clipping": 1.0,
                                          "gradient_accumulation_steps": 1})
    with pytest.raises(ValueError, match="gradient_clipping=1.0 vs arg gradient_clipping=0.1"):
        configure_deepspeed(fixed, max_grad_norm=0.1, grad_accum_steps=4, micro_batch=2)


def test_a_launcher_accumulation_setting_that_overrides_the_config_is_refused(monkeypatch, tmp_path):
    from atesd.config import load_config
    from atesd.distributed import make_accelerator

    monkeypatch.setenv("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "1")
    cfg = load_config(None, ["model.name_or_path=x", "data.train=x", "optim.grad_accum_steps=4"])
    with pytest.raises(ValueError, match="optim.grad_accum_steps=4"):
        make_accelerator(cfg, str(tmp_path))


def recipe_exposure(name: str, **changes) -> list[str]:
    """The exposure section of configs/<name> as overrides, with `changes` (a tiny run's sizes)."""
    from omegaconf import OmegaConf

    section = {**OmegaConf.to_container(OmegaConf.load(REPO / "configs" / name))["exposure"], **changes}
    return [f"exposure.{key}={json.dumps(value) if isinstance(value, list) else value}" for key, value in section.items()]


def test_label_free_recipe_controller_trains_a_bf16_lora_model_on_two_processes(config, tmp_path):
    """configs/qwen3-1.7b-atesd-per-feature.yaml's controller (one Beta per bin of `correct`, forward-mode
    paired credit) on a bfloat16 LoRA model under DDP: every step credits rollouts of both processes with
    finite, nonzero values, the table updates once per step, and both processes train with the same ratios."""
    out = tmp_path / "bf16-lora"
    exposure = recipe_exposure("qwen3-1.7b-atesd-per-feature.yaml", probe_size=4, credit_examples=4,
                               credit_refresh_steps=1)
    assert "exposure.granularity=per_feature" in exposure and "exposure.credit_derivative=forward_mode" in exposure
    run = launch(config, out, "ddp", [*LORA, "model.dtype=bfloat16", *exposure])
    assert run["num_processes"] == 2
    assert json.loads((out / "rank1.json").read_text())["ratios"] == run["ratios"]
    records = [json.loads(line) for line in (out / "run" / "exposure.jsonl").read_text().splitlines()]
    credits = [r for r in records if r["event"] == "credit"]
    assert [r["step"] for r in records if r["event"] == "update"] == [0, 1, 2]
    assert len(credits) == 12 and {r["example"] // 4 for r in credits} == {0, 1}  # 4 prompts per process
    values = [v for r in credits for v in (r["chosen_credit"], r["counterfactual_credit"])]
    assert all(math.isfinite(v) for v in values) and any(v != 0.0 for v in values)
    decisions = [r for r in records if r["event"] == "decision"]
    assert all(r["feature"] == "correct" and len(r["reveal_ratios"]) == 8 for r in decisions)
    assert any("lora_" in name for name in run["weights"])  # trained as LoRA
    assert run["final"] and all(v.dtype == torch.bfloat16 for v in run["final"].values())  # saved as bf16
