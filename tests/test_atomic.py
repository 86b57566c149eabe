"""atesd.atomic: writes replace their target whole, and folders staged by killed processes are cleaned."""

import os

from atesd import atomic

DEAD_PID = 999_999_999  # above any pid_max: no such process


def test_write_text_replaces_the_file_and_leaves_no_temporary(tmp_path):
    atomic.write_text(tmp_path / "a.txt", "old")
    atomic.write_text(tmp_path / "a.txt", "new")
    assert (tmp_path / "a.txt").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_staging_removes_every_kind_of_staging_folder_a_killed_process_left(tmp_path):
    stale = [tmp_path / f".final.{purpose}-{DEAD_PID}" for purpose in ("saving", "copying", "building")]
    for folder in stale:
        folder.mkdir()
        (folder / "model.safetensors").write_text("half")
    live = tmp_path / f".final.saving-{os.getppid()}"  # another process still at work: kept
    other_target = tmp_path / f".best.saving-{DEAD_PID}"  # another target: not this call's business
    live.mkdir()
    other_target.mkdir()
    (tmp_path / ".final.json.abc.tmp").write_text("a temporary file, not a folder")

    staging = atomic.staging_dir(tmp_path / "final", "saving")
    assert staging == tmp_path / f".final.saving-{os.getpid()}" and staging.is_dir()
    assert not any(folder.exists() for folder in stale)
    assert live.is_dir() and other_target.is_dir() and (tmp_path / ".final.json.abc.tmp").is_file()


def test_replace_dir_puts_the_staged_folder_in_place(tmp_path):
    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "old").write_text("old")
    staging = atomic.staging_dir(tmp_path / "final", "saving")
    (staging / "new").write_text("new")
    atomic.replace_dir(staging, tmp_path / "final")
    assert [p.name for p in (tmp_path / "final").iterdir()] == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]
