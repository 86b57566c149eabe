"""The command line: real subprocesses, clear one-line errors, no tracebacks."""

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from atesd.data import write_problems

REPO = Path(__file__).resolve().parents[1]


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


def test_eval_takes_toy_names_for_the_model_and_the_data(tmp_path):
    proc = _atesd("eval", "--model", "toy:toy-1m", "--data", "toy:test", "--limit", 3, "--k", 1,
                  "--max-new-tokens", 8, "--out", tmp_path / "ev")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert report["n_problems"] == 3 and report["meta"]["data"].endswith("toy-1m/data/test.jsonl")


def test_eval_protocol_flag_reproduces_the_shipped_bases_committed_per_problem_figures(tmp_path):
    # the first 32 of the 500 problems (one generation call of 256 samples): each problem's accuracy
    # equals the bench's base row (31.5% over all 500; the full run, ~4 min, is in README.md)
    proc = _atesd("eval", "--model", "toy:toy-1m", "--protocol", "toy-avg8", "--limit", 32, "--out", tmp_path / "ev")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("protocol toy-avg8: sampled Average@8 on the first 500 test problems")
    bench = json.loads((REPO / "docs" / "figures" / "bench-toy" / "bench.json").read_text())
    [base, *_] = [r for r in bench["results"] if r["method"] == "base"]
    assert base["test"]["meta"]["protocol"]["name"] == "toy-avg8" and round(base["test"]["average_at_k"], 3) == 0.315
    ours = json.loads((tmp_path / "ev" / "eval.json").read_text())["per_problem_accuracy"]
    assert len(ours) == 32 and ours == {key: base["test"]["per_problem_accuracy"][key] for key in ours}


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


