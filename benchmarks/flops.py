"""Achieved FLOP/s of a training step's forward + backward on the toy Qwen3s, against a plain matmul.

FLOPs of one forward + backward (PaLM appendix B convention): 6 · N · tokens for the weights
(N = all parameters; the embedding is tied to the lm_head, whose matmul it pays for) plus
12 · layers · (heads · head_dim) · T per token for attention scores and values (T = sequence length,
counted as full attention although the causal mask halves the useful work). The optimizer step is not
included. The reference is an fp32 n × n @ n × n matrix product (2n³ FLOPs) in the same process,
at the same thread count, timed just before and after the models so both see the same machine load.

    python benchmarks/flops.py           # toy-1m and toy-5m at batch 8 × 256 tokens, 2048² matmul
    python benchmarks/flops.py --quick   # tiny sizes, CI smoke
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_report import progress, publish, table  # noqa: E402
from bench_world import toy_tokenizer  # noqa: E402

FULL = {"presets": ["toy-1m", "toy-5m"], "batch": 8, "seq_len": 256, "matmul_n": 2048, "repeats": 5}
QUICK = {"presets": ["toy-test", "toy-1m"], "batch": 2, "seq_len": 64, "matmul_n": 512, "repeats": 2}


def _timed(fn, repeats: int) -> float:
    """Median seconds of `fn()` over `repeats` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_flops_per_s(n: int, repeats: int) -> float:
    import torch

    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
    out = torch.empty(n, n)
    return 2 * n**3 / _timed(lambda: torch.matmul(a, b, out=out), repeats)


def step_flops(model, batch: int, seq_len: int) -> tuple[int, int, int]:
    """(parameters, weight FLOPs, attention FLOPs) of one forward + backward."""
    cfg = model.config
    params = sum(p.numel() for p in model.parameters())
    tokens = batch * seq_len
    attention = 12 * cfg.num_hidden_layers * cfg.num_attention_heads * cfg.head_dim * seq_len * tokens
    return params, 6 * params * tokens, attention


def model_flops_per_s(preset: str, tokenizer, batch: int, seq_len: int, repeats: int) -> dict:
    import torch

    from atesd.toy.model import build_model

    model = build_model(preset, tokenizer).train()
    ids = torch.randint(0, model.config.vocab_size, (batch, seq_len), generator=torch.Generator().manual_seed(0))

    def step():
        model.zero_grad(set_to_none=True)
        model(input_ids=ids, labels=ids).loss.backward()

    seconds = _timed(step, repeats)
    params, weight_flops, attention_flops = step_flops(model, batch, seq_len)
    return {"preset": preset, "params": params, "vocab": model.config.vocab_size,
            "weight_flops": weight_flops, "attention_flops": attention_flops, "step_s": seconds,
            "flops_per_s": (weight_flops + attention_flops) / seconds,
            "tokens_per_s": batch * seq_len / seconds}


def run(sizes: dict, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    tokenizer, _ = toy_tokenizer()
    progress(f"flops: {sizes['matmul_n']}² matmul reference ...")
    before = matmul_flops_per_s(sizes["matmul_n"], sizes["repeats"])
    models = []
    for preset in sizes["presets"]:
        progress(f"flops: {preset} forward+backward at {sizes['batch']} × {sizes['seq_len']} ...")
        models.append(model_flops_per_s(preset, tokenizer, sizes["batch"], sizes["seq_len"], sizes["repeats"]))
    after = matmul_flops_per_s(sizes["matmul_n"], sizes["repeats"])
    reference = (before + after) / 2
    for m in models:
        m["fraction_of_matmul"] = m["flops_per_s"] / reference
    return {"benchmark": "flops", "sizes": sizes, "threads": threads, "matmul_flops_per_s_before": before,
            "matmul_flops_per_s_after": after, "matmul_flops_per_s": reference, "models": models}


def to_markdown(result: dict) -> str:
    s = result["sizes"]
    n = s["matmul_n"]
    rows = [[m["preset"], f"{m['params'] / 1e6:.2f} M", m["vocab"],
             f"{(m['weight_flops'] + m['attention_flops']) / 1e9:.2f}", m["step_s"],
             f"{m['flops_per_s'] / 1e9:.1f}", round(m["tokens_per_s"]), f"{100 * m['fraction_of_matmul']:.0f}%"]
            for m in result["models"]]
    rows.append([f"matmul {n}×{n} @ {n}×{n}", "—", "—", f"{2 * n**3 / 1e9:.2f}", None,
                 f"{result['matmul_flops_per_s'] / 1e9:.1f}", None, "100%"])
    return "\n".join([
        "### Achieved FLOP/s: toy Qwen3 forward + backward vs fp32 matmul",
        "",
        f"Batch {s['batch']} × {s['seq_len']} tokens, float32, {result['threads']} torch thread(s), median of "
        f"{s['repeats']} after a warm-up. "
        "FLOPs = 6 · params · tokens + 12 · layers · (heads · head_dim) · T · tokens; "
        f"no optimizer step. Matmul reference = mean of runs before "
        f"({result['matmul_flops_per_s_before'] / 1e9:.1f} GFLOP/s) and after "
        f"({result['matmul_flops_per_s_after'] / 1e9:.1f} GFLOP/s) the models.",
        "",
        table(["workload", "params", "vocab", "GFLOP/step", "step s", "GFLOP/s", "tokens/s", "of matmul"], rows),
    ])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (CI smoke, < 60 s)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: least hurt by other load)")
    parser.add_argument("--json", default=None, help="also write the result dict here")
    args = parser.parse_args(argv)
    result = run(dict(QUICK if args.quick else FULL), args.threads)
    return publish(result, to_markdown, args.json)


if __name__ == "__main__":
    main()
