"""Memory and time of the OPSD divergence, forward + backward: chunked against full-vocabulary logits.

Measures `atesd.divergence_chunked.chunked_divergence` (forward KL, mean over tokens) against the
naive computation: logits = hidden @ W^T [N, V] for student and (without grad) teacher,
log_softmax, KL(p_T ‖ p_S) per token, mean, backward. Default size: 2048 tokens × 151,936
vocabulary (Qwen3) × hidden 2048, float32, CPU.

Each variant runs in a fresh subprocess (so peaks do not mix) with MALLOC_MMAP_THRESHOLD_=65536
(glibc hands freed blocks back to the OS). There, after allocating the inputs and the lm_head weight
(with no gradient yet), the baseline RSS is read and the kernel's peak-RSS mark is reset
(/proc/self/clear_refs). The loss's working memory is the peak RSS minus that baseline minus the
weight's gradient and the hidden states' gradient that the backward leaves behind: what the inputs,
the weight and their gradients hold is not the loss's own memory, everything else is.

Values and gradients (w.r.t. hidden and weight) are compared in a smaller run with the same vocabulary
and hidden size (default 640 tokens, so chunk 256 walks 3 chunks, the last one partial).

The chunk size the library uses by default (`loss.chunk_size: null`, `auto_chunk_size` of the
vocabulary within `loss.chunk_memory_mib`, 128 at this vocabulary) is always measured and marked.

    python benchmarks/divergence_memory.py            # full size (several minutes on 2 cores)
    python benchmarks/divergence_memory.py --quick    # tiny sizes, CI smoke
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_report import progress, publish, table  # noqa: E402

FULL = {"tokens": 2048, "vocab": 151_936, "hidden": 2048, "chunk_sizes": [1024, 256, 128], "check_tokens": 640}
QUICK = {"tokens": 512, "vocab": 8192, "hidden": 128, "chunk_sizes": [128, 32], "check_tokens": 160}
GOAL_RATIO = 8.0
TOLERANCE = 1e-4
MiB = 2**20


# ------------------------------------------------------------------------------------------------
# Inside one subprocess

def _status_kib(field: str) -> int | None:
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _rss_bytes() -> int:
    kib = _status_kib("VmRSS")
    return kib * 1024 if kib is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False if not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_bytes() -> int:
    kib = _status_kib("VmHWM")
    return kib * 1024 if kib is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _inputs(tokens: int, vocab: int, hidden: int, seed: int = 0):
    """student/teacher hidden [N, H] and lm_head weight [V, H] ~ N(0, 0.02²), built in place."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    student = torch.randn(tokens, hidden, generator=gen)
    teacher = student + 0.5 * torch.randn(tokens, hidden, generator=gen)
    weight = torch.empty(vocab, hidden).normal_(0.0, 0.02, generator=gen)
    return student.requires_grad_(True), teacher, weight.requires_grad_(True)


def naive_loss(student, teacher, weight):
    """mean_n KL(p_T ‖ p_S) with full [N, V] logits; the teacher pass carries no grad."""
    import torch

    student_logp = torch.log_softmax(student @ weight.T, dim=-1)
    with torch.no_grad():
        teacher_logp = torch.log_softmax(teacher @ weight.T, dim=-1)
    return (teacher_logp.exp() * (teacher_logp - student_logp)).sum(dim=-1).mean()


def chunked_loss(student, teacher, weight, chunk_size: int):
    from atesd.divergence_chunked import chunked_divergence

    out = chunked_divergence(student, teacher, weight, kind="forward_kl", chunk_size=chunk_size)
    return out.divergence.mean()


def _loss(variant: str, student, teacher, weight):
    if variant == "naive":
        return naive_loss(student, teacher, weight)
    return chunked_loss(student, teacher, weight, int(variant.split("-")[1]))


