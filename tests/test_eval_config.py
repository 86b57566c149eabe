"""atesd.eval_config and `atesd eval --config`: the shipped benchmark configs, precedence, and an
evaluation-only problem set (answers, no solutions) run end to end on the tiny model."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from atesd.config import ConfigError
from atesd.data import load_problems
from atesd.data import DataError
from atesd.eval_config import EvalConfig, check_complete, load_eval_config, parse_columns, prepare_eval_dir

EVAL_CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "eval"
BENCHMARKS = {
    "aime24.yaml": "HuggingFaceH4/aime_2024",
    "aime25.yaml": "MathArena/aime_2025",
    "hmmt25.yaml": "MathArena/hmmt_feb_2025",
}


def test_every_benchmark_file_in_configs_eval_is_covered_here():
    shipped = {path.name for path in EVAL_CONFIGS.glob("*.yaml")} - {"average12.yaml"}
    assert shipped == set(BENCHMARKS)


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_shipped_benchmark_config_samples_as_the_papers_report_average_at_12(name):
    cfg = load_eval_config(EVAL_CONFIGS / name)
    assert (cfg.k, cfg.thinking, cfg.temperature, cfg.top_p, cfg.top_k) == (12, True, 1.0, 0.95, 0)
    assert cfg.max_new_tokens == 38_912 and cfg.dtype == "bfloat16"
    assert cfg.data == BENCHMARKS[name] and cfg.split == "train"
    assert cfg.columns["problem"] == "problem" and cfg.columns["answer"] == "answer"
    assert cfg.model is None  # given with --model
    with pytest.raises(ConfigError, match=r"model \(--model\)"):
        check_complete(cfg)


def test_overrides_win_over_the_file_and_a_new_data_source_drops_the_files_split(tmp_path):
    cfg = load_eval_config(EVAL_CONFIGS / "aime24.yaml", {"k": 2, "data": "local.jsonl", "model": "m"})
    assert (cfg.k, cfg.data, cfg.split, cfg.model, cfg.temperature) == (2, "local.jsonl", None, "m", 1.0)
    cfg = load_eval_config(EVAL_CONFIGS / "aime24.yaml", {"data": "other/hub", "split": "test"})
    assert cfg.split == "test"


def test_defaults_without_a_file_are_the_eval_flag_defaults():
    assert load_eval_config() == EvalConfig()
    assert (EvalConfig.k, EvalConfig.temperature, EvalConfig.max_new_tokens) == (8, 0.6, 1024)


def test_unknown_key_in_a_file_suggests_the_closest_field(tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text("base: " + str(EVAL_CONFIGS / "average12.yaml") + "\ntemprature: 0.5\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'temprature'; did you mean 'temperature'"):
        load_eval_config(path)


@pytest.mark.parametrize("override, message", [
    ({"k": 0}, "k must be >= 1"),
    ({"dtype": "fp8"}, "'dtype'.*'fp8'"),
    ({"top_p": 0.0}, "top_p must be in"),
    ({"columns": {"question": "q"}}, r"columns: unknown field\(s\) \['question'\]"),
    ({"max_prompt_tokens": 0}, "max_prompt_tokens must be >= 1"),
    ({"on_bad_row": "ignore"}, "'on_bad_row'.*'ignore'"),
])
def test_invalid_values_are_config_errors_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_eval_config(None, override)


def _answer_only_file(path, toy_problems):
    """MathArena-shaped rows: problem_idx, problem, answer; no solution column."""
    rows = [{"problem_idx": i + 1, "problem": p.problem, "answer": p.answer} for i, p in enumerate(toy_problems)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_prepare_eval_dir_writes_the_problems_evaluated_with_stand_in_solutions(tmp_path, toy_problems):
    data = _answer_only_file(tmp_path / "bench.jsonl", toy_problems[:5])
    cfg = load_eval_config(EVAL_CONFIGS / "aime25.yaml",
                           {"data": str(data), "model": "m", "out_dir": str(tmp_path / "ev"), "limit": 3})
    path = prepare_eval_dir(cfg)
    problems = load_problems(path)  # the training validation that run_eval applies accepts them
    assert [p.answer for p in problems] == [p.answer for p in toy_problems[:3]]
    assert all(p.solution == f"\\boxed{{{p.answer}}}" for p in problems)
    written = load_eval_config(tmp_path / "ev" / "eval_config.yaml")
    assert written == cfg


def test_atesd_eval_config_runs_end_to_end_on_an_answer_only_local_file(tiny_model_dir, toy_problems, tmp_path):
    data = _answer_only_file(tmp_path / "bench.jsonl", toy_problems[:4])
    out = tmp_path / "ev"
    done = subprocess.run(
        [sys.executable, "-m", "atesd.cli", "eval", "--config", str(EVAL_CONFIGS / "aime24.yaml"),
         "--model", str(tiny_model_dir), "--data", str(data), "--k", "2", "--max-new-tokens", "8",
         "--dtype", "float32", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "eval.json").read_text())
    assert (report["n_problems"], report["k"]) == (4, 2)
    assert report["sampling"]["temperature"] == 1.0 and report["sampling"]["top_p"] == 0.95  # from the file
    assert report["sampling"]["max_new_tokens"] == 8  # from the flag
    assert report["meta"]["thinking"] is True
    assert (out / "problems.jsonl").is_file() and (out / "samples.jsonl").is_file()


def test_columns_flag_parses_field_column_pairs():
    assert parse_columns("problem=question,answer=final") == {"problem": "question", "answer": "final"}
    assert parse_columns(" id = problem_idx ") == {"id": "problem_idx"}


@pytest.mark.parametrize("value, message", [
    ("problem", r"'problem' is not FIELD=COLUMN"),
    ("problem=", r"'problem=' is not FIELD=COLUMN"),
    ("=question", r"'=question' is not FIELD=COLUMN"),
    ("problem=q,,answer=a", r"'' is not FIELD=COLUMN"),
    ("question=problem", r"unknown field 'question'; expected FIELD=COLUMN.*problem, solution, answer"),
    ("answer=a,answer=b", r"field 'answer' is mapped twice"),
])
def test_malformed_columns_flag_is_a_config_error_naming_the_flag_and_the_part(value, message):
    with pytest.raises(ConfigError, match=message) as caught:
        parse_columns(value)
    assert str(caught.value).startswith(f"--columns {value!r}: ") and "\n" not in str(caught.value)


def test_prepare_eval_dir_skips_bad_rows_only_when_asked(tmp_path, toy_problems):
    data = _answer_only_file(tmp_path / "bench.jsonl", toy_problems[:3])
    with open(data, "a") as handle:
        handle.write(json.dumps({"problem_idx": 9, "problem": "no answer"}) + "\n")
    cfg = load_eval_config(None, {"data": str(data), "model": "m", "out_dir": str(tmp_path / "ev"),
                                  "columns": {"id": "problem_idx"}})
    with pytest.raises(DataError, match=r"bench\.jsonl:4: field 'answer'"):
        prepare_eval_dir(cfg)
    path = prepare_eval_dir(load_eval_config(None, {**cfg.__dict__, "on_bad_row": "skip"}))
    assert [p.id for p in load_problems(path)] == ["1", "2", "3"]
