"""atesd.checkpoint: log truncation on resume survives what a killed run leaves behind; two runs
never share a folder."""

import json
import logging

import pytest

from atesd.checkpoint import RunDir, check_output_dir, move_aside


def _lines(*records, tail=""):
    return "".join(json.dumps(r) + "\n" for r in records) + tail


def test_truncate_logs_keeps_steps_before_the_checkpoint_and_drops_a_half_written_last_line(tmp_path, caplog):
    run = RunDir(tmp_path)
    (tmp_path / "metrics.jsonl").write_text(_lines({"step": 0}, {"step": 1}, {"step": 2}, tail='{"step": 3, "tra'))
    (tmp_path / "exposure.jsonl").write_text(_lines({"step": 0, "event": "decision"}, tail='{"step": 1, "ev'))
    with caplog.at_level(logging.WARNING, logger="atesd.checkpoint"):
        run.truncate_logs(2)
    assert (tmp_path / "metrics.jsonl").read_text() == _lines({"step": 0}, {"step": 1})
    assert (tmp_path / "exposure.jsonl").read_text() == _lines({"step": 0, "event": "decision"})
    assert caplog.text == ""  # a cut-off last line is what a kill leaves: no warning
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints", "exposure.jsonl", "metrics.jsonl"]


def test_truncate_logs_drops_a_bad_line_elsewhere_with_a_warning_naming_it(tmp_path, caplog):
    run = RunDir(tmp_path)
    path = tmp_path / "metrics.jsonl"
    path.write_text(_lines({"step": 0}) + "garbage\n[1, 2]\n" + _lines({"step": 1}, {"step": 5}))
    with caplog.at_level(logging.WARNING, logger="atesd.checkpoint"):
        run.truncate_logs(3)
    assert path.read_text() == _lines({"step": 0}, {"step": 1})
    assert f"{path}:2: dropped a line that is not a JSON object: garbage" in caplog.text
    assert f"{path}:3: dropped a line that is not a JSON object: [1, 2]" in caplog.text


def test_truncate_logs_on_another_process_leaves_the_files_alone(tmp_path):
    RunDir(tmp_path)
    text = _lines({"step": 0}, tail="{half")
    (tmp_path / "metrics.jsonl").write_text(text)
    RunDir(tmp_path, is_main=False).truncate_logs(0)
    assert (tmp_path / "metrics.jsonl").read_text() == text


def test_a_new_run_into_a_folder_holding_one_stops_naming_the_folder_and_both_ways_out(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(_lines({"step": 0}))
    with pytest.raises(FileExistsError) as err:
        check_output_dir(tmp_path, resume=False, overwrite=False)
    message = str(err.value)
    assert "\n" not in message and str(tmp_path) in message and "--resume" in message and "--overwrite" in message


def test_a_missing_or_empty_folder_takes_a_new_run_and_resume_or_overwrite_pass_a_full_one(tmp_path):
    check_output_dir(tmp_path / "missing", resume=False, overwrite=False)
    check_output_dir(tmp_path, resume=False, overwrite=False)  # empty
    (tmp_path / "config.yaml").write_text("steps: 1\n")
    check_output_dir(tmp_path, resume=True, overwrite=False)
    check_output_dir(tmp_path, resume=False, overwrite=True)
    with pytest.raises(ValueError, match="exclude each other"):
        check_output_dir(tmp_path, resume=True, overwrite=True)


def test_move_aside_renames_the_old_run_to_a_timestamped_sibling_and_deletes_nothing(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints" / "step-000004").mkdir(parents=True)
    (run / "metrics.jsonl").write_text(_lines({"step": 3}))
    first = move_aside(run)
    assert not run.exists() and first.parent == tmp_path and first.name.startswith("run.old-")
    assert (first / "metrics.jsonl").read_text() == _lines({"step": 3}) and (first / "checkpoints/step-000004").is_dir()
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("steps: 1\n")
    second = move_aside(run)  # the same second: a counter keeps both
    assert second != first and (second / "config.yaml").is_file() and (first / "metrics.jsonl").is_file()
    assert move_aside(tmp_path / "missing") is None
