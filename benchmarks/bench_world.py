"""A throw-away toy world for systems benchmarks: tokenizer, random-weight toy Qwen3, train file.

Unlike `atesd.toy.build.build_toy_world` there is no warm start (timing does not need a model that
can do the task), so it builds in seconds.
"""

from __future__ import annotations

from pathlib import Path


def toy_tokenizer(n_problems: int = 256, seed: int = 0):
    """The toy task's byte-level BPE, trained on `n_problems` toy problems; returns (tokenizer, problems)."""
    from atesd.toy.model import tokenizer_corpus, train_tokenizer
    from atesd.toy.task import toy_problems

    problems = toy_problems(n_problems, seed=seed)
    return train_tokenizer(tokenizer_corpus(problems)), problems


def build_bench_world(directory: str | Path, preset: str = "toy-1m", n_problems: int = 256,
                      seed: int = 0) -> tuple[Path, Path]:
    """Writes <directory>/model (a Hugging Face model directory) and <directory>/train.jsonl."""
    from atesd.data import write_problems
    from atesd.toy.model import build_model, save_model_dir

    directory = Path(directory)
    tokenizer, problems = toy_tokenizer(n_problems, seed)
    model_dir = save_model_dir(build_model(preset, tokenizer, seed=seed), tokenizer, directory / "model")
    train_file = directory / "train.jsonl"
    write_problems(train_file, problems)
    return model_dir, train_file
