"""benchmarks/gpu_check.sh without a GPU: the no-install mode ends in seconds with the environment
section and every GPU section reported skipped, never calling make or pip; a section that outlives
its budget is killed and the sections that finished stay in the JSON report."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _trap_bin(tmp_path: Path) -> Path:
    """`make` and `pip` on PATH that record being called (and fail): the check must not use them."""
    trap = tmp_path / "bin"
    trap.mkdir()
    for name in ("make", "pip", "pip3"):
        (trap / name).write_text(f"#!/bin/sh\necho called >> {tmp_path / 'called'}-{name}\nexit 99\n")
        (trap / name).chmod(0o755)
    return trap


def test_no_gpu_runs_the_environment_section_skips_the_rest_and_exits_0(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1",
           "PATH": f"{_trap_bin(tmp_path)}:{os.environ['PATH']}"}
    started = time.perf_counter()
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--json", str(tmp_path / "r.json")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert time.perf_counter() - started < 120
    assert not list(tmp_path.glob("called-*"))  # neither make nor pip
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["skipped"] == ["divergence", "recipe_step", "label_free_step", "training", "sharded"]
    environment = report["sections"]["environment"]
    assert environment["status"] == "ok" and environment["failures"] == []
    assert environment["result"]["torch_in_range"] and environment["result"]["needs_newer_torch"] == []
    assert environment["result"]["atesd_imports"]["failed"] == {}
    assert "skipped: divergence, recipe_step, label_free_step, training, sharded" in proc.stdout


def test_a_section_past_its_budget_is_killed_and_the_finished_ones_stay_in_the_report(tmp_path):
    command = [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--cpu", "--tiny", "--only",
               "environment,divergence", "--budget", "divergence=0.5", "--json", str(tmp_path / "r.json")]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")})
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["sections"]["environment"]["status"] == "ok"
    assert report["sections"]["divergence"]["status"] == "timed_out"
    assert report["failures"] == ["divergence ran out of its 0.5 s"]
