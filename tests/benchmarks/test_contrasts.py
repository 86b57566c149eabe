"""benchmarks/contrasts.py on the committed bench: the by-difficulty oracle against OPSD as the docs quote it
(+1.0, seed as the unit +1.0 ± 0.1), per seed and per level, and a missing method named."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "docs" / "figures" / "bench-toy" / "bench.json"


def test_contrasts_reproduce_the_oracle_against_opsd_and_name_a_missing_method(tmp_path):
    out = tmp_path / "contrasts.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "contrasts.py"), str(BENCH),
                           "by-difficulty-easy-full:opsd", "no-such-method:opsd", "--out", str(out)],
                          capture_output=True, text=True, check=True)
    oracle, missing = json.loads(out.read_text())["contrasts"]
    assert round(oracle["pooled_mean"], 1) == 1.0 and round(oracle["seed_mean"], 1) == 1.0
    assert oracle["seeds"] == 3 and 0.1 < oracle["seed_se"] < 0.2 and set(oracle["by_seed"]) == {"0", "1", "2"}
    assert abs(sum(oracle["by_seed"].values()) / 3 - oracle["seed_mean"]) < 1e-9
    assert sorted(oracle["by_level"]) == ["1", "2", "3", "4", "5"]
    assert missing["missing"] == ["no-such-method"]
    assert "| by-difficulty-easy-full - opsd | +1.00 ± 0.26 |" in proc.stdout
