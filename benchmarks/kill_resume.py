"""Kill/resume soak: a toy run killed with SIGKILL at random moments, resumed each time, must end
exactly where the uninterrupted run ends.

On the tiny `toy-test` world of `atesd.experiments.bench.quick_world()` (cached after the first
build), with a learned exposure controller and reward=counterfactual (so exposure.jsonl carries
decisions, paired credits and controller updates) and a checkpoint after every step:

1. the reference: `atesd train --config ref.yaml`, uninterrupted; the launch-to-first-checkpoint
   time S and the median time between checkpoints D are read off it;
2. the soak: the same config into another directory, started with `atesd train` and after each
   kill resumed with `atesd train --resume`. Each of the `--kills` kills is, at random (seeded):
   a startup kill (probability 1/4: after U(0, S) seconds, during imports, model loading, the
   checkpoint restore or the log truncation) or a training kill (after the attempt has written its
   first new checkpoint, U(0, D) seconds later: anywhere in a step, the log appends or the next
   checkpoint save). A kill "lands" when the process was still running; once an attempt finishes
   on its own the soak stops killing. After the kills, resumes run until the run finishes;
3. the comparison: final weights tensor by tensor (bitwise), metrics.jsonl record by record
   without `timing/*` and `train/tokens_per_s`, and exposure.jsonl byte for byte.

    python benchmarks/kill_resume.py            # 20 kills, 12 steps (several minutes on 2 cores)
    python benchmarks/kill_resume.py --quick    # 3 kills
    python benchmarks/kill_resume.py --kills 50 --seed 3

Prints the markdown section and writes benchmarks/results/kill_resume[-quick].{md,json} (and
`--json PATH`). The exit code is 1 when the soak found a mismatch or an attempt failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_report import progress, publish, table, write_results  # noqa: E402

IGNORED_METRICS = ("timing/", "train/tokens_per_s")  # wall-clock figures differ between any two runs
STARTUP_KILL_SHARE = 0.25
FULL = {"steps": 32, "kills": 20}  # enough steps for 20 training kills to land (≥ 1 step each)
QUICK = {"steps": 12, "kills": 3}
EXPOSURE = ("exposure:\n  policy: learned\n  reward: counterfactual\n  hold_steps: 2\n  decisions_per_update: 2\n"
            "  probe_size: 4\n  credit_examples: 2\n  credit_refresh_steps: 3\n")


def write_config(path: Path, world: Path, train_file: Path, out: Path, steps: int) -> Path:
    """The run's YAML: the shape of tests/test_train.py's runs, a checkpoint after every step."""
    path.write_text(
        f"model:\n  name_or_path: {world}\ndata:\n  train: {train_file}\n"
        "rollout:\n  max_new_tokens: 12\n  temperature: 1.0\n  top_p: 1.0\n  top_k: 0\n"
        f"optim:\n  lr: 0.01\n  max_grad_norm: 1.0\nsteps: {steps}\nprompts_per_step: 4\n"
        f"save_every: 1\nkeep_checkpoints: 2\nprogress: false\noutput_dir: {out}\n{EXPOSURE}")
    return path


def latest_checkpoint(run: Path) -> int:
    """The step of the newest complete checkpoint in `run` (0 when there is none)."""
    steps = [int(p.name.split("-")[1]) for p in (run / "checkpoints").glob("step-*") if (p / "components.pt").exists()]
    return max(steps, default=0)


def _launch(config: Path, resume: bool, env: dict, log: Path) -> subprocess.Popen:
    """`atesd train` in a child process, its output into `log` (a pipe could fill and stall it)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as handle:
        return subprocess.Popen(_command(config, resume), env=env, stdout=handle, stderr=subprocess.STDOUT)


def _tail(log: Path, chars: int = 3000) -> str:
    return log.read_bytes().decode(errors="replace")[-chars:] if log.exists() else ""


def _command(config: Path, resume: bool) -> list[str]:
    return [sys.executable, "-m", "atesd.cli", "train", "--config", str(config), *(["--resume"] if resume else [])]


def reference_run(config: Path, out: Path, env: dict, log: Path) -> dict:
    """The uninterrupted run, timed: total seconds, S (launch → first checkpoint), D (median gap)."""
    started = time.monotonic()
    proc = _launch(config, False, env, log)
    seen: dict[int, float] = {}
    while proc.poll() is None:
        step = latest_checkpoint(out)
        if step and step not in seen:
            seen[step] = time.monotonic() - started
        time.sleep(0.02)
    if proc.returncode != 0:
        raise RuntimeError(f"the reference run failed (exit {proc.returncode}):\n{_tail(log)}")
    times = [seen[s] for s in sorted(seen)]
    gaps = [b - a for a, b in zip(times, times[1:])]
    return {"total_s": time.monotonic() - started, "startup_s": times[0] if times else 1.0,
            "step_s": statistics.median(gaps) if gaps else 1.0}


