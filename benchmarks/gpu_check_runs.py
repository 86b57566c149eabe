"""The GPU check's measurements (a)-(c), run by the sections of benchmarks/gpu_check.py.

(a) Divergence numerics. `chunked_divergence` on bf16 inputs (hidden states [N, H], lm_head
    [V, H], V = Qwen3's 151,936) against a float32 reference: `token_divergence` on full float32
    logits of the same bf16 values upcast, so only the arithmetic precision differs. Values,
    ∂/∂hidden and ∂/∂lm_head are compared as max relative error max|x − ref| / max|ref| (and
    ‖x − ref‖ / ‖ref‖). Two settings: plain forward KL, and OPSD's (point-wise clip 0.05,
    temperature 1.1), and OPSD's with `float32_logits` (the loss's default with a clip). Chunking
    itself must be exact, so the chunked bf16 result is also compared with full bf16 logits
    (tolerance 1e-2). Against float32, values must be within 5e-2, and gradients within 5e-2
    without the clip or with float32 logits; with the hard clip on bf16 logits, entries move across
    the threshold, whose gradient jumps to 0, so that gradient error is reported but does not fail.
    The time of float32 logits against bf16 logits is reported (after a warm-up call).
(b) Training. `atesd.train.train` (what `atesd train` runs) with exposure.policy=learned for 3 steps
    on a random-weight Qwen3 (hidden 768, 12 layers, 12 heads, 4 KV heads, head_dim 64, MLP 3072:
    ~104M parameters; the toy tokenizer of atesd.toy.model) in bf16, full fine-tuning, gradient
    checkpointing, toy problems written with atesd.data.write_problems, 16 prompts × 256 new tokens
    per step; HF backend, then rollout.backend=vllm when `import vllm` works (a run whose backend
    cannot be built, e.g. an atesd without `atesd.rollout.vllm`, is reported as skipped, with why).
(c) Throughput per run, steps after the first (warm-up): completion tokens/s (the trainer's
    train/tokens_per_s), and MFU = FLOPs / (step seconds × peak bf16 dense FLOP/s) with
    FLOPs = 6·N·(student prompt + completion tokens)           (student forward + backward)
          + 2·N·(teacher prompt + completion tokens)           (teacher forward)
          + 2·N·(student prompt + completion tokens)           (generation, prefill + decode)
    N = all parameters. Not counted: attention's T² term, the recomputation of gradient
    checkpointing, the controller's probe and grounding forwards — so MFU is a lower bound.
    Prompt lengths are recomputed exactly from the run (the sampler's problems, the logged α).
    Peak memory: torch.cuda.max_memory_allocated during the run. Peak FLOP/s: H100 SXM and H200
    989e12, H100 PCIe 756e12, A100 312e12; others need --peak-tflops.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

FULL = {
    "divergence": {"tokens": 4096, "hidden": 2048, "vocab": 151_936, "chunk": 128},  # the automatic chunk
    "model": {"hidden": 768, "layers": 12, "heads": 12, "kv_heads": 4, "head_dim": 64, "intermediate": 3072,
              "max_positions": 2048},
    "steps": 3, "prompts_per_step": 16, "max_new_tokens": 256, "probe_size": 8, "problems": 512,
    "eval_problems": 64,
}
TINY = {
    "divergence": {"tokens": 64, "hidden": 32, "vocab": 512, "chunk": 16},
    "model": {"hidden": 32, "layers": 2, "heads": 2, "kv_heads": 1, "head_dim": 32, "intermediate": 64,
              "max_positions": 1024},
    "steps": 2, "prompts_per_step": 4, "max_new_tokens": 16, "probe_size": 2, "problems": 64,
    "eval_problems": 4,
}
VALUE_TOL = 5e-2  # bf16 vs float32, values (and gradients without the clip)
CHUNKING_TOL = 1e-2  # chunked bf16 vs full-logit bf16
PEAK_BF16_FLOPS = (("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12))


# ---------------------------------------------------------------- (a) divergence numerics


@dataclass(frozen=True)
class Comparison:
    name: str  # "values", "grad hidden", "grad lm_head"
    max_rel: float  # max|x − ref| / max|ref|
    norm_rel: float  # ‖x − ref‖ / ‖ref‖


def _compare(names, results, reference) -> list[Comparison]:
    out = []
    for name, x, ref in zip(names, results, reference):
        x, ref = x.double(), ref.double()
        scale, norm = ref.abs().max().clamp_min(1e-30), ref.norm().clamp_min(1e-30)
        out.append(Comparison(name, float((x - ref).abs().max() / scale), float((x - ref).norm() / norm)))
    return out


def divergence_check(sizes: dict, device: str, seed: int = 0) -> list[dict]:
    """(a): for each setting, bf16 chunked vs float32 full logits and vs bf16 full logits."""
    import torch

    from atesd.divergence import token_divergence
    from atesd.divergence_chunked import chunked_divergence

    n, h, v, chunk = sizes["tokens"], sizes["hidden"], sizes["vocab"], sizes["chunk"]
    gen = torch.Generator(device="cpu").manual_seed(seed)
    # Hidden states of unit scale (after the final norm); a head whose logits have std ~4, as
    # trained LMs' peaked distributions do; the teacher's states differ by noise (mean KL ~ 0.5-2).
    student = torch.randn(n, h, generator=gen)
    teacher = student + 0.5 * torch.randn(n, h, generator=gen)
    head = torch.randn(v, h, generator=gen) * (4.0 / h**0.5)
    student, teacher, head = (t.to(device=device, dtype=torch.bfloat16) for t in (student, teacher, head))
    weights = torch.full((n,), 1.0 / n, device=device)
    names = ("values", "grad hidden", "grad lm_head")

    def run(dtype, chunked: bool, clip, temperature, float32_logits=False):
        s = student.to(dtype).clone().requires_grad_()
        w = head.to(dtype).clone().requires_grad_()
        t = teacher.to(dtype)
        if chunked:
            values = chunked_divergence(s, t, w, token_clip=clip, temperature=temperature, chunk_size=chunk,
                                        token_weights=weights.to(dtype), float32_logits=float32_logits).divergence
        else:
            values = token_divergence(s @ w.T, t @ w.detach().T, token_clip=clip, temperature=temperature)
        (values.float() * weights).sum().backward()
        return values.detach().float(), s.grad.float(), w.grad.float()

    report = []
    torch.set_float32_matmul_precision("highest")  # a true float32 reference (no TF32)
    run(torch.bfloat16, True, 0.05, 1.1, True)  # warm-up (kernels, allocator) before the timed runs
    settings = (("forward KL", None, 1.0, False), ("OPSD: clip 0.05, T 1.1", 0.05, 1.1, False),
                ("OPSD, float32 logits", 0.05, 1.1, True))
    for label, clip, temperature, float32_logits in settings:
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        bf16_chunked = run(torch.bfloat16, True, clip, temperature, float32_logits)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
        reference = run(torch.float32, False, clip, temperature)
        bf16_full = run(torch.bfloat16, False, clip, temperature)
        vs_fp32 = _compare(names, bf16_chunked, reference)
        vs_full = _compare(names, bf16_chunked, bf16_full)
        # float32 logits are meant to differ from bf16 ones (they follow float32): no chunking check there
        failures = [f"chunked vs full bf16 {c.name} {c.max_rel:.2e} > {CHUNKING_TOL}"
                    for c in vs_full if c.max_rel > CHUNKING_TOL and not float32_logits]
        for c in vs_fp32:
            gradient_with_clip = clip is not None and c.name != "values" and not float32_logits
            if c.max_rel > VALUE_TOL and not gradient_with_clip:
                failures.append(f"bf16 vs float32 {c.name} {c.max_rel:.2e} > {VALUE_TOL}")
        report.append({
            "setting": label, "tokens": n, "hidden": h, "vocab": v, "chunk": chunk, "float32_logits": float32_logits,
            "mean_divergence": float(reference[0].mean()),
            "vs_float32": [c.__dict__ for c in vs_fp32], "vs_full_bf16": [c.__dict__ for c in vs_full],
            "chunked_bf16_fwd_bwd_s": seconds, "chunked_bf16_peak_bytes": peak,
            "failures": failures,
        })
        del bf16_chunked, reference, bf16_full
    return report


# ---------------------------------------------------------------- (b) training runs


def build_world(directory: Path, sizes: dict, seed: int = 0) -> tuple[Path, Path, int]:
    """A random-weight Qwen3 of sizes["model"] with the toy tokenizer, and a toy train file.
    Returns (model directory, train file, parameter count)."""
    from bench_world import toy_tokenizer

    from atesd.data import write_problems
    from atesd.toy.model import ModelPreset, build_model, save_model_dir

    tokenizer, problems = toy_tokenizer(sizes["problems"], seed)
    model = build_model(ModelPreset(**sizes["model"]), tokenizer, seed=seed)
    params = sum(p.numel() for p in model.parameters())
    model_dir = save_model_dir(model, tokenizer, directory / "model")
    train_file = directory / "train.jsonl"
    write_problems(train_file, problems)
    return model_dir, train_file, params


def train_overrides(sizes: dict, model_dir: Path, train_file: Path, out_dir: Path, backend: str) -> list[str]:
    """ATESD with the learned controller on a short clock: hold 1 step, lookahead 1, 2 decisions
    per controller update, so the controller is updated within the run."""
    return [
        f"model.name_or_path={model_dir}", "model.dtype=bfloat16", "model.gradient_checkpointing=true",
        f"data.train={train_file}", f"rollout.backend={backend}",
        f"rollout.max_new_tokens={sizes['max_new_tokens']}", "rollout.temperature=1.0", "rollout.top_p=1.0",
        "rollout.top_k=0", f"rollout.batch_size={sizes['prompts_per_step']}",
        "loss.objective=distill", "loss.divergence=forward_kl", "loss.token_clip=0.05", "loss.temperature=1.1",
        "teacher.kind=frozen", "exposure.policy=learned", "exposure.hold_steps=1", "exposure.lookahead_steps=1",
        "exposure.decisions_per_update=2", f"exposure.probe_size={sizes['probe_size']}",
        "optim.lr=1e-5", f"steps={sizes['steps']}", f"prompts_per_step={sizes['prompts_per_step']}",
        "save_every=1000", "keep_checkpoints=1", f"output_dir={out_dir}", "progress=false", "seed=0",
    ]


def step_token_counts(cfg, metrics: list[dict]) -> list[dict]:
    """Per step: student prompt, teacher prompt and completion tokens, recomputed from the run
    (the same problems as train's PromptSampler, the logged α_t, the logged completion tokens)."""
    from atesd.data import load_problems
    from atesd.models import load_tokenizer
    from atesd.prompts import student_prompt, teacher_prompt
    from atesd.reveal import reveal
    from atesd.run import PromptSampler

    problems = load_problems(cfg.data.train)
    tokenizer = load_tokenizer(cfg.model)
    sampler = PromptSampler(len(problems), cfg.prompts_per_step, cfg.seed)
    counts = []
    for record in metrics:
        step, ratio = int(record["step"]), float(record["exposure/reveal_ratio"])
        batch = [problems[i] for i in sampler.indices(step, 0, 1)] * cfg.rollout.num_generations
        counts.append({
            "student_prompt": sum(len(student_prompt(tokenizer, p.problem, cfg.prompts)) for p in batch),
            "teacher_prompt": sum(
                len(teacher_prompt(tokenizer, p.problem, reveal(p.solution, ratio), cfg.prompts)) for p in batch
            ),
            "completion": int(record["rollout/tokens"]),
        })
    return counts


def step_flops(params: int, tokens: dict) -> float:
    """6·N·student tokens (training) + 2·N·teacher tokens (teacher) + 2·N·student tokens (generation)."""
    student = tokens["student_prompt"] + tokens["completion"]
    teacher = tokens["teacher_prompt"] + tokens["completion"]
    return 6 * params * student + 2 * params * teacher + 2 * params * student


def peak_flops(device_name: str, override_tflops: float | None) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    for key, value in PEAK_BF16_FLOPS:
        if all(part in device_name for part in key.split()):
            return value
    return None


def train_run(backend: str, sizes: dict, model_dir: Path, train_file: Path, params: int, work: Path,
              device: str, peak: float | None, extra: tuple[str, ...] = (), name: str | None = None) -> dict:
    """(b)+(c) for one rollout backend: train, then throughput, MFU and peak memory."""
    import torch

    from atesd.config import load_config
    from atesd.train import train

    out_dir = work / f"run-{name or backend}"
    cfg = load_config(None, train_overrides(sizes, model_dir, train_file, out_dir, backend) + list(extra))
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    train(cfg)
    wall = time.perf_counter() - t0
    peak_bytes = torch.cuda.max_memory_allocated() if device == "cuda" else None
    lines = (out_dir / "metrics.jsonl").read_text().splitlines()
    metrics = [json.loads(line) for line in lines if line.strip()]
    exposure_file = out_dir / "exposure.jsonl"
    exposure_records = exposure_file.read_text().splitlines() if exposure_file.exists() else []
    counts = step_token_counts(cfg, metrics)
    timed = list(zip(metrics, counts))[1:] or list(zip(metrics, counts))  # drop the warm-up step
    seconds = sum(m["timing/step_s"] for m, _ in timed)
    flops = sum(step_flops(params, c) for _, c in timed)
    processed = sum(c["student_prompt"] + c["teacher_prompt"] + 2 * c["completion"] for _, c in timed)
    device_used = [m["memory/device_used_gib"] for m in metrics if "memory/device_used_gib" in m]
    return {
        "backend": name or backend, "status": "ok", "steps": len(metrics), "timed_steps": len(timed), "wall_s": wall,
        "run_dir": str(out_dir),
        "loss_phase_device_gib": max(device_used) if device_used else None,
        "median_step_s": statistics.median(m["timing/step_s"] for m, _ in timed),
        "median_rollout_s": statistics.median(m["timing/sample_s"] for m, _ in timed),
        "completion_tokens_per_s": sum(c["completion"] for _, c in timed) / seconds,
        "processed_tokens_per_s": processed / seconds,
        "achieved_tflops": flops / seconds / 1e12,
        "mfu": flops / seconds / peak if peak else None,
        "peak_memory_bytes": peak_bytes,
        "losses": [m["train/loss"] for m in metrics],
        "reveal_ratios": [m["exposure/reveal_ratio"] for m in metrics],
        "exposure_records": len(exposure_records),
        "all_finite": all(not m.get("train/skipped", False) for m in metrics),
    }


def vllm_available() -> tuple[bool, str]:
    try:
        import vllm  # noqa: F401
    except Exception as error:  # ImportError, or a broken CUDA extension
        return False, f"`import vllm` failed: {type(error).__name__}: {error}"
    return True, ""
