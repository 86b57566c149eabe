"""The exposure probe: its measurements on one process and shared by two, and the grounding cache."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from atesd.probe import ExposureProbe
from atesd.prompts import PromptConfig
from atesd.reveal import withheld
from atesd.teacher import Teacher
from atesd.toy.task import toy_problems

REPO = Path(__file__).resolve().parents[1]


def _probe(tokenizer, cache: bool) -> ExposureProbe:
    problems = toy_problems(11, seed=5, split="test")
    return ExposureProbe(problems[:6], problems[6:], tokenizer, PromptConfig(), 64, True, True, cache_grounding=cache)


def test_frozen_teacher_grounding_is_scored_once_per_revealed_steps(tiny_model, tiny_tokenizer):
    cached, fresh = _probe(tiny_tokenizer, True), _probe(tiny_tokenizer, False)
    teacher = Teacher("frozen", tiny_model)
    first = cached.measure(tiny_model, teacher, 0.5, step=0)
    assert cached.scored_last == 5
    # a ratio that reveals the same steps of every problem: all from the cache, the same value
    same_steps = 0.51
    assert all(withheld(p.solution, 0.5) == withheld(p.solution, same_steps) for p in cached.grounding)
    again = cached.measure(tiny_model, teacher, same_steps, step=1)
    assert cached.scored_last == 0 and again["grounding_score"] == first["grounding_score"]
    assert fresh.measure(tiny_model, teacher, same_steps, step=1)["grounding_score"] == pytest.approx(
        first["grounding_score"], abs=1e-6)
    assert fresh.scored_last == 5  # without the cache (live or EMA teacher) everything is scored again
    full = cached.measure(tiny_model, teacher, 1.0, step=2)
    assert cached.scored_last == 5 and full["grounding_score"] != first["grounding_score"]


def test_grounding_cache_survives_a_checkpoint(tiny_model, tiny_tokenizer):
    probe, restored = _probe(tiny_tokenizer, True), _probe(tiny_tokenizer, True)
    teacher = Teacher("frozen", tiny_model)
    value = probe.measure(tiny_model, teacher, 0.5, step=0)["grounding_score"]
    restored.load_state_dict(probe.state_dict())
    assert restored.measure(tiny_model, teacher, 0.5, step=0)["grounding_score"] == value
    assert restored.scored_last == 0
    assert _probe(tiny_tokenizer, False).state_dict() == {}


@pytest.mark.slow
def test_two_processes_share_the_probe_and_report_the_one_process_values(tiny_model, tiny_model_dir, tiny_tokenizer,
                                                                         tmp_path, free_port):
    port = free_port
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
               str(REPO / "tests" / "scripts" / "dist_probe.py"), str(tiny_model_dir), str(tmp_path)]
    proc = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-6000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    probe, teacher = _probe(tiny_tokenizer, True), Teacher("frozen", tiny_model)
    alone = [probe.measure(tiny_model, teacher, ratio, step=0) for ratio in (0.5, 0.5, 1.0)]
    for rank in ranks:
        assert rank["measured"][0] == rank["measured"][1] == ranks[0]["measured"][0]
        for shared, single in zip(rank["measured"], alone):
            assert shared == pytest.approx(single, abs=1e-6)
    # each process scores its half (padded to 3 rows): probe 3 × 3 measures + grounding 3 + 3 (one cache hit)
    assert [rank["rows_scored"] for rank in ranks] == [15, 15]
