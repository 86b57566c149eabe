"""The Python API (`from atesd import ...`): light to import, its names survive the submodules of the
same name, toy names work, results print short, and README.md's example runs as written."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_import_atesd_is_light_and_exports_the_api_lazily():
    code = ("import sys, atesd; assert 'torch' not in sys.modules and 'transformers' not in sys.modules; "
            "from atesd import TrainConfig, load_config, train, evaluate; print(train.__module__, evaluate.__module__)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["atesd.api", "atesd.api"]


def test_the_api_names_survive_importing_the_modules_of_the_same_name():
    import atesd
    import atesd.evaluate  # noqa: F401  (the module)
    from atesd.train import TrainResult  # noqa: F401  (loads the module atesd.train)
    from atesd import evaluate, train

    assert callable(train) and train.__module__ == "atesd.api" and atesd.train is train
    assert callable(evaluate) and evaluate.__module__ == "atesd.api"
    assert sys.modules["atesd.train"].train is not train  # the loop itself, still importable


def test_evaluate_takes_toy_names_and_its_report_prints_short(tmp_path):
    from atesd import evaluate

    report = evaluate("toy:toy-1m", "toy:test", k=2, limit=3, max_new_tokens=8, out_dir=str(tmp_path), progress=False)
    assert report.n_problems == 3 and (tmp_path / "eval.json").is_file()
    assert "samples=" not in repr(report) and "per_problem_accuracy" not in repr(report)


def _readme_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index("### Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs_on_the_toy_world(tmp_path):
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    proc = subprocess.run([sys.executable, "-c", _readme_example()], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "trained 3 step(s)" in proc.stdout and "trained model: runs/api/final" in proc.stdout
    assert re.search(r"Average@8 on the first 32 test problems: \d+\.\d%", proc.stdout), proc.stdout
    assert (tmp_path / "runs" / "api" / "final" / "model.safetensors").is_file()
    assert "TrainResult(output_dir=" in proc.stdout and "Qwen3" not in proc.stdout  # the repr skips the model
