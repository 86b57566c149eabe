"""`toy:` names, resolved in one place for every command and the Python API.

- `toy:<preset>` as a model (`toy:toy-1m`, `toy:toy-5m`, `toy:toy-test`) is that preset's toy world
  directory, built or found in the cache (toy-1m ships with the package); a named world
  (`toy:toy-1m-top-down`, `atesd.toy.build.named_worlds`) likewise (it ships too).
- `toy:<split>` as data (`toy:train`, `toy:val`, `toy:test`, `toy:test-large`) is the split's JSONL
  file in the model's toy world: the world of a `toy:<preset>` or named model, or a toy world folder given by
  path (a copy made by `atesd toy build --out`); for any other model (a trained run's `final/`, a
  hub model) the shipped toy-1m world's.

Everything else in atesd then sees an ordinary model directory and ordinary JSONL files; names
without the prefix pass through unchanged.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

PREFIX = "toy:"
DEFAULT_PRESET = "toy-1m"


def is_toy_name(name) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX)


def toy_world_of(model) -> Path | None:
    """The toy world a model names: `toy:<preset>` or a named world (`atesd.toy.build.named_worlds`),
    built if needed, or a folder holding a toy world (its world.json); None for any other model."""
    from atesd.toy.build import WORLD_FILE, build_toy_world, named_worlds
    from atesd.toy.model import PRESETS

    if is_toy_name(model):
        name, named = model[len(PREFIX):], named_worlds()
        if name in named:
            return build_toy_world(named[name])
        if name not in PRESETS:
            raise ValueError(f"model {model!r}: unknown toy world {name!r}; a toy model is one of "
                             f"{', '.join(PREFIX + p for p in sorted([*PRESETS, *named]))} (data splits such as "
                             "toy:test go with --data / data.train / data.val)")
        return build_toy_world(name)
    if model and (Path(str(model)) / WORLD_FILE).is_file():
        return Path(str(model))
    return None


def resolve_toy_model(model):
    """`toy:<preset>` → its world directory (a string); any other model unchanged."""
    return str(toy_world_of(model)) if is_toy_name(model) else model


def resolve_toy_data(data, model, field: str = "data"):
    """`toy:<split>` → `<world>/data/<split>.jsonl` of the model's toy world (module docstring);
    any other data unchanged. `field` names the setting in the error message."""
    if not is_toy_name(data):
        return data
    from atesd.toy.build import DATA_DIR, build_toy_world

    world = toy_world_of(model) or build_toy_world(DEFAULT_PRESET)
    split = data[len(PREFIX):]
    path = world / DATA_DIR / f"{split}.jsonl"
    if not path.is_file():
        splits = sorted(p.stem for p in (world / DATA_DIR).glob("*.jsonl"))
        raise ValueError(f"{field}={data!r}: the toy world {world} has no split {split!r}; choose one of "
                         f"{', '.join(PREFIX + s for s in splits)}")
    return str(path)


def resolve_model_and_data(model, data, field: str = "--data") -> tuple:
    """(model, data) of a command that takes both (eval, mismatch, diagnose credit), resolved."""
    return resolve_toy_model(model), resolve_toy_data(data, model, field)


def resolve_toy_paths(cfg):
    """A copy of the TrainConfig with its `toy:` names (model, data.train, data.val) resolved."""
    model = cfg.model.name_or_path
    return replace(
        cfg,
        model=replace(cfg.model, name_or_path=resolve_toy_model(model)),
        data=replace(cfg.data, train=resolve_toy_data(cfg.data.train, model, "data.train"),
                     val=resolve_toy_data(cfg.data.val, model, "data.val")),
    )