def _one_error_line(proc, command):
    """The process failed the documented way: exit code 2, no traceback, one `atesd CMD: error:` line."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith(f"atesd {command}: error: ")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def _train_config(tmp_path, model, data, extra=""):
    config = tmp_path / "c.yaml"
    config.write_text(f"model:\n  name_or_path: {model}\ndata:\n  train: {data}\n{extra}"
                      f"steps: 1\nprompts_per_step: 2\nprogress: false\noutput_dir: {tmp_path / 'run'}\n")
    return config


def test_eval_maps_columns_skips_bad_rows_and_drops_long_prompts_with_warnings(tiny_model_dir, toy_problems, tmp_path):
    data = tmp_path / "renamed.jsonl"
    rows = [{"id": p.id, "question": p.problem, "final": p.answer} for p in toy_problems[:3]]
    rows.append({"id": "bad", "question": "   ", "final": "1"})  # empty problem: skipped
    rows.append({"id": "long", "question": "1 + " * 500, "final": "1"})  # prompt too long: dropped
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    proc = _atesd("eval", "--model", tiny_model_dir, "--data", data, "--k", 1, "--out", tmp_path / "ev",
                  "--max-new-tokens", 4, "--columns", "problem=question,answer=final", "--on-bad-row", "skip",
                  "--max-prompt-tokens", 200)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert report["n_problems"] == 3 and report["meta"]["max_prompt_tokens"] == 200
    assert f"{data}:4: field 'problem': is empty" in proc.stderr
    assert "dropped 1 row(s) whose student prompt is longer than max_prompt_tokens=200" in proc.stderr
    assert "id 'long': " in proc.stderr


def test_eval_rejects_a_malformed_columns_flag_in_one_line(tmp_path):
    proc = _atesd("eval", "--model", "m", "--data", "d.jsonl", "--columns", "problem=question,answer")
    line = _one_error_line(proc, "eval")
    assert "--columns 'problem=question,answer': 'answer' is not FIELD=COLUMN" in line


def test_eval_with_a_model_directory_that_holds_no_model_is_a_one_line_error(toy_problems, tmp_path):
    data = tmp_path / "test.jsonl"
    write_problems(data, toy_problems[:2])
    (tmp_path / "empty-model").mkdir()
    proc = _atesd("eval", "--model", tmp_path / "empty-model", "--data", data, "--k", 1, "--out", tmp_path / "ev")
    line = _one_error_line(proc, "eval")
    assert f"cannot load the tokenizer of {str(tmp_path / 'empty-model')!r}: " in line


def test_train_never_mixes_two_runs_in_one_folder(tiny_model_dir, toy_problems, tmp_path):
    data = tmp_path / "train.jsonl"
    write_problems(data, toy_problems[:4])
    config = _train_config(tmp_path, tiny_model_dir, data, "rollout:\n  max_new_tokens: 4\n")
    run = tmp_path / "run"
    first = _atesd("train", "--config", config, "steps=2", "save_every=1")
    assert first.returncode == 0, first.stderr
    assert f"trained model: {run / 'final'}" in first.stdout and f"next: atesd report {run}" in first.stdout
    old_metrics = (run / "metrics.jsonl").read_text()

    line = _one_error_line(_atesd("train", "--config", config), "train")  # a second run, same folder
    assert f"output_dir {run} already holds a run" in line and "--resume" in line and "--overwrite" in line
    assert (run / "metrics.jsonl").read_text() == old_metrics

    again = _atesd("train", "--config", config, "--overwrite")
    assert again.returncode == 0, again.stderr
    [aside] = tmp_path.glob("run.old-*")
    assert (aside / "metrics.jsonl").read_text() == old_metrics and (aside / "checkpoints/step-000002").is_dir()
    assert [json.loads(l)["step"] for l in (run / "metrics.jsonl").read_text().splitlines()] == [0]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000001"]


def test_train_resume_with_nothing_to_resume_says_so(tiny_model_dir, toy_problems, tmp_path):
    data = tmp_path / "train.jsonl"
    write_problems(data, toy_problems[:4])
    config = _train_config(tmp_path, tiny_model_dir, data, "rollout:\n  max_new_tokens: 4\n")
    proc = _atesd("train", "--config", config, "--resume")
    assert proc.returncode == 0, proc.stderr
    assert f"{tmp_path / 'run'}: nothing to resume (no checkpoint" in proc.stderr and "starting at step 0" in proc.stderr


def test_train_with_every_row_skipped_stops_on_the_data_before_the_model_loads(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({"problem": "p", "solution": "no box"}) + "\n{broken\n")
    config = _train_config(tmp_path, tmp_path / "no-such-model", data)  # a model load would fail differently
    line = _one_error_line(_atesd("train", "--config", config, "data.on_bad_row=skip"), "train")
    assert f"{data}: no usable rows: 2 skipped" in line
    assert not (tmp_path / "run").exists()


def test_train_with_every_prompt_too_long_stops_after_the_tokenizer_before_the_model(tiny_model_dir, toy_problems,
                                                                                    tmp_path):
    tokenizer_only = tmp_path / "tokenizer-only"  # loading the model from here would raise OSError
    shutil.copytree(tiny_model_dir, tokenizer_only, ignore=shutil.ignore_patterns("*.safetensors", "config.json"))
    data = tmp_path / "train.jsonl"
    write_problems(data, toy_problems[:4])
    config = _train_config(tmp_path, tokenizer_only, data, "  max_prompt_tokens: 5\n")
    line = _one_error_line(_atesd("train", "--config", config), "train")
    assert f"{data}: no usable rows: all 4 prompts are longer than max_prompt_tokens=5" in line


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="needs an environment without vLLM")
def test_train_with_the_vllm_backend_missing_is_a_one_line_error(tiny_model_dir, toy_problems, tmp_path):
    data = tmp_path / "train.jsonl"
    write_problems(data, toy_problems[:4])
    config = _train_config(tmp_path, tiny_model_dir, data, "rollout:\n  backend: vllm\n")
    line = _one_error_line(_atesd("train", "--config", config), "train")
    assert "rollout backend 'vllm' is unavailable" in line


def test_main_turns_division_by_zero_into_one_line_and_lets_other_bugs_through(monkeypatch, capsys):
    from atesd import cli

    add_report, _ = cli.COMMANDS["report"]
    monkeypatch.setitem(cli.COMMANDS, "report", (add_report, lambda args: 1 / len(args.run_dir[:0])))
    assert cli.main(["report", "run"]) == 2
    assert capsys.readouterr().err == "atesd report: error: ZeroDivisionError: division by zero\n"

    def bug(args):
        raise KeyError("a real bug")

    monkeypatch.setitem(cli.COMMANDS, "report", (add_report, bug))
    with pytest.raises(KeyError):
        cli.main(["report", "run"])


def test_one_line_joins_a_multi_line_os_error():
    from atesd.cli import one_line

    error = OSError("m does not appear to have a file named config.json.\nCheckout 'https://x' for files.")
    assert one_line(error) == "m does not appear to have a file named config.json. Checkout 'https://x' for files."


def test_train_and_eval_bad_row_errors_name_the_setting_as_each_command_takes_it(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({"problem": "p", "solution": "\\boxed{1}"}) + "\n"
                    + json.dumps({"problem": "q", "solution": "no box"}) + "\n")
    config = _train_config(tmp_path, tmp_path / "no-such-model", data)  # the data stops the run first
    assert "pass data.on_bad_row=skip to drop them" in _atesd("train", "--config", config).stderr
    line = _one_error_line(_atesd("train", "--config", config, "data.on_bad_row=skip"), "train")
    assert "1 of 2 rows are bad (50.0%: 1 no boxed answer), more than data.max_bad_row_share=0.05" in line
    proc = _atesd("eval", "--model", tmp_path / "no-such-model", "--data", data, "--out", tmp_path / "ev")
    assert "pass --on-bad-row skip to drop them" in proc.stderr
    proc = _atesd("eval", "--model", tmp_path / "no-such-model", "--data", data, "--out", tmp_path / "ev",
                  "--on-bad-row", "skip", "--max-bad-row-share", "0.1")
    assert "more than --max-bad-row-share=0.1" in proc.stderr


def _subparsers(parser, path=()):
    """(command path, parser) for every command and subcommand."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield (*path, name), child
                yield from _subparsers(child, (*path, name))