def measure_variant(variant: str, tokens: int, vocab: int, hidden: int, threads: int) -> dict:
    """One forward + backward of `variant` ("naive" or "chunked-<size>"), with memory and time."""
    import torch

    import atesd.divergence_chunked  # noqa: F401  (imported before the clock starts)

    torch.set_num_threads(threads)
    student, teacher, weight = _inputs(tokens, vocab, hidden)
    baseline = _rss_bytes()
    reset = _reset_peak()
    progress(f"  [{variant}] baseline RSS {baseline / MiB:.0f} MiB; forward ...")
    t0 = time.perf_counter()
    loss = _loss(variant, student, teacher, weight)
    t1 = time.perf_counter()
    progress(f"  [{variant}] forward {t1 - t0:.1f} s; backward ...")
    loss.backward()
    t2 = time.perf_counter()
    peak = _peak_bytes()
    gradients = sum(t.grad.numel() * t.grad.element_size() for t in (student, weight) if t.grad is not None)
    progress(f"  [{variant}] backward {t2 - t1:.1f} s; peak RSS {peak / MiB:.0f} MiB")
    return {
        "variant": variant, "loss": float(loss.detach()), "baseline_mib": baseline / MiB, "peak_mib": peak / MiB,
        "gradients_mib": gradients / MiB,
        "working_mib": (peak - baseline - gradients) / MiB, "forward_s": t1 - t0, "backward_s": t2 - t1,
        "total_s": t2 - t0, "peak_reset": reset,
    }


