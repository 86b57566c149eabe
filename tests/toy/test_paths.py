"""atesd.toy.paths: one resolver of `toy:` names for every command and the API."""

import shutil
from pathlib import Path

import pytest

from atesd.config import load_config
from atesd.toy.build import build_toy_world
from atesd.toy.paths import resolve_model_and_data, resolve_toy_data, resolve_toy_paths


@pytest.fixture(scope="module")
def shipped():
    return build_toy_world("toy-1m")


def test_a_preset_is_its_world_and_a_split_is_that_worlds_file(shipped):
    model, data = resolve_model_and_data("toy:toy-1m", "toy:test")
    assert Path(model) == shipped and Path(data) == shipped / "data" / "test.jsonl"
    assert resolve_toy_data("toy:test-large", "toy:toy-1m") == str(shipped / "data" / "test-large.jsonl")


def test_names_without_the_prefix_pass_through_unchanged(tmp_path):
    assert resolve_model_and_data(str(tmp_path), "problems.jsonl") == (str(tmp_path), "problems.jsonl")
    assert resolve_toy_data(None, "toy:toy-1m") is None


def test_a_copied_world_given_by_path_resolves_its_own_splits(shipped, tmp_path):
    copy = tmp_path / "my-world"
    shutil.copytree(shipped, copy)
    cfg = resolve_toy_paths(load_config(None, [f"model.name_or_path={copy}", "data.train=toy:train",
                                               "data.val=toy:val"]))
    assert cfg.model.name_or_path == str(copy)
    assert cfg.data.train == str(copy / "data" / "train.jsonl") and cfg.data.val == str(copy / "data" / "val.jsonl")


def test_a_model_that_is_not_a_world_reads_the_shipped_worlds_splits(shipped, tmp_path):
    assert resolve_toy_data("toy:val", str(tmp_path / "final")) == str(shipped / "data" / "val.jsonl")


def test_an_unknown_split_or_preset_names_the_setting_and_the_choices():
    with pytest.raises(ValueError, match=r"data.val='toy:valid'.*choose one of .*toy:test, toy:test-large, toy:train, toy:val"):
        resolve_toy_paths(load_config(None, ["model.name_or_path=toy:toy-1m", "data.train=toy:train",
                                             "data.val=toy:valid"]))
    with pytest.raises(ValueError, match=r"model 'toy:test': unknown toy world 'test'.*toy:toy-1m, toy:toy-1m-top-down"):
        resolve_model_and_data("toy:test", "toy:test")


def test_a_named_world_is_the_shipped_world_its_configuration_builds():
    from atesd.data import load_problems
    from atesd.toy import task
    from atesd.toy.build import SHIPPED_DIR, named_worlds, shipped_world

    config = named_worlds()["toy-1m-top-down"]
    assert shipped_world(config.cache_key()) == SHIPPED_DIR / "toy-1m-top-down"  # the hash test
    model, data = resolve_model_and_data("toy:toy-1m-top-down", "toy:test")
    assert Path(model) == SHIPPED_DIR / "toy-1m-top-down" and Path(data).parent == Path(model) / "data"
    problem = next(p for p in load_problems(data) if p.difficulty == 3)
    assert problem.solution.startswith(f"{problem.answer}=")  # goal-first references
    assert task.solution_order(problem.problem, problem.solution)  # written back as single steps, they are right
