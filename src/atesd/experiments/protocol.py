"""The one evaluation protocol of every toy comparison (docs/toy-world.md, "The protocol").

Every toy figure in README.md, BENCHMARKS.md and docs/toy-world.md that compares models is
measured with `TOY_PROTOCOL`: held-out sampled Average@8 on all 500 test problems of the world,
temperature 1 with no top-p or top-k truncation (the distribution the toy configs train on), at
most 128 new tokens (the toy configs' rollout length), sampling seed 1234, 256 samples per
generation call (`atesd.evaluate` derives each call's seed from the seed and the call's index, so
the batch size is part of the protocol). Two models evaluated under it are paired problem by
problem (`atesd.evaluate.paired_difference`).

`TOY_PROTOCOL_LARGE` (`toy-large-avg16`) is the protocol of the confirmatory test of
docs/toy-world.md section 9.2, for differences between two trained models below what toy-avg8
resolves: Average@16 on the 2,000 problems of the world's second held-out split `test-large`
(levels 2–5, 500 each; `atesd.toy.build.large_test_split`), otherwise as toy-avg8. Its figures are
never compared with toy-avg8's. `PROTOCOLS` names both; `benchmarks/bench_reevaluate.py` evaluates
a bench's saved models under either, and `atesd eval --protocol NAME` (`protocol_eval_settings`)
evaluates any model under one by name.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from atesd.data import Problem, load_problems
from atesd.evaluate import EvalReport, evaluate
from atesd.models import load_pretrained
from atesd.prompts import PromptConfig
from atesd.rollout.base import SamplingParams


@dataclass(frozen=True)
class EvalProtocol:
    """Which problems, how many samples, and how they are drawn."""

    name: str
    split: str = "test"
    n_problems: int | None = 500  # the first N problems of the split (None: all)
    k: int = 8
    seed: int = 1234
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 128
    batch_size: int = 256

    def sampling(self) -> SamplingParams:
        return SamplingParams(max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                              top_p=self.top_p, top_k=self.top_k, seed=self.seed)

    def problems(self, data_dir: str | os.PathLike) -> list[Problem]:
        """The protocol's problems from a folder holding `<split>.jsonl` (a toy world's `data/`)."""
        return load_problems(Path(data_dir) / f"{self.split}.jsonl")[: self.n_problems]

    def describe(self) -> str:
        n = "all" if self.n_problems is None else f"the first {self.n_problems}"
        return (f"protocol {self.name}: sampled Average@{self.k} on {n} {self.split} problems, T = {self.temperature:g}"
                f"{'' if self.top_p == 1 and self.top_k == 0 else f', top-p {self.top_p:g}, top-k {self.top_k}'}, "
                f"at most {self.max_new_tokens} new tokens, sampling seed {self.seed}, "
                f"{self.batch_size} samples per generation call")

    def to_dict(self) -> dict:
        return asdict(self)

    def eval_settings(self) -> dict:
        """The protocol as `atesd eval` settings (EvalConfig field → value; `limit` is n_problems):
        `atesd eval --protocol NAME` and `atesd.evaluate(protocol=NAME)` run exactly `evaluate_under`."""
        return {"limit": self.n_problems, "k": self.k, "seed": self.seed, "temperature": self.temperature,
                "top_p": self.top_p, "top_k": self.top_k, "max_new_tokens": self.max_new_tokens,
                "batch_size": self.batch_size}


TOY_PROTOCOL = EvalProtocol(name="toy-avg8")
TOY_PROTOCOL_LARGE = EvalProtocol(name="toy-large-avg16", split="test-large", n_problems=2000, k=16)
PROTOCOLS = {protocol.name: protocol for protocol in (TOY_PROTOCOL, TOY_PROTOCOL_LARGE)}


def protocol_eval_settings(name: str, given: dict) -> dict:
    """`given` (the eval settings a user passed: EvalConfig field → value) with protocol `name`'s
    settings added, and `data` defaulting to the protocol's toy split (`toy:<split>`). A setting the
    protocol fixes may not be given too, except a smaller `limit` (the first N of its problems: a
    quick check, no longer the protocol)."""
    if name not in PROTOCOLS:
        raise ValueError(f"--protocol {name!r}: unknown protocol; choose one of {', '.join(PROTOCOLS)}")
    protocol = PROTOCOLS[name]
    settings = protocol.eval_settings()
    clash = sorted(key for key in settings if key in given and key != "limit")
    if clash:
        raise ValueError(f"--protocol {name} fixes {', '.join('--' + key.replace('_', '-') for key in clash)}; "
                         "drop them or drop --protocol")
    limit = given.get("limit")
    if limit is not None and protocol.n_problems is not None and limit > protocol.n_problems:
        raise ValueError(f"--limit {limit}: protocol {name} evaluates {protocol.n_problems} problems")
    return {"data": f"toy:{protocol.split}", **given, **settings,
            **({"limit": limit} if limit is not None else {})}


def evaluate_under(protocol: EvalProtocol, model_or_dir, problems: list[Problem], prompts: PromptConfig,
                   tokenizer=None, progress: bool = False, description: str = "eval") -> EvalReport:
    """Evaluate a model (or a saved model directory) on `problems` under the protocol (`description`
    names its progress bar)."""
    model, meta = model_or_dir, {"protocol": protocol.to_dict()}
    if isinstance(model_or_dir, (str, os.PathLike)):
        model, tokenizer = load_pretrained(model_or_dir, device="cpu")
        meta["model"] = str(model_or_dir)
    return evaluate(model.eval(), tokenizer, problems, k=protocol.k, sampling=protocol.sampling(), prompt_cfg=prompts,
                    batch_size=protocol.batch_size, progress=progress, score_workers=0, meta=meta,
                    description=description)
