"""build_toy_world: deterministic, cached, atomic, and usable on any problem file."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from atesd.data import Problem, load_problems, write_problems
from atesd.toy import build
from atesd.toy.build import ToyWorldConfig, build_toy_world, world_splits
from atesd.toy.warmstart import WarmStartConfig

TINY = ToyWorldConfig(preset="toy-test", n_train=120, n_val=10, n_test=10, vocab_size=320, threads=1,
                      warm_start=WarmStartConfig(steps=3, batch_size=4, bucket_batches=2, wrong_prefix_prob=0.5))


def test_same_seed_builds_the_same_data_and_weights(tmp_path):
    first = build_toy_world(TINY, out=tmp_path / "a", progress=False)
    second = build_toy_world(TINY, out=tmp_path / "b", progress=False)
    other = build_toy_world(TINY, out=tmp_path / "c", seed=1, progress=False)
    for name in ("train", "val", "test"):
        assert world_splits(first)[name].read_bytes() == world_splits(second)[name].read_bytes()
    a, b, c = (load_file(w / "model.safetensors") for w in (first, second, other))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert any(a[k].shape != c[k].shape or not (a[k] == c[k]).all() for k in a)


def test_world_loads_offline_and_its_splits_are_disjoint(tmp_path):
    world = build_toy_world(TINY, out=tmp_path / "w", progress=False)
    AutoModelForCausalLM.from_pretrained(world)
    assert AutoTokenizer.from_pretrained(world).eos_token == "<|im_end|>"
    splits = {name: load_problems(path) for name, path in world_splits(world).items()}
    assert [len(splits[n]) for n in ("train", "val", "test")] == [120, 10, 10]
    texts = [{p.problem for p in splits[n]} for n in ("train", "val", "test")]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    assert {p.difficulty for p in splits["test"]} == {1, 2, 3, 4, 5}
    large = load_problems(world / "data" / f"{build.LARGE_TEST}.jsonl")  # n_test per level, levels 2-5
    assert sorted(p.difficulty for p in large) == [level for level in (2, 3, 4, 5) for _ in range(10)]
    assert not {p.problem for p in large} & set().union(*texts) and len({p.problem for p in large}) == 40
    record = json.loads((world / "world.json").read_text())
    assert record["key"] == TINY.cache_key() and record["config"]["preset"] == "toy-test"


def test_second_build_comes_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ATESD_CACHE", str(tmp_path / "cache"))
    world = build_toy_world(TINY, progress=False)
    assert world == tmp_path / "cache" / "toy" / TINY.cache_key()
    stamp = (world / "model.safetensors").stat().st_mtime_ns
    assert build_toy_world(TINY, progress=False) == world
    assert (world / "model.safetensors").stat().st_mtime_ns == stamp
    assert build_toy_world(TINY, progress=False, seed=1) != world


def test_a_failed_build_leaves_neither_a_half_world_nor_a_staging_dir(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(build, "train_supervised", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_toy_world(TINY, out=tmp_path / "w", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_overwrite_a_directory_that_is_not_a_toy_world(tmp_path):
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        build_toy_world(TINY, out=tmp_path / "w", progress=False)


def test_generic_path_builds_from_any_problem_file(tmp_path):
    problems = [
        Problem(id=f"p{i}", problem=f"Tom has {i} apples and buys {i + 2} more. How many apples?",
                solution=f"Tom starts with {i} apples.\n\nHe buys {i + 2} more, so {i} + {i + 2} = {2 * i + 2}."
                         f"\n\nThe answer is \\boxed{{{2 * i + 2}}}.",
                answer=str(2 * i + 2))
        for i in range(40)
    ]
    write_problems(tmp_path / "apples.jsonl", problems)
    world = build_toy_world(TINY, data=str(tmp_path / "apples.jsonl"), out=tmp_path / "w", progress=False)
    tokenizer = AutoTokenizer.from_pretrained(world)
    assert "Ġapples" in tokenizer.get_vocab()  # learnt on that file
    splits = {name: load_problems(path) for name, path in world_splits(world).items()}
    assert sorted(p.id for s in splits.values() for p in s) == sorted(p.id for p in problems)
    assert len(splits["test"]) == len(splits["val"]) == 4


def test_the_default_world_ships_with_the_package_and_is_the_codes_default(monkeypatch, tmp_path):
    monkeypatch.setenv("ATESD_CACHE", str(tmp_path / "empty-cache"))
    cfg = ToyWorldConfig(preset="toy-1m")
    world = build.shipped_world(cfg.cache_key())
    assert world is not None, ("no shipped world has the key of the code's default configuration: the code now "
                               "builds another world; rebuild it (atesd toy build --rebuild) and ship it")
    assert build_toy_world("toy-1m", progress=False) == world  # returned, not built
    assert not (tmp_path / "empty-cache").exists()
    record = json.loads((world / "world.json").read_text())
    assert record["config"] == json.loads(json.dumps(cfg.recorded(), default=str))
    assert record["split_sizes"] == {"train": 20000, "val": 200, "test": 500}
    assert {len(load_problems(path)) for path in world_splits(world).values()} == {20000, 200, 500}
    tokenizer = AutoTokenizer.from_pretrained(world)
    model = AutoModelForCausalLM.from_pretrained(world)
    assert len(tokenizer) == record["vocab_size"] and model.num_parameters() == record["parameters"]
    held = {p.problem for path in world_splits(world).values() for p in load_problems(path)}
    write_problems(tmp_path / "large.jsonl", build.large_test_split(held, cfg))  # what a build of it writes
    assert (tmp_path / "large.jsonl").read_bytes() == (world / "data" / f"{build.LARGE_TEST}.jsonl").read_bytes()
    copied = build_toy_world("toy-1m", out=tmp_path / "copy", progress=False)
    assert (copied / "model.safetensors").read_bytes() == (world / "model.safetensors").read_bytes()


def test_a_killed_builds_staging_folder_is_removed_by_the_next_build(tmp_path):
    stale = tmp_path / ".w.building-999999999"
    stale.mkdir()
    (stale / "model.safetensors").write_text("half")
    build_toy_world(TINY, out=tmp_path / "w", progress=False)
    assert not stale.exists() and (tmp_path / "w" / "world.json").is_file()


def _wordy_problems(n: int) -> list[Problem]:
    return [Problem(id=f"p{i}", problem=f"Tom has {i} apples and buys {i + 2} more. How many apples?",
                    solution=("Tom starts with some apples and we add the ones he buys to them carefully.\n\n"
                              f"He buys {i + 2} more, so {i} + {i + 2} = {2 * i + 2}.\n\nThe answer is "
                              f"\\boxed{{{2 * i + 2}}}."), answer=str(2 * i + 2), difficulty=1 + i % 3)
            for i in range(n)]


def test_a_world_on_a_users_file_is_sized_to_the_seconds_left():
    from atesd.toy.budget import MAX_STEPS, MIN_STEPS, data_tokenizer, sized, warm_start_steps

    assert warm_start_steps(1.0, 0.5) == MIN_STEPS and warm_start_steps(1e6, 0.5) == MAX_STEPS
    assert warm_start_steps(300.0, 0.5) == 600
    cfg = ToyWorldConfig(preset="toy-test", data=None)
    tokenizer, vocab, per_example = data_tokenizer(cfg, _wordy_problems(60))
    assert vocab == 512 and per_example > 30 and "Ġapples" in tokenizer.get_vocab()
    planned = sized(cfg, vocab, 600)
    assert planned.warm_start.steps == 600 and planned.vocab_size == 512 and planned.warm_start.warmup_steps == 50
    assert sized(cfg, vocab, 100).warm_start.warmup_steps == 10


def test_max_level_keeps_the_easier_levels_of_a_file_and_is_another_world(tmp_path):
    write_problems(tmp_path / "wordy.jsonl", _wordy_problems(60))
    cfg = ToyWorldConfig(preset="toy-test", data=str(tmp_path / "wordy.jsonl"))
    easier = build.file_problems(replace(cfg, max_level=2))
    assert len(easier) == 40 and max(p.difficulty for p in easier) == 2
    assert replace(cfg, max_level=2).cache_key() != cfg.cache_key() and "max_level" not in cfg.recorded()
    with pytest.raises(ValueError, match="need at least 10 problems.*difficulty <= 0"):
        build.file_problems(replace(cfg, max_level=0))
    write_problems(tmp_path / "flat.jsonl", [replace(p, difficulty=None) for p in _wordy_problems(20)])
    with pytest.raises(ValueError, match=r"flat.jsonl: max_level 2 needs a difficulty on every problem; problem 'p0'"):
        build.file_problems(replace(cfg, data=str(tmp_path / "flat.jsonl"), max_level=2))
    with pytest.raises(ValueError, match="max_level keeps the easier levels of a problem file"):
        ToyWorldConfig(max_level=2)


def test_a_reveal_rounding_other_than_the_floor_is_another_world():
    from atesd.prompts import PromptConfig

    nearest = ToyWorldConfig(preset="toy-1m", prompts=PromptConfig(reveal_rounding="nearest"))
    assert nearest.cache_key() != ToyWorldConfig(preset="toy-1m").cache_key()
    assert nearest.recorded()["prompts"]["reveal_rounding"] == "nearest"