def _attempt(config: Path, out: Path, env: dict, resume: bool, kill: dict | None, log: Path) -> dict:
    """One process; with `kill`, SIGKILL it at the drawn moment. Returns what happened."""
    before = latest_checkpoint(out)
    started = time.monotonic()
    proc = _launch(config, resume, env, log)
    record = {"resume": resume, "checkpoint_before": before, "kind": kill["kind"] if kill else None}
    if kill is not None:
        deadline = started + kill["delay_s"]
        if kill["kind"] == "training":  # wait for this attempt's first checkpoint, then the delay
            while proc.poll() is None and latest_checkpoint(out) <= before:
                time.sleep(0.01)
            deadline = time.monotonic() + kill["delay_s"]
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        record["landed"] = proc.poll() is None
        if record["landed"]:
            proc.send_signal(signal.SIGKILL)
        record["after_s"] = time.monotonic() - started
    proc.wait()
    record.update(returncode=proc.returncode, checkpoint_after=latest_checkpoint(out),
                  finished=(out / "final" / "model.safetensors").exists() and proc.returncode == 0)
    if proc.returncode not in (0, -signal.SIGKILL):
        record["error"] = _tail(log)
    return record


def soak(config: Path, out: Path, env: dict, kills: int, rng: random.Random, timing: dict,
         max_resumes: int = 100) -> list[dict]:
    """Start, kill `kills` times (fewer if the run finishes first), resume until finished. Each
    attempt's output goes to <out>.logs/attempt-NN.log."""
    attempts: list[dict] = []
    logs = out.parent / f"{out.name}.logs"
    for index in range(kills):
        startup = rng.random() < STARTUP_KILL_SHARE
        kill = ({"kind": "startup", "delay_s": rng.uniform(0, timing["startup_s"])} if startup else
                {"kind": "training", "delay_s": rng.uniform(0, timing["step_s"])})
        attempts.append(_attempt(config, out, env, index > 0, kill, logs / f"attempt-{len(attempts) + 1:02d}.log"))
        progress(f"kill_resume: kill {index + 1}/{kills} ({kill['kind']}, {kill['delay_s']:.2f} s): "
                 f"{'landed' if attempts[-1]['landed'] else 'the run had finished'}, checkpoint "
                 f"{attempts[-1]['checkpoint_before']} → {attempts[-1]['checkpoint_after']}")
        if attempts[-1]["finished"] or "error" in attempts[-1]:
            return attempts
    while len(attempts) < kills + max_resumes:
        attempts.append(_attempt(config, out, env, bool(attempts), None, logs / f"attempt-{len(attempts) + 1:02d}.log"))
        if attempts[-1]["finished"] or "error" in attempts[-1]:
            break
    return attempts


