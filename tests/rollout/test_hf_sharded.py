"""HF rollouts of an FSDP2-sharded policy on 2 CPU processes (gloo): one all-gather per FSDP unit
per generation call, not one per unit and decoded token (issue 26 item 4), and the same greedy
tokens as the unsharded model. The worker is tests/scripts/dist_generate.py (~20 s)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.parametrize("wrap", ["plain", "peft"])
def test_fsdp2_generation_gathers_each_unit_once_per_call(tiny_model_dir, tmp_path, wrap, free_port):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port), str(REPO / "tests" / "scripts" / "dist_generate.py"), str(tiny_model_dir),
               str(tmp_path), wrap]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-6000:]
    for rank in (0, 1):
        record = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert record["decoded_tokens"] > 1
        assert record["all_gathers"] == record["units"]  # 3 units (2 layers, root), 12 tokens: 3, not ~36
        assert record["first_call_all_gathers"] <= 2 * record["units"]  # + the root's one-time initialisation
        assert record["same_as_unsharded"]
        assert record["resharded"] and record["settings_restored"]
        assert record["layers_reshard_after_forward"] == [True, True]  # training's setting is back
