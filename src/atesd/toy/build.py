"""Build a toy world: data splits, a tokenizer trained on them, a warm-started toy Qwen3.

`build_toy_world()` returns a directory that is at once an ordinary Hugging Face model directory
(`AutoModelForCausalLM.from_pretrained(path)`, `AutoTokenizer.from_pretrained(path)`) and the home
of its data:

    <world>/config.json, model.safetensors, tokenizer.json, ...   the warm-started model
    <world>/data/train.jsonl, val.jsonl, test.jsonl              atesd.data Problem records
    <world>/data/test-large.jsonl                                a larger held-out test (toy task)
    <world>/world.json                                           the configuration, its hash, timings

Worlds are cached under `$ATESD_CACHE/toy/<hash>` (default `~/.cache/atesd/toy/<hash>`), keyed by a
hash of the configuration (and of the data file's bytes for the generic path), so a second call
returns at once. A world is written into a temporary sibling directory and renamed into place, so
a killed build never leaves a half model (and the next build removes what a killed one left).
The same seed gives the same data and the same weights for a fixed torch version, thread count
and CPU; other CPUs round differently and build a (slightly) different world.

The default world (preset toy-1m, the default configuration) ships with the package in
`atesd/toy/worlds/toy-1m/`: asking for it returns that directory without building, so every
machine trains and evaluates on the same weights and every toy figure in the docs can be
reproduced anywhere. `force=True` (`atesd toy build --rebuild`) rebuilds it into the cache.

Where this departs from the papers: they start from pretrained Qwen3 checkpoints; this builds a
miniature from scratch so the whole method runs on a CPU in minutes (see `atesd.toy.warmstart`).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from atesd import atomic
from atesd.data import Problem, load_problems, write_problems
from atesd.prompts import PromptConfig
from atesd.toy import task
from atesd.toy.model import PRESETS, build_model, save_model_dir, tokenizer_corpus, train_tokenizer
from atesd.toy.warmstart import WarmStartConfig, example_stream, train_supervised

BUILD_VERSION = 2  # bump when a change to this package changes what a configuration builds
WORLD_FILE = "world.json"
SHIPPED_DIR = Path(__file__).resolve().parent / "worlds"  # worlds built once and shipped
DATA_DIR = "data"
SPLITS = ("train", "val", "test")
LARGE_TEST = "test-large"  # a second held-out test split, for differences the test split cannot resolve


@dataclass(frozen=True)
class ToyWorldConfig:
    """Everything that determines a toy world (all of it enters the cache key).

    preset: model shape, a key of atesd.toy.model.PRESETS ("toy-test", "toy-1m", "toy-5m").
    seed: seeds data, tokenizer corpus, initial weights and the warm-start example stream.
    data: a problem file in the standard format (generic path); None → the toy task.
    max_level: with `data`, keep only the problems of difficulty <= this (None: all).
    task: how toy problems are drawn (ignored with `data`).
    n_train / n_val / n_test: split sizes for the toy task; with `data`, n_val and n_test problems
        (at most a tenth of the file each) are held out at random and the rest is train.
    vocab_size: the BPE vocabulary size bound (the toy text needs fewer; training stops early).
    warm_start: the supervised mix and optimiser (atesd.toy.warmstart.WarmStartConfig).
    prompts: the student/teacher rendering used for the warm start (use the same for training).
    threads: torch intra-op threads during the build (the build is deterministic per value).
    """

    preset: str = "toy-1m"
    seed: int = 0
    data: str | None = None
    max_level: int | None = None
    task: task.TaskConfig = field(default_factory=task.TaskConfig)
    n_train: int = 20000
    n_val: int = 200
    n_test: int = 500
    vocab_size: int = 512
    warm_start: WarmStartConfig = field(default_factory=WarmStartConfig)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    threads: int = 2

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown toy preset {self.preset!r}; choose one of {sorted(PRESETS)}")
        if min(self.n_train, self.n_val, self.n_test) < 1:
            raise ValueError("toy world split sizes n_train, n_val and n_test must be >= 1")
        if self.data is not None and not Path(self.data).is_file():
            raise FileNotFoundError(f"toy world data file {self.data!r} does not exist")
        if self.max_level is not None and self.data is None:
            raise ValueError("max_level keeps the easier levels of a problem file (data); the toy task's "
                             "levels are task.levels")

    def recorded(self) -> dict:
        """The configuration as world.json records it and the key hashes it. A field added after
        worlds were shipped is left out at the default that reproduces them (prompts.reveal_rounding
        = "floor", max_level = None, task.reference_style = "steps"), so the shipped worlds keep their keys."""
        content = asdict(self)
        if content["max_level"] is None:
            del content["max_level"]
        if content["prompts"].get("reveal_rounding") == "floor":
            del content["prompts"]["reveal_rounding"]
        if content["task"].get("reference_style") == "steps":
            del content["task"]["reference_style"]
        return content

    def cache_key(self) -> str:
        """A hex digest of the configuration, the build version and the data file's contents."""
        content = self.recorded()
        content["version"] = BUILD_VERSION
        if self.data is not None:
            content["data"] = hashlib.sha256(Path(self.data).read_bytes()).hexdigest()
        return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cache_root() -> Path:
    """`$ATESD_CACHE/toy`, default `~/.cache/atesd/toy`."""
    base = os.environ.get("ATESD_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "atesd") / "toy"


def named_worlds() -> dict[str, ToyWorldConfig]:
    """Toy worlds with a name besides the presets' own (`toy:<name>`), by the configuration that builds
    them. `toy-1m-top-down`: the toy-1m world with goal-first references
    (`task.reference_style=top_down`), the second world of docs/toy-world.md section 11, shipped."""
    return {"toy-1m-top-down": ToyWorldConfig(task=task.TaskConfig(reference_style="top_down"), threads=1)}


def shipped_world(key: str) -> Path | None:
    """The world shipped with the package that was built from the configuration with this key."""
    for marker in sorted(SHIPPED_DIR.glob(f"*/{WORLD_FILE}")):
        if json.loads(marker.read_text()).get("key") == key:
            return marker.parent
    return None


def _built_on() -> dict:
    """Where a world was built: its weights depend on the CPU's rounding as well as the config."""
    import platform

    import torch

    cpu = platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "torch": torch.__version__, "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d")}