def test_every_flag_with_a_default_states_it_in_its_help():
    from atesd.cli import build_parser

    missing = []
    for path, parser in _subparsers(build_parser()):
        for action in parser._actions:
            if not action.option_strings or action.help is None or action.dest == "help":
                continue
            if action.default not in (None, False, [], "==SUPPRESS==") and "default" not in action.help:
                missing.append(f"atesd {' '.join(path)} {action.option_strings[-1]}")
            if action.help.strip() == "":
                missing.append(f"atesd {' '.join(path)} {action.option_strings[-1]} (no help)")
        bare = [a.option_strings[-1] for a in parser._actions if a.option_strings and not a.help]
        missing += [f"atesd {' '.join(path)} {flag} (no help)" for flag in bare]
    assert missing == []


def test_version_and_print_config_answer_without_training(tmp_path):
    from atesd import __version__

    assert _atesd("--version").stdout.strip() == f"atesd {__version__}"
    proc = _atesd("train", "--config", REPO / "configs" / "toy-opsd.yaml", "--print-config", "steps=3",
                  f"output_dir={tmp_path / 'run'}")
    assert proc.returncode == 0, proc.stderr
    assert "\nsteps: 3\n" in proc.stdout and "  name_or_path: toy:toy-1m\n" in proc.stdout
    assert "decisions_per_update:" in proc.stdout and not (tmp_path / "run").exists()


def test_diagnose_credit_runs_end_to_end_with_the_automatic_chunk_size(tiny_model_dir, toy_problems, tmp_path):
    data = tmp_path / "train.jsonl"
    write_problems(data, toy_problems[:8])
    proc = _atesd("diagnose", "credit", "--model", tiny_model_dir, "--data", data, "--n", 4, "--probe-size", 2,
                  "--ratios", "0,1", "--out", tmp_path / "credit.json")
    assert proc.returncode == 0, proc.stderr
    table = json.loads((tmp_path / "credit.json").read_text())
    assert table["ratios"] == [0.0, 1.0] and table["n_problems"] == 4


def test_bench_world_flag_names_a_bad_world_in_one_line(tmp_path):
    proc = _atesd("bench", "--world", tmp_path, "--methods", "base", "--out", tmp_path / "b")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"--world '{tmp_path}'" in proc.stderr and "world.json" in proc.stderr
    proc = _atesd("bench", "--world", "toy:no-such-world", "--methods", "base", "--out", tmp_path / "b")
    assert proc.returncode == 2 and "toy:toy-1m-top-down" in proc.stderr
    assert not (tmp_path / "b").exists()  # nothing written before the world is known


def test_bench_world_flag_benches_the_named_world(tmp_path):
    from atesd.toy.paths import toy_world_of

    proc = _atesd("bench", "--quick", "--world", "toy:toy-1m-top-down", "--methods", "base", "--out", tmp_path / "b", cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    bench = json.loads((tmp_path / "b" / "bench.json").read_text())
    world = toy_world_of("toy:toy-1m-top-down")
    assert Path(bench["model_dir"]).resolve() == world.resolve()  # relative to the repository, where it ran
    assert Path(bench["data_dir"]).resolve() == world.resolve() / "data" and not Path(bench["model_dir"]).is_absolute()
