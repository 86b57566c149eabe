"""The GPU check's recipe sections: two ATESD steps on the path configs/qwen3-1.7b-atesd.yaml takes
("recipe_step"), one step of configs/qwen3-1.7b-atesd-per-feature.yaml ("label_free_step").

Part of benchmarks/gpu_check.py. `atesd.train.train` runs the recipe file
itself with a few overrides: a random-weight model of Qwen3-1.7B's shape (hidden 2048, 28 layers,
16 heads, 8 KV heads, head_dim 128, MLP 6144, tied embeddings) with the full 151,936-token
vocabulary, in bf16 under accelerate's bf16 autocast, LoRA r 64 / alpha 128 on every projection,
gradient checkpointing, the recipe's learned controller with its probe size (16 probe + 16
grounding problems), the chunked loss at the automatic chunk (128 tokens at this vocabulary) with
float32 logits, the HF rollout backend. Toy problems and the toy tokenizer stand in for the data (the
model's vocabulary is larger than the tokenizer's; sampled ids beyond it decode to nothing). One GPU
holds what one of the recipe's 8 processes holds: 4 prompts per step, rollouts of up to
`max_new_tokens` (256 here, the recipe's 1024 would take ~4x the decode time).

Reported: per-phase seconds of each step (the trainer's timing/* metrics: sample, decide, views,
probe, loss, update), torch's peak allocated memory and the device memory in use at the loss phase,
the losses, and whether every step was finite. Random weights make the losses meaningless; the
times and memory are the point (an estimate of the recipe's per-process cost, decode-bound).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QWEN3_1_7B = {"vocab_size": 151_936, "hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 28,
              "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128}
TINY = {"vocab_size": 4096, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32}


def build_recipe_world(directory: Path, shape: dict, device: str, n_problems: int = 256) -> tuple[Path, Path, int]:
    """A random-weight bf16 Qwen3 of `shape` (initialised on `device`) with the toy tokenizer, and a
    toy train file. Returns (model directory, train file, parameter count)."""
    import torch
    from bench_world import toy_tokenizer
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from atesd.data import write_problems
    from atesd.toy.model import END_OF_TEXT, save_model_dir

    tokenizer, problems = toy_tokenizer(n_problems, seed=0)
    config = Qwen3Config(**shape, max_position_embeddings=40_960, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
                         tie_word_embeddings=True, bos_token_id=tokenizer.convert_tokens_to_ids(END_OF_TEXT),
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen3ForCausalLM(config).to(torch.bfloat16)
    params = sum(p.numel() for p in model.parameters())
    model_dir = save_model_dir(model, tokenizer, directory / "recipe-model")
    del model
    train_file = directory / "recipe-train.jsonl"
    write_problems(train_file, problems)
    return model_dir, train_file, params


def recipe_step(work: Path, device: str, tiny: bool) -> tuple[dict, list[str]]:
    """The "recipe_step" section: two steps of configs/qwen3-1.7b-atesd.yaml. (result, failures)."""
    return _recipe_steps(work, device, tiny, "qwen3-1.7b-atesd.yaml", steps=2, max_new_tokens=256)


def label_free_step(work: Path, device: str, tiny: bool) -> tuple[dict, list[str]]:
    """The "label_free_step" section: one step of configs/qwen3-1.7b-atesd-per-feature.yaml, whose paired
    credit runs the student in forward mode with attention in the math kernel (bf16, LoRA); rollouts of
    up to 128 tokens. Fails when the step is not finite or credits no rollout with a finite value."""
    result, failures = _recipe_steps(work, device, tiny, "qwen3-1.7b-atesd-per-feature.yaml", steps=1,
                                     max_new_tokens=128, extra=["exposure.probe_size=16"])
    records = [json.loads(line) for line in (work / "recipe-run-qwen3-1.7b-atesd-per-feature" / "exposure.jsonl").read_text().splitlines()]
    credits = [r for r in records if r["event"] == "credit"]
    result["credited_rollouts"] = len(credits)
    finite = [r for r in credits if all(abs(r[k]) < float("inf") for k in ("chosen_credit", "counterfactual_credit"))]
    if not credits or len(finite) != len(credits):
        failures.append(f"label-free step: {len(credits)} credited rollouts, {len(finite)} with finite credit")
    return result, failures


def _recipe_steps(work: Path, device: str, tiny: bool, config_name: str, steps: int, max_new_tokens: int,
                  extra: list[str] = ()) -> tuple[dict, list[str]]:
    """`steps` steps of configs/<config_name> on the random Qwen3-1.7B-shaped world. (result, failures)."""
    import torch

    from atesd.config import load_config
    from atesd.train import train

    shape, max_new_tokens = (TINY, 16) if tiny else (QWEN3_1_7B, max_new_tokens)
    started = time.perf_counter()
    model_dir, train_file, params = build_recipe_world(work, shape, device)
    build_s = time.perf_counter() - started
    if device == "cuda":
        os.environ["ACCELERATE_MIXED_PRECISION"] = "bf16"  # what the recipe's accelerate launch sets
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    out_dir = work / f"recipe-run-{Path(config_name).stem}"
    overrides = [f"model.name_or_path={model_dir}", f"data.train={train_file}", "data.split=null",
                 f"rollout.max_new_tokens={max_new_tokens}", f"steps={steps}", "prompts_per_step=4", "save_every=1000",
                 f"output_dir={out_dir}", "progress=false", *extra]
    cfg = load_config(REPO / "configs" / config_name, overrides)
    started = time.perf_counter()
    train(cfg)
    wall = time.perf_counter() - started
    metrics = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    phases = ("sample", "decide", "views", "probe", "loss", "update")
    result = {
        "config": config_name, "params": params, "vocab": shape["vocab_size"], "lora_rank": cfg.model.lora.rank,
        "probe_size": cfg.exposure.probe_size, "chunk_size": "auto (loss.chunk_size null)",
        "max_new_tokens": max_new_tokens, "prompts_per_step": cfg.prompts_per_step,
        "build_s": build_s, "train_wall_s": wall,
        "steps": [{"step": m["step"], "step_s": m["timing/step_s"],
                   **{f"{phase}_s": m.get(f"timing/{phase}_s") for phase in (*phases, "credit")},
                   "completion_tokens": m.get("rollout/tokens"), "loss": m["train/loss"],
                   "device_used_gib": m.get("memory/device_used_gib")} for m in metrics],
        "peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None,
        "all_finite": all(not m.get("train/skipped", False) for m in metrics),
    }
    failures = [] if result["all_finite"] and len(metrics) == steps else [
        f"recipe step: {len(metrics)} steps logged, all finite: {result['all_finite']}"]
    return result, failures


def markdown(result: dict) -> list[str]:
    peak = "n/a" if result["peak_allocated_gib"] is None else f"{result['peak_allocated_gib']:.1f} GiB"
    lines = [f"{result['params']:,} parameters, vocabulary {result['vocab']:,}, LoRA r {result['lora_rank']}, "
             f"probe {result['probe_size']}, {result['prompts_per_step']} prompts × ≤ {result['max_new_tokens']} "
             f"tokens; built in {result['build_s']:.0f} s; peak allocated {peak}", "",
             "| step | step s | sample s | decide s | views s | probe s | loss s | update s | tokens | loss |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for s in result["steps"]:
        cells = [s["step"], *(f"{s[k]:.2f}" if s[k] is not None else "n/a" for k in
                              ("step_s", "sample_s", "decide_s", "views_s", "probe_s", "loss_s", "update_s")),
                 s["completion_tokens"], f"{s['loss']:.4f}"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    if "credited_rollouts" in result:
        seconds = ", ".join("n/a" if s["credit_s"] is None else f"{s['credit_s']:.2f}" for s in result["steps"])
        lines += ["", f"{result['config']}: {result['credited_rollouts']} rollouts credited (forward mode), credit "
                      f"seconds per step: {seconds}"]
    return lines
