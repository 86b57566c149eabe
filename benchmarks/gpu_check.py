"""GPU check on one H100/H200 in under 9 minutes, in sections, each with a time budget, each
written to the JSON report as it ends (a section that runs out of time, or a killed check, still
leaves every finished section in the file).

    bash benchmarks/gpu_check.sh --json results.json   # the wrapper: no install, system python
    python benchmarks/gpu_check.py --cpu --tiny         # every section on CPU at tiny sizes (~3 min)

Sections (each runs in its own process, killed at its budget; the total stays under 540 s):
  environment  (40 s)   versions, device, driver, torch features atesd needs, every atesd module
                        imported (benchmarks/gpu_check_env.py); runs without a GPU too.
  divergence   (50 s)   (a) below, bf16 against float32, at the loss's automatic chunk.
  recipe_step (200 s)   two steps of configs/qwen3-1.7b-atesd.yaml on a random Qwen3-1.7B-shaped
                        model, full vocabulary, LoRA r 64, bf16 (benchmarks/gpu_check_recipe.py).
  label_free_step (100 s) one step of configs/qwen3-1.7b-atesd-per-feature.yaml on that model: the
                        forward-mode paired credit in bf16 with LoRA (benchmarks/gpu_check_recipe.py).
  training     (80 s)   (b), (c) below on a ~100M model; (e), (f) when vLLM imports.
  sharded      (70 s)   (d): FSDP2 (and ZeRO-3 with DeepSpeed) through configs/accelerate/.
Without a CUDA device (and without --cpu) only "environment" runs; the others are reported skipped.

(a)-(c): benchmarks/gpu_check_runs.py; (d)-(f): benchmarks/gpu_check_scale.py.

Exit status 1 when a section fails, raises or runs out of time; the report is printed as markdown
section by section and written as JSON (--json) after each.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_check_runs import (  # noqa: E402
    FULL, TINY, build_world, divergence_check, peak_flops, train_overrides, train_run, vllm_available,
)

# ---------------------------------------------------------------- sections


def _world(work: Path, sizes: dict) -> tuple[Path, Path, int]:
    """build_world once per check: later sections reuse the model and data in `work`."""
    record = work / "world.json"
    if record.exists():
        saved = json.loads(record.read_text())
        return Path(saved["model_dir"]), Path(saved["train_file"]), saved["params"]
    model_dir, train_file, params = build_world(work, sizes)
    record.write_text(json.dumps({"model_dir": str(model_dir), "train_file": str(train_file), "params": params}))
    return model_dir, train_file, params


def divergence_section(work: Path, device: str, tiny: bool) -> tuple[dict, list[str]]:
    items = divergence_check((TINY if tiny else FULL)["divergence"], device)
    return {"settings": items}, [f"{item['setting']}: {f}" for item in items for f in item["failures"]]


def training_section(work: Path, device: str, tiny: bool) -> tuple[dict, list[str]]:
    """(b), (c) with the HF backend; with vLLM importable also its run, (e) sleep mode, (f) eval."""
    import torch

    import gpu_check_scale as scale

    sizes = TINY if tiny else FULL
    name = "CPU" if device == "cpu" else torch.cuda.get_device_name(0)
    peak = peak_flops(name, float(os.environ.get("GPU_CHECK_PEAK_TFLOPS", 0)) or None)
    model_dir, train_file, params = _world(work, sizes)
    result, failures = {"params": params, "peak_tflops": None if peak is None else peak / 1e12, "runs": []}, []
    ok, reason = vllm_available()
    for backend, extra, label in (("hf", (), "hf"), ("vllm", (), "vllm"),
                                  ("vllm", ("rollout.vllm_sleep_mode=true",), "vllm-sleep")):
        if backend == "vllm" and not ok:
            result["runs"].append({"backend": label, "status": "skipped", "reason": reason})
            continue
        try:
            run = train_run(backend, sizes, model_dir, train_file, params, work, device, peak, extra, label)
        except Exception as error:
            traceback.print_exc()
            result["runs"].append({"backend": label, "status": "failed", "reason": repr(error)})
            failures.append(f"{label} run raised {error!r}")
            continue
        result["runs"].append(run)
        if not run["all_finite"]:
            failures.append(f"{label} run had a non-finite loss")
    runs = {run["backend"]: run for run in result["runs"] if run.get("status") == "ok"}
    if "vllm" in runs and "vllm-sleep" in runs:
        result["sleep_mode"] = {"without": runs["vllm"]["loss_phase_device_gib"],
                                "with": runs["vllm-sleep"]["loss_phase_device_gib"]}
    if "hf" in runs and ok:
        result["evaluation"] = scale.eval_check(Path(runs["hf"]["run_dir"]) / "final", train_file, work,
                                                sizes["eval_problems"], sizes["max_new_tokens"], "bfloat16")
        failures += [f"{backend} evaluation raised {item['reason']}" for backend, item in
                     result["evaluation"].items() if isinstance(item, dict) and item.get("status") == "failed"]
    return result, failures


def sharded_section(work: Path, device: str, tiny: bool) -> tuple[dict, list[str]]:
    import importlib.util

    import gpu_check_scale as scale

    sizes = TINY if tiny else FULL
    model_dir, train_file, _ = _world(work, sizes)
    overrides = train_overrides(sizes, model_dir, train_file, work / "unused", "hf")
    runs, failures = scale.sharded_checks(overrides, work, device == "cpu", importlib.util.find_spec("deepspeed") is not None)
    return {"runs": runs}, failures


def _sections() -> dict:
    """name → (function(work, device, tiny) → (result, failures), budget seconds, needs a device)."""
    import gpu_check_env
    import gpu_check_recipe

    return {"environment": (gpu_check_env.environment, 40, False), "divergence": (divergence_section, 50, True),
            "recipe_step": (gpu_check_recipe.recipe_step, 200, True),
            "label_free_step": (gpu_check_recipe.label_free_step, 100, True), "training": (training_section, 80, True),
            "sharded": (sharded_section, 70, True)}


TOTAL_BUDGET_S = 540


# ---------------------------------------------------------------- report


def _gib(value) -> str:
    return "n/a" if value is None else f"{value / 2**30:.2f} GiB"


def _divergence_lines(result: dict) -> list[str]:
    lines = ["| setting | mean D | tensor | max rel err vs fp32 | norm rel err vs fp32 | max rel err vs full bf16 |",
             "| --- | --- | --- | --- | --- | --- |"]
    for item in result["settings"]:
        for fp32, full in zip(item["vs_float32"], item["vs_full_bf16"]):
            lines.append(f"| {item['setting']} | {item['mean_divergence']:.3f} | {fp32['name']} "
                         f"| {fp32['max_rel']:.2e} | {fp32['norm_rel']:.2e} | {full['max_rel']:.2e} |")
    for item in result["settings"]:
        lines.append(f"\n{item['setting']}: chunked bf16 fwd+bwd {item['chunked_bf16_fwd_bwd_s']:.3f} s, "
                     f"peak {_gib(item['chunked_bf16_peak_bytes'])} ({item['tokens']} tokens × {item['vocab']} vocab, "
                     f"chunk {item['chunk']})")
    return lines


def _training_lines(result: dict) -> list[str]:
    import gpu_check_scale

    lines = ["| backend | status | steps | median step s | median rollout s | completion tok/s | TFLOP/s | MFU "
             "| peak memory | losses |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for run in result["runs"]:
        if run["status"] != "ok":
            lines.append(f"| {run['backend']} | {run['status']}: {run['reason'][:200]} | | | | | | | | |")
            continue
        mfu = "n/a" if run["mfu"] is None else f"{100 * run['mfu']:.1f}%"
        lines.append(f"| {run['backend']} | ok | {run['steps']} | {run['median_step_s']:.2f} "
                     f"| {run['median_rollout_s']:.2f} | {run['completion_tokens_per_s']:.0f} "
                     f"| {run['achieved_tflops']:.2f} | {mfu} | {_gib(run['peak_memory_bytes'])} "
                     f"| {', '.join(f'{x:.4f}' for x in run['losses'])} |")
    return lines + gpu_check_scale.vllm_markdown(result.get("sleep_mode"), result.get("evaluation"))


def section_markdown(name: str, entry: dict) -> str:
    """One section of the report as markdown (its status line, then its tables)."""
    import gpu_check_env
    import gpu_check_recipe
    import gpu_check_scale

    head = f"## {name}: {entry['status']} ({entry.get('seconds', 0):.0f} s of {entry['budget_s']} s)"
    if entry["status"] != "ok":
        return "\n".join([head, "", str(entry.get("reason", ""))[-2000:], ""])
    result = entry["result"]
    body = {"environment": gpu_check_env.markdown, "divergence": _divergence_lines,
            "recipe_step": gpu_check_recipe.markdown, "label_free_step": gpu_check_recipe.markdown,
            "training": _training_lines,
            "sharded": lambda r: gpu_check_scale.sharded_markdown(r["runs"])}[name](result)
    failures = entry.get("failures") or []
    return "\n".join([head, "", *body, "", "Failures: " + ("; ".join(failures) if failures else "none"), ""])


# ---------------------------------------------------------------- driver


def run_section(name: str, args) -> int:
    """`--section NAME`: run one section in this process and write {result, failures} to --section-json."""
    if args.cpu:
        import torch

        torch.set_num_threads(1)
    function = _sections()[name][0]
    try:
        result, failures = function(Path(args.workdir), "cpu" if args.cpu else "cuda", args.tiny)
        record = {"status": "ok", "result": result, "failures": failures}
    except Exception as error:
        traceback.print_exc()
        record = {"status": "failed", "reason": f"{error!r}\n{traceback.format_exc()[-3000:]}", "failures":
                  [f"{name} raised {error!r}"]}
    Path(args.section_json).write_text(json.dumps(record, indent=2, default=str) + "\n")
    return 0


def _write(report: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="run every section on CPU (smoke test of this script)")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes")
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak bf16 dense TFLOP/s of the device")
    parser.add_argument("--json", default=str(Path(__file__).resolve().parent / "results" / "gpu_check.json"),
                        help="the report, rewritten after every section (default benchmarks/results/gpu_check.json)")
    parser.add_argument("--workdir", default=None, help="keep the models and runs here (default: a temp dir)")
    parser.add_argument("--only", default=None, help="comma-separated sections to run (default: all)")
    parser.add_argument("--budget", action="append", default=[], metavar="SECTION=SECONDS",
                        help="another time budget for a section (repeatable)")
    parser.add_argument("--section", default=None, help=argparse.SUPPRESS)  # internal: one section, in-process
    parser.add_argument("--section-json", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.peak_tflops:
        os.environ["GPU_CHECK_PEAK_TFLOPS"] = str(args.peak_tflops)
    if args.section:
        return run_section(args.section, args)
    import torch

    has_device = args.cpu or torch.cuda.is_available()
    sections = _sections()
    wanted = args.only.split(",") if args.only else list(sections)
    budgets = {name: budget for name, (_, budget, _) in sections.items()}
    for item in args.budget:
        name, _, seconds = item.partition("=")
        if name not in sections or not seconds.replace(".", "", 1).isdigit():
            parser.error(f"--budget {item!r}: expected SECTION=SECONDS with a section of {', '.join(sections)}")
        budgets[name] = float(seconds)
    unknown = set(wanted) - set(sections)
    if unknown:
        parser.error(f"unknown section(s) {sorted(unknown)}; the sections are {', '.join(sections)}")
    report = {"device": "CPU" if args.cpu else (torch.cuda.get_device_name(0) if has_device else "no CUDA device"),
              "torch": torch.__version__, "cuda": torch.version.cuda, "sizes": "tiny" if args.tiny else "full",
              "sections": {}, "skipped": [], "failures": []}
    json_path = Path(args.json)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="atesd-gpu-check-") as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in wanted:
            _, _, needs_device = sections[name]
            budget = budgets[name]
            left = TOTAL_BUDGET_S - (time.perf_counter() - started)
            entry = {"budget_s": budget}
            if needs_device and not has_device:
                entry.update(status="skipped", reason="no CUDA device (run with --cpu for a CPU smoke test)")
            elif left < 5:
                entry.update(status="skipped", reason=f"the check's {TOTAL_BUDGET_S} s were spent")
            else:
                entry.update(_run_in_process(name, args, work, min(budget, left)))
            if entry["status"] == "skipped":
                report["skipped"].append(name)
            report["failures"] += entry.get("failures", [])
            report["sections"][name] = entry
            report["total_s"] = time.perf_counter() - started
            _write(report, json_path)
            print(section_markdown(name, entry), flush=True)
    print(f"skipped: {', '.join(report['skipped']) or 'none'}; failures: "
          f"{'; '.join(report['failures']) or 'none'}; total {report['total_s']:.0f} s; report: {json_path}")
    return 1 if report["failures"] else 0


def _run_in_process(name: str, args, work: Path, timeout: float) -> dict:
    """One section in a child process killed after `timeout` seconds; its entry for the report."""
    import subprocess

    out = work / f"section-{name}.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--section", name, "--section-json", str(out),
               "--workdir", str(work)] + (["--cpu"] if args.cpu else []) + (["--tiny"] if args.tiny else [])
    started = time.perf_counter()
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        tail = (expired.stderr or b"")[-1500:]
        tail = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
        return {"status": "timed_out", "seconds": time.perf_counter() - started,
                "reason": f"killed at its budget of {timeout:g} s; last output:\n{tail}",
                "failures": [f"{name} ran out of its {timeout:g} s"]}
    entry = {"seconds": time.perf_counter() - started}
    if not out.exists():
        return {**entry, "status": "failed", "reason": f"exit {proc.returncode}: {proc.stderr[-2000:]}",
                "failures": [f"{name} exited {proc.returncode} without a result"]}
    return {**entry, **json.loads(out.read_text())}


if __name__ == "__main__":
    sys.exit(main())
