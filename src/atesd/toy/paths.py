"""`toy:` names in a training config: `model.name_or_path: toy:toy-1m` builds (or finds in the
cache) the toy world of that preset, and `data.train: toy:train` / `data.val: toy:val` name its
splits. Everything else in atesd then sees an ordinary model directory and ordinary JSONL files."""

from __future__ import annotations

from dataclasses import replace

PREFIX = "toy:"


def resolve_toy_paths(cfg):
    """A copy of the TrainConfig with `toy:` names replaced by paths (building the world if needed)."""
    names = (cfg.model.name_or_path, cfg.data.train, cfg.data.val or "")
    if not any(n.startswith(PREFIX) for n in names):
        return cfg
    if not cfg.model.name_or_path.startswith(PREFIX):
        raise ValueError("data.train/data.val name toy splits ('toy:...') but model.name_or_path is not "
                         "a toy world; use model.name_or_path: toy:toy-1m")
    from atesd.toy.build import build_toy_world, world_splits

    world = build_toy_world(cfg.model.name_or_path[len(PREFIX):])
    splits = world_splits(world)

    def split_path(name):
        if not name or not name.startswith(PREFIX):
            return name or None
        split = name[len(PREFIX):]
        if split not in splits:
            raise ValueError(f"unknown toy split {name!r}; choose one of {', '.join('toy:' + s for s in splits)}")
        return str(splits[split])

    return replace(
        cfg,
        model=replace(cfg.model, name_or_path=str(world)),
        data=replace(cfg.data, train=split_path(cfg.data.train), val=split_path(cfg.data.val)),
    )
