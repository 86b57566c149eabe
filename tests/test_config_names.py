"""atesd.config_names: TRL / Transformers names suggest atesd's keys, `report_to` takes a string,
trackers receive the resolved config, and README.md prints the same table."""

from pathlib import Path

import pytest
from accelerate.tracking import GeneralTracker

from atesd.config import ConfigError, hyperparameters, load_config
from atesd.config_names import markdown_table

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("override, suggestion", [
    ("max_steps=3", "TRL's 'max_steps' is 'steps' here"),
    ("learning_rate=1e-5", "TRL's 'learning_rate' is 'optim.lr' here"),
    ("per_device_train_batch_size=8", "TRL's 'per_device_train_batch_size' is 'prompts_per_step' here"),
    ("bf16=true", "TRL's 'bf16' is 'model.dtype' here (model.dtype=bfloat16)"),
    ("save_steps=10", "TRL's 'save_steps' is 'save_every' here"),
    ("optim.learning_rate=1e-5", "TRL's 'learning_rate' is 'optim.lr' here"),
])
def test_a_trl_argument_name_suggests_the_atesd_key(override, suggestion):
    with pytest.raises(ConfigError) as err:
        load_config(None, ["model.name_or_path=m", "data.train=t.jsonl", override])
    assert str(err.value).startswith(f"override '{override}': unknown config key '{override.split('=')[0]}'; {suggestion}")


def test_a_name_trl_does_not_use_still_gets_the_closest_spelling():
    with pytest.raises(ConfigError, match="did you mean 'exposure.hold_steps'"):
        load_config(None, ["model.name_or_path=m", "data.train=t.jsonl", "exposure.hold_step=4"])


def test_report_to_takes_a_string_as_in_trl(tmp_path):
    base = ["model.name_or_path=m", "data.train=t.jsonl"]
    assert load_config(None, [*base, "report_to=wandb"]).report_to == ["wandb"]
    assert load_config(None, [*base, "report_to=none"]).report_to == []
    assert load_config(None, [*base, "report_to=[tensorboard,wandb]"]).report_to == ["tensorboard", "wandb"]
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  name_or_path: m\ndata:\n  train: t.jsonl\nreport_to: tensorboard, wandb\n")
    assert load_config(path).report_to == ["tensorboard", "wandb"]


class RecordingTracker(GeneralTracker):
    """A tracker through accelerate's custom-tracker API that keeps what it is given in memory."""

    name, requires_logging_directory = "recording", False

    def __init__(self):
        super().__init__()
        self.config, self.logged = None, []

    @property
    def tracker(self):
        return self

    def store_init_configuration(self, values):
        self.config = values

    def log(self, values, step=None, **kwargs):
        self.logged.append((step, values))


def _tiny_config(tiny_model_dir, toy_problems, tmp_path, report_to):
    from atesd.data import write_problems

    write_problems(tmp_path / "train.jsonl", toy_problems[:4])
    return load_config(None, [f"model.name_or_path={tiny_model_dir}", f"data.train={tmp_path / 'train.jsonl'}",
                              "steps=1", "prompts_per_step=2", "rollout.max_new_tokens=4", "progress=false",
                              f"output_dir={tmp_path / 'run'}", f"report_to={report_to}"])


def test_trackers_receive_the_resolved_config_as_hyperparameters(tiny_model_dir, toy_problems, tmp_path):
    from dataclasses import replace

    from atesd.train import train

    tracker = RecordingTracker()
    cfg = replace(_tiny_config(tiny_model_dir, toy_problems, tmp_path, "none"), report_to=[tracker])
    train(cfg)
    assert tracker.config["steps"] == 1 and tracker.config["optim.lr"] == cfg.optim.lr
    assert tracker.config["model.name_or_path"] == str(tiny_model_dir)
    assert tracker.config["data.val"] == "None" and tracker.config["exposure.policy"] == cfg.exposure.policy
    [(step, values)] = tracker.logged
    assert step == 0 and "train/loss" in values


def test_tensorboard_records_the_hyperparameters(tiny_model_dir, toy_problems, tmp_path):
    pytest.importorskip("tensorboard")
    from atesd.train import train

    cfg = _tiny_config(tiny_model_dir, toy_problems, tmp_path, "tensorboard")
    train(cfg)
    events = list((tmp_path / "run").rglob("events.out.tfevents.*"))
    assert events and any(b"optim.lr" in path.read_bytes() for path in events)


def test_hyperparameters_are_flat_scalars():
    flat = hyperparameters(load_config(None, ["model.name_or_path=m", "data.train=t.jsonl"]))
    assert flat["model.lora.rank"] == 64 and isinstance(flat["model.lora.target_modules"], str)
    assert all(isinstance(v, (int, float, str, bool)) for v in flat.values())


def test_the_readme_prints_the_same_table():
    assert markdown_table() in (REPO / "README.md").read_text()
