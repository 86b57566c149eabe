"""atesd.checkpoint.RunDir: log truncation on resume survives what a killed run leaves behind."""

import json
import logging

from atesd.checkpoint import RunDir


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
