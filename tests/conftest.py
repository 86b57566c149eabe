"""Shared fixtures: a tiny random-weight toy Qwen3 saved as a Hugging Face directory, and toy problems.

Everything is built offline in a few seconds per session; tests never touch the network.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path

import pytest
import torch

from atesd.data import Problem
from atesd.toy.model import build_model, save_model_dir, tokenizer_corpus, train_tokenizer
from atesd.toy.task import toy_problems as sample_toy_problems

# Tests share 2 CPU cores with other work: one intra-op thread is both faster and fairer here.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def toy_problems() -> list[Problem]:
    """20 toy problems, 4 of each difficulty level 1–5, with step-by-step reference solutions."""
    return sample_toy_problems(20, seed=0, split="test")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A Hugging Face directory with a toy tokenizer (trained on 300 toy problems, chat template with
    `enable_thinking`) and a random-weight `toy-test` Qwen3ForCausalLM (hidden 32, 2 layers).

    Load it with `AutoTokenizer.from_pretrained(d)` / `AutoModelForCausalLM.from_pretrained(d)`.
    Session-scoped and read-only: copy it before writing into it.
    """
    corpus = sample_toy_problems(300, seed=0, split="train")
    tokenizer = train_tokenizer(tokenizer_corpus(corpus), vocab_size=384)
    model = build_model("toy-test", tokenizer, seed=0)
    return save_model_dir(model, tokenizer, tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    """The tokenizer of `tiny_model_dir` (shared; do not mutate)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture
def tiny_model(tiny_model_dir):
    """A fresh copy of the `tiny_model_dir` model for each test (eval mode, float32, CPU)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


@pytest.fixture
def free_port() -> int:
    """A TCP port free on this machine now, for a multi-process test's rendezvous."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
