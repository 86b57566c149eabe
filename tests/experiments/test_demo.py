"""atesd.experiments.demo: the whole pipeline (world → base eval → training → eval → report) on the tiny quick world."""

import json
from pathlib import Path

from atesd.experiments.bench import quick_world
from atesd.experiments.demo import run_demo, summarise_ratios

CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "toy-atesd.yaml")


def test_summarise_ratios_gives_the_mean_ratio_per_block_of_steps():
    trajectory = [(0, 0.2), (4, 0.4), (100, 1.0), (104, 0.5), (200, 0.1)]
    assert summarise_ratios(trajectory) == ("steps 0-99: 0.30 (2 decisions), steps 100-199: 0.75 (2 decisions), "
                                            "steps 200-299: 0.10 (1 decisions)")


def test_demo_evaluates_before_and_after_on_the_same_problems_and_records_the_learned_ratios(tmp_path, capsys,
                                                                                              monkeypatch):
    monkeypatch.setenv("ATESD_CACHE", str(tmp_path / "cache"))  # the quick world, built here
    world = quick_world()
    overrides = [f"model.name_or_path={world}", f"data.train={world / 'data' / 'train.jsonl'}",
                 f"data.val={world / 'data' / 'val.jsonl'}", "steps=4", "prompts_per_step=2",
                 "exposure.hold_steps=2", "exposure.probe_size=2", "rollout.max_new_tokens=16", "progress=false"]
    summary = run_demo(config=CONFIG, out=str(tmp_path / "demo"), overrides=overrides, n_problems=3, k=2)
    saved = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert saved == json.loads(json.dumps(summary))
    assert (saved["n_problems"], saved["k"]) == (3, 2)
    assert [step for step, _ in saved["reveal_ratios"]] == [0, 2]  # one decision per hold_steps
    assert abs(saved["paired_difference"] - (saved["trained"] - saved["base"])) < 1e-9
    out = capsys.readouterr().out
    assert "| held-out Average@2 | base | after learned |" in out and "paired difference:" in out
    assert "steps 0-99:" in out and (tmp_path / "demo" / "final" / "config.json").is_file()


def test_bench_reference_quotes_last_step_gains_with_their_seed_counts(tmp_path):
    import json

    from atesd.experiments.demo import bench_reference
    from atesd.experiments.protocol import TOY_PROTOCOL

    def run(method, seed, chosen, last=None):
        result = {"method": method, "seed": seed, "test": {"per_problem_accuracy": {"a": chosen, "b": chosen}}}
        if last is not None:
            result["test_last_step"] = {"per_problem_accuracy": {"a": last, "b": last}}
        return result

    bench = {"budget": {"test": TOY_PROTOCOL.to_dict()},
             "results": [run("base", 0, 0.5), run("base", 1, 0.5), run("opsd", 0, 0.5, last=0.75),
                         run("opsd", 1, 0.5, last=0.75), run("atesd", 0, 0.25)]}
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(bench))
    line = bench_reference(path)
    assert "opsd +25.0 (2 seeds)" in line  # the last step's, not the chosen checkpoint's +0.0
    assert "atesd -25.0 (1 seed)" in line  # no last step recorded: the chosen checkpoint's
    bench["budget"]["test"] = {**TOY_PROTOCOL.to_dict(), "seed": 0}
    path.write_text(json.dumps(bench))
    assert bench_reference(path) == ""  # another protocol: nothing to compare with


def test_demo_on_another_world_trains_and_evaluates_on_that_worlds_own_splits(tmp_path, capsys, monkeypatch):
    import yaml

    monkeypatch.setenv("ATESD_CACHE", str(tmp_path / "cache"))
    world = quick_world()
    overrides = ["steps=2", "prompts_per_step=2", "exposure.hold_steps=2", "exposure.probe_size=2",
                 "rollout.max_new_tokens=16", "progress=false"]  # data stay toy:train / toy:val, the config's
    run_demo(config=CONFIG, out=str(tmp_path / "demo"), overrides=overrides, n_problems=2, k=1, world=str(world))
    saved = yaml.safe_load((tmp_path / "demo" / "config.yaml").read_text())
    assert saved["model"]["name_or_path"] == str(world)
    assert saved["data"]["train"] == str(world / "data" / "train.jsonl")
    assert saved["data"]["val"] == str(world / "data" / "val.jsonl")
    assert f"[demo] toy world: {world}" in capsys.readouterr().out


def test_demo_without_a_config_or_a_world_runs_on_the_goal_first_world(tmp_path, capsys, monkeypatch):
    import yaml

    from atesd.experiments.demo import DEFAULT_WORLD
    from atesd.toy.paths import toy_world_of

    monkeypatch.chdir(Path(CONFIG).parents[1])  # the packaged config is found from the repository root
    overrides = ["steps=1", "prompts_per_step=2", "exposure.hold_steps=1", "exposure.probe_size=2",
                 "rollout.max_new_tokens=8", "progress=false"]
    run_demo(out=str(tmp_path / "demo"), overrides=overrides, n_problems=2, k=1)
    world = toy_world_of(DEFAULT_WORLD)
    assert DEFAULT_WORLD == "toy:toy-1m-top-down" and world.name == "toy-1m-top-down"
    saved = yaml.safe_load((tmp_path / "demo" / "config.yaml").read_text())
    assert saved["model"]["name_or_path"] == str(world) and saved["data"]["train"] == str(world / "data" / "train.jsonl")