def toy_splits(cfg: ToyWorldConfig) -> dict[str, list[Problem]]:
    """Toy splits with equal shares per level. Level 1 has only ~1,200 distinct problems, so the
    held-out splits are drawn first and the train split skips their problem texts."""
    splits: dict[str, list[Problem]] = {}
    held_out: set[str] = set()
    for name, n in (("test", cfg.n_test), ("val", cfg.n_val)):
        drawn = task.toy_problems(2 * n, cfg.seed, cfg.task, split=name)
        splits[name] = _level_shares(_unseen(drawn, held_out), n, list(cfg.task.levels))
        held_out |= {p.problem for p in splits[name]}
    train = [p for p in task.toy_problems(cfg.n_train + cfg.n_train // 5, cfg.seed, cfg.task, split="train")
             if p.problem not in held_out]
    splits["train"] = train[: cfg.n_train]
    return splits


def large_test_split(held_out: set[str], cfg: ToyWorldConfig) -> list[Problem]:
    """A second held-out test split: n_test problems on each level from 2 up (2,000 for the
    default world), drawn after the other splits and skipping every problem text they hold. Level 1 is
    left out: of its ~1,200 distinct problems the train split holds nearly all that val and test do
    not (15 on the shipped world), so no level-1 block of this size can be held out."""
    levels = [level for level in cfg.task.levels if level >= 2]
    n = cfg.n_test * len(levels)
    drawn = task.toy_problems(2 * n, cfg.seed, cfg.task, split=LARGE_TEST, levels=levels)
    return _level_shares(_unseen(drawn, held_out), n, levels)


def _unseen(problems: list[Problem], held_out: set[str]) -> list[Problem]:
    """The first problem of each text that is not in `held_out`, in order."""
    fresh: dict[str, Problem] = {}
    for p in problems:
        if p.problem not in held_out:
            fresh.setdefault(p.problem, p)
    return list(fresh.values())


def _level_shares(problems: list[Problem], n: int, levels: list[int]) -> list[Problem]:
    """The first n problems keeping equal shares per level (the first levels get the remainder)."""
    kept = []
    for i, level in enumerate(levels):
        quota = n // len(levels) + (1 if i < n % len(levels) else 0)
        kept += [p for p in problems if p.difficulty == level][:quota]
    return sorted(kept, key=lambda p: p.id)


def file_problems(cfg: ToyWorldConfig) -> list[Problem]:
    """The problems of `cfg.data`, those above `cfg.max_level` left out."""
    problems = load_problems(cfg.data)
    if cfg.max_level is not None:
        if any(p.difficulty is None for p in problems):
            raise ValueError(f"{cfg.data}: max_level {cfg.max_level} needs a difficulty on every problem; "
                             f"problem {next(p.id for p in problems if p.difficulty is None)!r} has none")
        problems = [p for p in problems if p.difficulty <= cfg.max_level]
    if len(problems) < 10:
        raise ValueError(f"{cfg.data}: need at least 10 problems to hold out val and test, got {len(problems)}"
                         + ("" if cfg.max_level is None else f" of difficulty <= {cfg.max_level}"))
    return problems


def file_splits(cfg: ToyWorldConfig) -> dict[str, list[Problem]]:
    """Train, val and test splits of `cfg.data`: n_val and n_test problems (at most a tenth each)
    held out at random by the seed, the rest train."""
    problems = file_problems(cfg)
    order = list(range(len(problems)))
    random.Random(f"{cfg.seed}:split").shuffle(order)
    held = max(1, len(problems) // 10)
    n_test, n_val = min(cfg.n_test, held), min(cfg.n_val, held)
    test = [problems[i] for i in sorted(order[:n_test])]
    val = [problems[i] for i in sorted(order[n_test:n_test + n_val])]
    train = [problems[i] for i in sorted(order[n_test + n_val:])]
    return {"train": train, "val": val, "test": test}


def _build_into(directory: Path, cfg: ToyWorldConfig, progress: bool) -> dict:
    import torch

    started = time.monotonic()
    splits = file_splits(cfg) if cfg.data is not None else toy_splits(cfg)
    for name in SPLITS:
        write_problems(directory / DATA_DIR / f"{name}.jsonl", splits[name])
    if cfg.data is None:  # a pure function of the splits: drawing it changes nothing else the build makes
        held = {p.problem for name in SPLITS for p in splits[name]}
        write_problems(directory / DATA_DIR / f"{LARGE_TEST}.jsonl", large_test_split(held, cfg))
    tokenizer = train_tokenizer(tokenizer_corpus(splits["train"], cfg.prompts), vocab_size=cfg.vocab_size)
    model = build_model(cfg.preset, tokenizer, seed=cfg.seed)
    examples = example_stream(splits["train"], tokenizer, cfg.prompts, cfg.warm_start, cfg.seed)
    with_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        losses = train_supervised(model, tokenizer, examples, cfg.warm_start, cfg.seed, progress=progress)
    finally:
        torch.set_num_threads(with_threads)
    save_model_dir(model, tokenizer, directory)
    tail = losses[-50:]
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "split_sizes": {name: len(splits[name]) for name in SPLITS},
        "final_loss": sum(tail) / len(tail) if tail else None,
        "losses_every_50": losses[::50],
        "build_seconds": round(time.monotonic() - started, 1),
    }


def build_toy_world(cfg: ToyWorldConfig | str | None = None, *, out: str | os.PathLike | None = None,
                    force: bool = False, progress: bool = True, facts: dict | None = None, **overrides) -> Path:
    """Build (or find in the cache) a toy world and return its directory.

    cfg: a ToyWorldConfig, or a preset name; keyword overrides replace its fields, e.g.
        `build_toy_world("toy-1m", seed=1)` or `build_toy_world(data="problems.jsonl")`.
    out: where to put the world (default: the cache, keyed by cfg.cache_key()). An existing world
        there with the same key is returned as is; other content is an error unless force.
    force: rebuild even when the world exists (or is shipped with the package).
    A configuration whose world ships with the package returns the shipped directory (or, with
    `out`, a copy of it) without building.
    facts: more entries for the world.json of a world this call builds (e.g. the plan that sized it).
    """
    if isinstance(cfg, str):
        cfg = ToyWorldConfig(preset=cfg)
    cfg = replace(cfg or ToyWorldConfig(), **overrides)
    key = cfg.cache_key()
    shipped = None if force else shipped_world(key)
    if shipped is not None:
        return shipped if out is None else copy_world(shipped, out)
    target = Path(out).expanduser() if out is not None else cache_root() / key
    marker = target / WORLD_FILE
    if marker.is_file() and not force:
        if json.loads(marker.read_text()).get("key") == key:
            return target
        raise FileExistsError(f"{target} holds a toy world of another configuration; pass force=True to replace it")
    if target.exists() and any(target.iterdir()) and not marker.is_file() and not force:
        raise FileExistsError(f"{target} exists and is not a toy world; choose another out or pass force=True")

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = atomic.staging_dir(target, "building")  # also removes a killed build's staging folder
    try:
        built = _build_into(staging, cfg, progress)
        record = {"key": key, "version": BUILD_VERSION, "config": cfg.recorded(), **built, **(facts or {}),
                  "built_on": _built_on()}
        atomic.write_json(staging / WORLD_FILE, record)
        atomic.replace_dir(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def cached_world(name: str, value) -> Path | None:
    """A world in the cache whose world.json has `name` = `value` (e.g. the request that sized it)."""
    for marker in sorted(cache_root().glob(f"*/{WORLD_FILE}")):
        try:
            if json.loads(marker.read_text()).get(name) == value:
                return marker.parent
        except (OSError, ValueError):
            continue
    return None


def world_splits(world: str | os.PathLike) -> dict[str, Path]:
    """The data files of a built world, by split name."""
    return {name: Path(world) / DATA_DIR / f"{name}.jsonl" for name in SPLITS}


def copy_world(world: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Copy a built world to `out` (atomically: a staging copy, then a rename). An existing toy
    world at `out` is replaced; any other existing content is an error."""
    source, target = Path(world), Path(out).expanduser()
    if target.exists() and any(target.iterdir()) and not (target / WORLD_FILE).is_file():
        raise FileExistsError(f"{target} exists and is not a toy world; choose another --out")
    staging = atomic.staging_dir(target, "copying")
    try:
        shutil.copytree(source, staging, dirs_exist_ok=True)
        atomic.replace_dir(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