def _metrics(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").exists() else []
    return [{k: v for k, v in json.loads(line).items() if not k.startswith(IGNORED_METRICS)} for line in lines]


def compare_runs(reference: Path, other: Path) -> list[str]:
    """Every way `other` differs from `reference`: final weights (bitwise, per tensor), metrics.jsonl
    (per record, timing keys left out) and exposure.jsonl (bytes); [] when identical."""
    from safetensors.torch import load_file

    mismatches = []
    weights = [run / "final" / "model.safetensors" for run in (reference, other)]
    if not all(path.exists() for path in weights):
        mismatches.append(f"weights: missing {', '.join(str(p) for p in weights if not p.exists())}")
    else:
        a, b = (load_file(path) for path in weights)
        if a.keys() != b.keys():
            mismatches.append(f"weights: tensor names differ ({sorted(a.keys() ^ b.keys())[:5]})")
        mismatches += [f"weights: {name} differs" for name in sorted(a.keys() & b.keys())
                       if a[name].dtype != b[name].dtype or not a[name].equal(b[name])]
    ours, theirs = _metrics(reference), _metrics(other)
    if len(ours) != len(theirs):
        mismatches.append(f"metrics.jsonl: {len(ours)} records in the reference, {len(theirs)} here")
    for x, y in zip(ours, theirs):
        if x != y:
            keys = sorted(k for k in x.keys() | y.keys() if x.get(k, "absent") != y.get(k, "absent"))
            mismatches.append(f"metrics.jsonl: step {x.get('step')} differs in {', '.join(keys[:6])}")
    exposure = [run / "exposure.jsonl" for run in (reference, other)]
    a_text, b_text = (p.read_bytes() if p.exists() else b"" for p in exposure)
    if a_text != b_text:
        a_lines, b_lines = a_text.splitlines(), b_text.splitlines()
        first = next((i for i, (x, y) in enumerate(zip(a_lines, b_lines)) if x != y), min(len(a_lines), len(b_lines)))
        mismatches.append(f"exposure.jsonl: differs from line {first + 1} ({len(a_lines)} vs {len(b_lines)} lines)")
    return mismatches


def run(sizes: dict, seed: int, threads: int, work_dir: Path) -> dict:
    from atesd.experiments.bench import quick_world
    from atesd.toy.build import world_splits

    progress("kill_resume: the toy-test world (built once, then cached)")
    world = quick_world()
    train_file = world_splits(world)["train"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "TOKENIZERS_PARALLELISM": "false"}
    ref_dir, soak_dir = work_dir / "uninterrupted", work_dir / "killed"
    ref_config = write_config(work_dir / "uninterrupted.yaml", world, train_file, ref_dir, sizes["steps"])
    soak_config = write_config(work_dir / "killed.yaml", world, train_file, soak_dir, sizes["steps"])
    progress(f"kill_resume: the uninterrupted run ({sizes['steps']} steps)")
    timing = reference_run(ref_config, ref_dir, env, work_dir / "uninterrupted.log")
    progress(f"kill_resume: {timing['total_s']:.1f} s; first checkpoint after {timing['startup_s']:.1f} s, "
             f"then one every {timing['step_s']:.2f} s")
    started = time.monotonic()
    attempts = soak(soak_config, soak_dir, env, sizes["kills"], random.Random(seed), timing)
    failed = [a for a in attempts if "error" in a]
    finished = bool(attempts) and attempts[-1]["finished"]
    mismatches = [f"attempt {attempts.index(a) + 1} failed (exit {a['returncode']}): "
                  f"{a['error'].strip().splitlines()[-1] if a['error'].strip() else ''}" for a in failed]
    if not finished and not failed:
        mismatches.append("the killed run never finished")
    if finished:
        mismatches += compare_runs(ref_dir, soak_dir)
    killed = [a for a in attempts if a["kind"] is not None]
    return {
        "benchmark": "kill_resume", "sizes": sizes, "seed": seed, "threads": threads, "timing": timing,
        "kills_attempted": len(killed), "kills_landed": sum(a["landed"] for a in killed),
        "kills_landed_by_kind": {kind: sum(a["landed"] for a in killed if a["kind"] == kind)
                                 for kind in ("startup", "training")},
        "resumes": sum(a["resume"] for a in attempts), "finished": finished, "soak_s": time.monotonic() - started,
        "mismatches": mismatches, "identical": finished and not mismatches, "attempts": attempts,
    }


def to_markdown(result: dict) -> str:
    s = result["sizes"]
    rows = [[i + 1, a["kind"] or "—", "yes" if a.get("landed") else "no" if a["kind"] else "—",
             f"{a['after_s']:.2f}" if "after_s" in a else "—", a["checkpoint_before"], a["checkpoint_after"],
             a["returncode"]] for i, a in enumerate(result["attempts"])]
    verdict = ("**identical**: final weights bitwise, metrics.jsonl (timing left out) and exposure.jsonl byte "
               "for byte" if result["identical"] else f"**{len(result['mismatches'])} mismatch(es)**:\n\n"
               + "\n".join(f"- {m}" for m in result["mismatches"]))
    return "\n".join([
        "### Kill/resume soak (toy-test world, learned exposure, reward=counterfactual)",
        "",
        f"{s['steps']} steps, a checkpoint after each, 4 prompts/step × up to 12 tokens; {result['kills_attempted']} "
        f"SIGKILLs drawn with seed {result['seed']} ({result['kills_landed']} landed before the run finished: "
        f"{result['kills_landed_by_kind']['startup']} during startup, {result['kills_landed_by_kind']['training']} "
        f"during training), {result['resumes']} resumes, {result['soak_s']:.0f} s; the uninterrupted run took "
        f"{result['timing']['total_s']:.1f} s.",
        "",
        table(["attempt", "kill", "landed", "killed after s", "checkpoint before", "after", "exit code"], rows),
        "",
        f"Against the uninterrupted run: {verdict}",
    ])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK['kills']} kills instead of {FULL['kills']}")
    parser.add_argument("--kills", type=int, default=None, help="number of SIGKILLs to attempt")
    parser.add_argument("--steps", type=int, default=None, help="training steps of the run")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each training process")
    parser.add_argument("--work-dir", default=None, help="keep the runs here (default: a temporary directory)")
    parser.add_argument("--json", default=None, help="also write the result dict here")
    args = parser.parse_args(argv)
    sizes = dict(QUICK if args.quick else FULL)
    for key in ("kills", "steps"):
        if getattr(args, key) is not None:
            sizes[key] = getattr(args, key)
    with tempfile.TemporaryDirectory(prefix="atesd-kill-resume-") as tmp:
        work_dir = Path(args.work_dir or tmp)
        work_dir.mkdir(parents=True, exist_ok=True)
        result = run(sizes, args.seed, args.threads, work_dir)
    result = publish(result, to_markdown, args.json)
    write_results("kill_resume-quick" if args.quick else "kill_resume", result["markdown"], result)
    return result


if __name__ == "__main__":
    sys.exit(0 if main()["identical"] else 1)
