"""atesd.toy.speed: the decoder's rows replayed as the lean decoder keeps them; measuring leaves the model as it was."""

from __future__ import annotations

import itertools

import torch

from atesd.data import Problem
from atesd.prompts import PromptConfig, student_prompt
from atesd.toy.model import build_model, tokenizer_corpus, train_tokenizer
from atesd.toy.speed import DecodeCost, measure_decoding, scoring_seconds, supervised_step_seconds
from atesd.toy.warmstart import WarmStartConfig, example_stream


def test_a_call_costs_its_prefill_and_one_step_per_token_of_its_longest_row():
    per_step = DecodeCost(prefill_per_token=0.0, step_fixed=1.0, step_per_row=0.0, step_per_row_position=0.0)
    assert per_step.call_seconds([5, 3], [4, 10], max_new_tokens=64) == 9  # steps 1 … 9 feed tokens 2 … 10
    assert per_step.call_seconds([5, 3], [4, 100], max_new_tokens=64) == 63  # cut at max_new_tokens
    prefill = DecodeCost(prefill_per_token=0.5, step_fixed=0.0, step_per_row=0.0, step_per_row_position=0.0)
    assert prefill.call_seconds([5, 3], [1, 1], max_new_tokens=8) == 0.5 * 5 * 2  # left-padded to the widest


def test_finished_rows_are_dropped_once_half_have_stopped():
    per_row = DecodeCost(prefill_per_token=0.0, step_fixed=0.0, step_per_row=1.0, step_per_row_position=0.0)
    # 4 rows ending after 2, 2, 3 and 6 tokens: steps 1 (4 rows), 2 (2 of 4 run: kept 2), 3 (1 of 2: kept 1), 4, 5
    assert per_row.call_seconds([1] * 4, [2, 2, 3, 6], max_new_tokens=16) == 4 + 2 + 1 + 1 + 1
    # calls of batch_size rows in order: [2, 2] one step of 2 rows; [3, 6] steps of 2, 2, 1, 1, 1 rows
    assert per_row.generation_seconds([1] * 4, [2, 2, 3, 6], batch_size=2, max_new_tokens=16) == 2 + 7


def _tiny():
    problems = [Problem(id=f"p{i}", problem=f"Add {i} and {i + 3}.", solution=f"{i} + {i + 3} = {2 * i + 3}.\n\n"
                        f"The answer is \\boxed{{{2 * i + 3}}}.", answer=str(2 * i + 3)) for i in range(20)]
    tokenizer = train_tokenizer(tokenizer_corpus(problems, PromptConfig()), vocab_size=320)
    return problems, tokenizer, build_model("toy-test", tokenizer, seed=0)


def test_measuring_a_supervised_step_leaves_the_model_as_it_was():
    problems, tokenizer, model = _tiny()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    cfg = WarmStartConfig(batch_size=4)
    examples = example_stream(problems, tokenizer, PromptConfig(), cfg, 0)
    assert supervised_step_seconds(model, tokenizer, examples, cfg, 0, threads=1, steps=2) > 0
    assert all(torch.equal(before[name], p) for name, p in model.named_parameters())
    assert next(itertools.islice(examples, 1, None)) is not None  # the stream goes on


def test_decoding_and_scoring_are_measured_on_real_calls():
    problems, tokenizer, model = _tiny()
    prompts = [student_prompt(tokenizer, p.problem, PromptConfig()) for p in problems]
    cost = measure_decoding(model, tokenizer, prompts, [p + p for p in prompts], batch_size=8)
    assert cost.prefill_per_token > 0 and cost.step_seconds(8, 40) > 0
    assert min(cost.step_fixed, cost.step_per_row, cost.step_per_row_position) >= 0
    assert scoring_seconds(problems, tokenizer, n=8) > 0
