"""The scale path on one GPU, part of benchmarks/gpu_check.py (sections d–f of its report).

(d) Sharded training. `accelerate launch --config_file configs/accelerate/<fsdp2|zero3>.yaml
    --num_processes 1 tests/scripts/dist_train.py` (the worker of the multi-process tests) runs
    3 ATESD steps of the check's model with LoRA (r 16: ZeRO-3 loads the model partitioned, so the
    frozen teacher is the model with its adapter off, as in the recipes) and 2 gradient-accumulation
    micro-batches: accelerate's accumulation, the chunked loss, the probe and the grounding score
    reading the head through `atesd.distributed.through_head`, the gathered save of final/.
    Fails when the run raises, its policy was not sharded, or a step was not finite; reports losses,
    step time and the loss-phase device memory. With --cpu the worker sets the distributed type
    itself (accelerate enables FSDP and DeepSpeed only on GPUs; see the worker's docstring).
(e) vLLM sleep mode. The vLLM training run again with rollout.vllm_sleep_mode=true: the device
    memory in use at the loss phase (metrics memory/device_used_gib) with and without sleep.
(f) vLLM evaluation. `atesd.evaluate.run_eval` of the HF run's final/ with backend hf, then vllm,
    greedy, one sample per problem: time of each, the fraction of identical completions (bf16
    kernels differ between the backends, so a difference is reported, not failed) and Average@1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def sharded_run(launcher: str, overrides: list[str], work: Path, cpu: bool) -> dict:
    """(d) for one accelerate config ("fsdp2" or "zero3")."""
    out = work / f"sharded-{launcher}"
    out.mkdir(parents=True, exist_ok=True)
    config = out / "base.yaml"
    config.write_text("{}\n")
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    mixed = "bf16"
    if cpu:
        env["ACCELERATE_USE_CPU"] = "true"
        mixed = "no"  # the CPU smoke: no mixed-precision engine settings on CPU
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(REPO / "configs" / "accelerate" / f"{launcher}.yaml"), "--num_processes", "1",
               "--mixed_precision", mixed, "--main_process_port", str(29500 + os.getpid() % 1000),
               str(REPO / "tests" / "scripts" / "dist_train.py"), str(config), str(out),
               *overrides, f"output_dir={out / 'run'}"]
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        tail = "\n".join(line for line in proc.stderr.splitlines() if "Warning" not in line)[-3000:]
        return {"launcher": launcher, "status": "failed", "reason": tail, "wall_s": wall}
    record = json.loads((out / "rank0.json").read_text())
    metrics = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    used = [m["memory/device_used_gib"] for m in metrics if "memory/device_used_gib" in m]
    return {
        "launcher": launcher, "status": "ok", "wall_s": wall, "sharded": record["sharded"],
        "steps": len(metrics), "losses": [m["train/loss"] for m in metrics],
        "median_step_s": sorted(m["timing/step_s"] for m in metrics)[len(metrics) // 2],
        "all_finite": all(not m["train/skipped"] for m in metrics),
        "loss_phase_device_gib": max(used) if used else None,
        "final_saved": any((out / "run" / "final").glob("*.safetensors")),
    }


def sharded_checks(overrides: list[str], work: Path, cpu: bool, deepspeed: bool) -> tuple[list[dict], list[str]]:
    """(d) for FSDP2 and ZeRO-3; (runs, failures)."""
    extra = ["model.lora.enabled=true", "model.lora.rank=16", "model.lora.alpha=32", "optim.grad_accum_steps=2",
             "steps=3"]
    runs, failures = [], []
    for launcher in ("fsdp2", "zero3"):
        if launcher == "zero3" and not deepspeed:
            runs.append({"launcher": launcher, "status": "skipped", "reason": "`import deepspeed` failed"})
            continue
        run = sharded_run(launcher, overrides + extra, work, cpu)
        runs.append(run)
        if run["status"] != "ok":
            failures.append(f"{launcher} run failed")
        elif not (run["sharded"] and run["all_finite"] and run["final_saved"]):
            failures.append(f"{launcher} run: sharded={run['sharded']}, all finite={run['all_finite']}, "
                            f"final saved={run['final_saved']}")
    return runs, failures


def eval_check(model_dir: Path, problems_file: Path, work: Path, limit: int, max_new_tokens: int,
               dtype: str) -> dict:
    """(f): greedy Average@1 of `model_dir` with the HF backend and with vLLM."""
    from atesd.eval_config import EvalConfig
    from atesd.eval_config import run_eval

    out = {}
    samples = {}
    for backend in ("hf", "vllm"):
        cfg = EvalConfig(model=str(model_dir), data=str(problems_file), k=1, temperature=0.0, top_p=1.0, top_k=0,
                         max_new_tokens=max_new_tokens, limit=limit, dtype=dtype, backend=backend,
                         out_dir=str(work / f"eval-{backend}"), score_workers=0)
        started = time.perf_counter()
        try:
            report = run_eval(cfg, progress=False)
        except Exception as error:  # reported, not raised: the other checks still run
            traceback.print_exc()
            out[backend] = {"status": "failed", "reason": repr(error)}
            continue
        out[backend] = {"status": "ok", "seconds": time.perf_counter() - started,
                        "average_at_1": report.average_at_k, "meta": report.meta}
        samples[backend] = [s.completion for s in report.samples]
    if len(samples) == 2:
        same = sum(a == b for a, b in zip(samples["hf"], samples["vllm"]))
        out["identical_fraction"] = same / max(1, len(samples["hf"]))
    return out


def sharded_markdown(runs: list[dict]) -> list[str]:
    """(d) as a table: one process per accelerate config, LoRA, 2 micro-batches."""
    lines = ["| config | status | sharded | steps | median step s | loss-phase device memory | losses |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for run in runs:
        if run["status"] != "ok":
            lines.append(f"| {run['launcher']} | {run['status']}: {run['reason'][-300:]!r} | | | | | |")
            continue
        memory = "n/a" if run["loss_phase_device_gib"] is None else f"{run['loss_phase_device_gib']:.2f} GiB"
        lines.append(f"| {run['launcher']} | ok | {run['sharded']} | {run['steps']} | {run['median_step_s']:.2f} "
                     f"| {memory} | {', '.join(f'{x:.4f}' for x in run['losses'])} |")
    return lines


def vllm_markdown(sleep: dict | None, evaluation: dict | None) -> list[str]:
    """(e) and (f), when they ran."""
    lines = []
    if sleep:
        lines += ["", "## (e) vLLM sleep mode", "",
                  f"loss-phase device memory: without sleep {sleep.get('without')} GiB, with sleep "
                  f"{sleep.get('with')} GiB"]
    if evaluation:
        lines += ["", "## (f) evaluation, greedy Average@1 (HF backend vs vLLM)", ""]
        for backend in ("hf", "vllm"):
            item = evaluation.get(backend, {})
            if item.get("status") == "ok":
                lines.append(f"- {backend}: {item['seconds']:.1f} s, Average@1 {100 * item['average_at_1']:.1f}%")
            else:
                lines.append(f"- {backend}: {item.get('status')}: {item.get('reason')}")
        if "identical_fraction" in evaluation:
            lines.append(f"- identical completions: {100 * evaluation['identical_fraction']:.1f}%")
    return lines
