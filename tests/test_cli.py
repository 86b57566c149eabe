"""The command line: real subprocesses, clear one-line errors, no tracebacks."""

import json
import subprocess
import sys

from atesd.data import write_problems


def _atesd(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "atesd.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=600)


def test_eval_writes_eval_json_with_the_documented_keys(tiny_model_dir, toy_problems, tmp_path):
    data = tmp_path / "test.jsonl"
    write_problems(data, toy_problems[:6])
    proc = _atesd("eval", "--model", tiny_model_dir, "--data", data, "--k", 2, "--out", tmp_path / "ev",
                  "--max-new-tokens", 8)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "ev" / "eval.json").read_text())
    for key in ("average_at_k", "pass_at_k", "maj_at_k", "ci95", "per_difficulty", "n_problems", "k"):
        assert key in report
    assert report["n_problems"] == 6 and report["k"] == 2


def test_bad_data_file_gives_one_line_per_bad_row_and_no_traceback(tiny_model_dir, tmp_path):
    data = tmp_path / "bad.jsonl"
    good = {"id": "a", "problem": "p", "solution": "s \\boxed{1}"}
    data.write_text("\n".join([json.dumps(good), "{not json", json.dumps({"id": "c", "problem": "p"})]) + "\n")
    proc = _atesd("eval", "--model", tiny_model_dir, "--data", data, "--k", 1, "--out", tmp_path / "ev")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "bad.jsonl:2" in proc.stderr and "bad.jsonl:3" in proc.stderr and "solution" in proc.stderr


def test_train_rejects_an_unknown_override_with_a_suggestion(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("model:\n  name_or_path: m\ndata:\n  train: t.jsonl\n")
    proc = _atesd("train", "--config", config, "exposure.hold_step=4")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "did you mean 'exposure.hold_steps'" in proc.stderr