def check_equal(tokens: int, vocab: int, hidden: int, chunk_sizes: list[int], threads: int) -> dict:
    """Loss, d/d hidden and d/d weight of each chunked variant against the naive one.

    Error = max |chunked − naive| / max |naive| over the tensor; passes at <= TOLERANCE.
    """
    import torch

    torch.set_num_threads(threads)
    student, teacher, weight = _inputs(tokens, vocab, hidden, seed=1)
    progress(f"  [check] naive at {tokens} tokens ...")
    ref_loss = naive_loss(student, teacher, weight)
    ref_loss.backward()
    ref = (ref_loss.detach(), student.grad, weight.grad)
    rows = []
    for size in chunk_sizes:
        student.grad, weight.grad = None, None
        progress(f"  [check] chunked-{size} ...")
        loss = chunked_loss(student, teacher, weight, size)
        loss.backward()
        errors = [float((got - want).abs().max() / want.abs().max())
                  for got, want in zip((loss.detach(), student.grad, weight.grad), ref)]
        rows.append({"chunk_size": size, "chunks": -(-tokens // size), "loss_rel_err": errors[0],
                     "grad_hidden_rel_err": errors[1], "grad_weight_rel_err": errors[2],
                     "pass": max(errors) <= TOLERANCE})
        del loss
    return {"tokens": tokens, "tolerance": TOLERANCE, "loss": float(ref[0]), "rows": rows}


# ------------------------------------------------------------------------------------------------
# The driver

def _in_subprocess(args: list[str]) -> dict:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    done = subprocess.run([sys.executable, __file__, *args], env=env, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"subprocess {args} failed with exit code {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(sizes: dict, threads: int) -> dict:
    from atesd.divergence_chunked import auto_chunk_size

    default_chunk = auto_chunk_size(sizes["vocab"])
    if default_chunk not in sizes["chunk_sizes"]:
        sizes = {**sizes, "chunk_sizes": [*sizes["chunk_sizes"], default_chunk]}
    shape = ["--tokens", str(sizes["tokens"]), "--vocab", str(sizes["vocab"]),
             "--hidden", str(sizes["hidden"]), "--threads", str(threads)]
    variants = ["naive"] + [f"chunked-{c}" for c in sizes["chunk_sizes"]]
    progress(f"divergence_memory: {sizes['tokens']} tokens × {sizes['vocab']} vocab × hidden "
             f"{sizes['hidden']}, float32, {threads} threads")
    measured = [_in_subprocess(["--_variant", v, *shape]) for v in variants]
    check = _in_subprocess(["--_check", "--tokens", str(sizes["check_tokens"]), "--vocab", str(sizes["vocab"]),
                            "--hidden", str(sizes["hidden"]), "--threads", str(threads),
                            "--chunk-sizes", ",".join(map(str, sizes["chunk_sizes"]))])
    naive = measured[0]
    for m in measured:
        m["working_ratio_naive_over_this"] = naive["working_mib"] / max(m["working_mib"], 1e-9)
        m["time_ratio_this_over_naive"] = m["total_s"] / naive["total_s"]
    chunked = measured[1:]
    return {
        "benchmark": "divergence_memory", "sizes": sizes, "threads": threads, "variants": measured,
        "default_chunk": default_chunk,
        "check": check, "goal_working_ratio": GOAL_RATIO,
        "goal_met_by": [m["variant"] for m in chunked if m["working_ratio_naive_over_this"] >= GOAL_RATIO],
        "values_equal": all(r["pass"] for r in check["rows"]),
    }


def to_markdown(result: dict) -> str:
    s = result["sizes"]
    logits_mib = s["tokens"] * s["vocab"] * 4 / MiB
    weight_mib = s["vocab"] * s["hidden"] * 4 / MiB
    lines = [
        "### Divergence memory: chunked vs full-vocabulary logits (forward KL, fwd+bwd)",
        "",
        f"{s['tokens']} tokens × {s['vocab']:,} vocabulary × hidden {s['hidden']}, float32, CPU, "
        f"{result['threads']} threads. One [N, V] float32 tensor = {logits_mib:.0f} MiB; lm_head weight "
        f"= its gradient = {weight_mib:.0f} MiB. Working memory = peak RSS − RSS after allocating the "
        "inputs and the weight − the gradients the backward leaves in weight.grad and hidden.grad; "
        "each variant in a fresh process.",
        "",
        table(["variant", "working MiB", "naive / this (working)", "peak RSS MiB", "forward s",
               "backward s", "total s", "time vs naive"],
              [[m["variant"] + (" (default)" if m["variant"] == f"chunked-{result['default_chunk']}" else ""),
                round(m["working_mib"]), f"{m['working_ratio_naive_over_this']:.2f}×",
                round(m["peak_mib"]), m["forward_s"], m["backward_s"], m["total_s"],
                f"{m['time_ratio_this_over_naive']:.2f}×"] for m in result["variants"]]),
        "",
        f"Default chunk size at this vocabulary (`loss.chunk_size: null`): {result['default_chunk']}. "
        f"Goal: chunked working memory ≥ {result['goal_working_ratio']:.0f}× lower than naive — "
        + (f"**met** by {', '.join(result['goal_met_by'])}; the working memory scales with the chunk "
           "size (about 5 [chunk, V] float32 buffers), so `loss.chunk_size` trades memory for fewer, "
           "larger matrix products." if result["goal_met_by"] else "**not met** by any chunk size."),
        "",
        f"Equality check at {result['check']['tokens']} tokens (same vocabulary and hidden size): "
        f"max |chunked − naive| / max |naive| (tolerance {result['check']['tolerance']:g}) — "
        f"**{'pass' if result['values_equal'] else 'FAIL'}**.",
        "",
        table(["chunk size", "chunks", "loss", "d/d hidden", "d/d weight", "pass"],
              [[r["chunk_size"], r["chunks"], f"{r['loss_rel_err']:.1e}", f"{r['grad_hidden_rel_err']:.1e}",
                f"{r['grad_weight_rel_err']:.1e}", r["pass"]] for r in result["check"]["rows"]]),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (CI smoke, < 60 s)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the result dict here")
    parser.add_argument("--tokens", type=int, default=None)
    parser.add_argument("--vocab", type=int, default=None)
    parser.add_argument("--hidden", type=int, default=None)
    parser.add_argument("--chunk-sizes", default=None, help="comma-separated, e.g. 1024,256")
    parser.add_argument("--check-tokens", type=int, default=None)
    parser.add_argument("--_variant", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_check", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = dict(QUICK if args.quick else FULL)
    for key in ("tokens", "vocab", "hidden", "check_tokens"):
        if getattr(args, key) is not None:
            sizes[key] = getattr(args, key)
    if args.chunk_sizes:
        sizes["chunk_sizes"] = [int(c) for c in args.chunk_sizes.split(",")]

    if args._variant:  # worker: one measurement, JSON on the last stdout line
        print(json.dumps(measure_variant(args._variant, sizes["tokens"], sizes["vocab"], sizes["hidden"],
                                         args.threads)))
        return {}
    if args._check:
        print(json.dumps(check_equal(sizes["tokens"], sizes["vocab"], sizes["hidden"], sizes["chunk_sizes"],
                                     args.threads)))
        return {}

    result = run(sizes, args.threads)
    return publish(result, to_markdown, args.json)


if __name__ == "__main__":
    main()
