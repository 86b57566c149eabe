"""GPU check on one H100/H200 in about 12 minutes: bf16 numerics of the chunked divergence, a short
ATESD run of a ~100M-parameter Qwen3-shaped model, its throughput, MFU and peak memory, and the scale
path on one GPU (FSDP2 and ZeRO-3 runs, vLLM sleep mode, vLLM evaluation; gpu_check_scale.py).

    bash benchmarks/gpu_check.sh                       # the wrapper: venv, CUDA check, then this
    python benchmarks/gpu_check.py                     # full sizes, needs a CUDA device
    python benchmarks/gpu_check.py --cpu --tiny        # smoke test of this script on CPU (~1 min)

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
(b) Training. `atesd.train.train` (what `atesd train` runs) with exposure.policy=learned for 5 steps
    on a random-weight Qwen3 (hidden 768, 12 layers, 12 heads, 4 KV heads, head_dim 64, MLP 3072:
    ~104M parameters; the toy tokenizer of atesd.toy.model) in bf16, full fine-tuning, gradient
    checkpointing, toy problems written with atesd.data.write_problems, 32 prompts × 512 new tokens
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

(d–f) See benchmarks/gpu_check_scale.py: FSDP2 and ZeRO-3 training through the shipped accelerate
    configs on one process, vLLM sleep mode's loss-phase memory, `atesd eval --backend vllm` against
    the HF backend.

Exit status 1 when a numerics check fails or a run raises; the report is printed as markdown and,
with --json PATH, written as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

FULL = {
    "divergence": {"tokens": 4096, "hidden": 2048, "vocab": 151_936, "chunk": 1024},
    "model": {"hidden": 768, "layers": 12, "heads": 12, "kv_heads": 4, "head_dim": 64, "intermediate": 3072,
              "max_positions": 2048},
    "steps": 5, "prompts_per_step": 32, "max_new_tokens": 512, "probe_size": 8, "problems": 512,
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


def scale_checks(report: dict, sizes: dict, model_dir: Path, train_file: Path, params: int, work: Path,
                 device: str, peak: float | None, cpu: bool) -> None:
    """(d) sharded training, (e) vLLM sleep mode, (f) vLLM evaluation: benchmarks/gpu_check_scale.py."""
    import importlib.util

    import gpu_check_scale as scale

    runs = {run["backend"]: run for run in report["training"] if run.get("status") == "ok"}
    if "vllm" in runs:
        try:
            slept = train_run("vllm", sizes, model_dir, train_file, params, work, device, peak,
                              extra=("rollout.vllm_sleep_mode=true",), name="vllm-sleep")
            report["training"].append(slept)
            report["sleep_mode"] = {"without": runs["vllm"]["loss_phase_device_gib"],
                                    "with": slept["loss_phase_device_gib"]}
        except Exception as error:
            traceback.print_exc()
            report["failures"].append(f"vllm run with sleep mode raised {error!r}")
    overrides = train_overrides(sizes, model_dir, train_file, work / "unused", "hf")
    report["sharded"], failures = scale.sharded_checks(overrides, work, cpu,
                                                       importlib.util.find_spec("deepspeed") is not None)
    report["failures"] += failures
    if "hf" in runs:
        report["evaluation"] = scale.eval_check(Path(runs["hf"]["run_dir"]) / "final", train_file, work,
                                                sizes["eval_problems"], sizes["max_new_tokens"], "bfloat16")
        for backend, item in report["evaluation"].items():
            if isinstance(item, dict) and item.get("status") == "failed" and (backend == "hf" or "vllm" in runs):
                report["failures"].append(f"{backend} evaluation raised {item['reason']}")


# ---------------------------------------------------------------- report


def _gib(value) -> str:
    return "n/a" if value is None else f"{value / 2**30:.2f} GiB"


def markdown(report: dict) -> str:
    peak = report["peak_tflops"] or "unknown"
    lines = [f"# GPU check — {report['device_name']}", "",
             f"torch {report['torch']}, CUDA {report['cuda']}, sizes: {report['sizes_name']}, "
             f"model {report['params']:,} parameters, peak bf16 {peak} TFLOP/s", "",
             "## (a) chunked divergence, bf16 vs float32 reference", "",
             "| setting | mean D | tensor | max rel err vs fp32 | norm rel err vs fp32 "
             "| max rel err vs full bf16 |",
             "| --- | --- | --- | --- | --- | --- |"]
    for item in report["divergence"]:
        for fp32, full in zip(item["vs_float32"], item["vs_full_bf16"]):
            lines.append(f"| {item['setting']} | {item['mean_divergence']:.3f} | {fp32['name']} "
                         f"| {fp32['max_rel']:.2e} | {fp32['norm_rel']:.2e} | {full['max_rel']:.2e} |")
    for item in report["divergence"]:
        lines.append(f"\n{item['setting']}: chunked bf16 fwd+bwd {item['chunked_bf16_fwd_bwd_s']:.3f} s, "
                     f"peak {_gib(item['chunked_bf16_peak_bytes'])} "
                     f"({item['tokens']} tokens × {item['vocab']} vocab)")
    timed = {item["setting"]: item["chunked_bf16_fwd_bwd_s"] for item in report["divergence"]}
    if "OPSD, float32 logits" in timed:
        lines.append(f"\nfloat32 logits cost: {timed['OPSD, float32 logits'] / timed['OPSD: clip 0.05, T 1.1']:.2f}× "
                     "the time of bf16 logits (OPSD setting, same chunk)")
    lines += ["", "## (b, c) ATESD training (exposure.policy=learned)", "",
              "| backend | status | steps | median step s | median rollout s | completion tok/s "
              "| processed tok/s | TFLOP/s | MFU | peak memory | losses |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for run in report["training"]:
        if run["status"] != "ok":
            lines.append(f"| {run['backend']} | {run['status']}: {run['reason']} | | | | | | | | | |")
            continue
        mfu = "n/a" if run["mfu"] is None else f"{100 * run['mfu']:.1f}%"
        losses = ", ".join(f"{x:.4f}" for x in run["losses"])
        lines.append(f"| {run['backend']} | ok | {run['steps']} | {run['median_step_s']:.2f} "
                     f"| {run['median_rollout_s']:.2f} | {run['completion_tokens_per_s']:.0f} "
                     f"| {run['processed_tokens_per_s']:.0f} | {run['achieved_tflops']:.2f} | {mfu} "
                     f"| {_gib(run['peak_memory_bytes'])} | {losses} |")
    import gpu_check_scale

    lines += gpu_check_scale.markdown(report)
    lines += ["", "Failures: " + ("; ".join(report["failures"]) if report["failures"] else "none")]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="run on CPU (smoke test of this script)")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes: 2 steps of a toy-test-sized model")
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak bf16 dense TFLOP/s of the device")
    parser.add_argument("--json", default=None, help="also write the report as JSON here")
    parser.add_argument("--workdir", default=None, help="keep the model and runs here (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.cpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    if args.cpu:
        torch.set_num_threads(1)
    elif not torch.cuda.is_available():
        print(f"gpu_check: no CUDA device (torch {torch.__version__}, built for CUDA {torch.version.cuda}); "
              "use --cpu for a smoke test", file=sys.stderr)
        return 2
    device = "cpu" if args.cpu else "cuda"
    device_name = "CPU" if args.cpu else torch.cuda.get_device_name(0)
    peak = peak_flops(device_name, args.peak_tflops)
    sizes = TINY if args.tiny else FULL
    report = {"device_name": device_name, "torch": torch.__version__, "cuda": torch.version.cuda,
              "sizes_name": "tiny" if args.tiny else "full", "sizes": sizes,
              "peak_tflops": None if peak is None else peak / 1e12, "failures": []}
    started = time.perf_counter()

    report["divergence"] = divergence_check(sizes["divergence"], device)
    for item in report["divergence"]:
        report["failures"] += [f"{item['setting']}: {f}" for f in item["failures"]]

    with tempfile.TemporaryDirectory(prefix="atesd-gpu-check-") as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        model_dir, train_file, params = build_world(work, sizes)
        report["params"] = params
        report["training"] = []
        for backend in ("hf", "vllm"):
            if backend == "vllm":
                ok, reason = vllm_available()
                if not ok:
                    report["training"].append({"backend": backend, "status": "skipped", "reason": reason})
                    continue
            try:
                run = train_run(backend, sizes, model_dir, train_file, params, work, device, peak)
            except ImportError as error:  # e.g. atesd has no vLLM engine yet
                report["training"].append({"backend": backend, "status": "skipped", "reason": str(error)})
                continue
            except Exception as error:
                traceback.print_exc()
                report["training"].append({"backend": backend, "status": "failed", "reason": repr(error)})
                report["failures"].append(f"{backend} run raised {error!r}")
                continue
            if not run["all_finite"]:
                report["failures"].append(f"{backend} run had a non-finite loss")
            report["training"].append(run)
        scale_checks(report, sizes, model_dir, train_file, params, work, device, peak, args.cpu)
    report["total_s"] = time.perf_counter() - started

    print(markdown(report))
    print(f"total {report['total_s']:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
