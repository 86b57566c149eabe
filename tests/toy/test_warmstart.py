"""Warm-start examples: loss on completion tokens only, wrong steps skipped, ids as generation sees them."""

from __future__ import annotations

import random

import torch

from atesd.prompts import PromptConfig, student_prompt
from atesd.toy import task
from atesd.toy.warmstart import (
    IGNORE_INDEX,
    WarmStartConfig,
    batches,
    collate,
    completion_example,
    example_stream,
    learning_rate,
    make_example,
)


def test_labels_cover_only_completion_tokens(tiny_tokenizer, toy_problems):
    cfg = WarmStartConfig(wrong_prefix_prob=0.0)
    rng = random.Random(0)
    examples = [make_example(p, tiny_tokenizer, PromptConfig(), rng, cfg, teacher=i % 2 == 0)
                for i, p in enumerate(toy_problems[:6])]
    batch = collate(examples, tiny_tokenizer.pad_token_id)
    for row, e in enumerate(examples):
        labels = batch["labels"][row].tolist()
        prompt_end = len(e.prompt_ids)
        assert set(labels[:prompt_end]) == {IGNORE_INDEX}
        assert labels[prompt_end:prompt_end + len(e.completion_ids)] == list(e.completion_ids)
        assert set(labels[prompt_end + len(e.completion_ids):]) <= {IGNORE_INDEX}
        assert e.completion_ids[-1] == tiny_tokenizer.eos_token_id


def test_student_example_is_the_student_prompt_then_a_valid_solution(tiny_tokenizer, toy_problems):
    problem = toy_problems[4]
    e = make_example(problem, tiny_tokenizer, PromptConfig(), random.Random(0), WarmStartConfig(), teacher=False)
    assert list(e.prompt_ids) == student_prompt(tiny_tokenizer, problem.problem, PromptConfig())
    completion = tiny_tokenizer.decode(e.completion_ids, skip_special_tokens=True)
    assert task.check_steps(problem.problem, completion).first_error is None


def test_wrong_prefix_example_skips_only_the_wrong_step_and_matches_whole_text_ids(tiny_tokenizer):
    cfg = WarmStartConfig(wrong_prefix_prob=1.0, teacher_fraction=1.0)
    rng = random.Random(0)
    for problem in task.toy_problems(20, seed=5, levels=[3, 4, 5]):
        e = make_example(problem, tiny_tokenizer, PromptConfig(), rng, cfg, teacher=True)
        text = tiny_tokenizer.decode(e.completion_ids)
        assert list(e.completion_ids) == tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
        skipped = tiny_tokenizer.decode([t for t, keep in zip(e.completion_ids, e.loss_mask) if not keep])
        check = task.check_steps(problem.problem, text.removesuffix(tiny_tokenizer.eos_token))
        wrong_start, wrong_end = check.step_spans[check.first_error]
        assert skipped.strip() == text[wrong_start:wrong_end]
        assert not check.answer_correct  # the continuation follows the wrong value to its end


def test_student_wrong_prefix_examples_use_the_student_prompt_and_skip_the_wrong_step(tiny_tokenizer):
    cfg = WarmStartConfig(student_wrong_prefix_prob=1.0)
    rng = random.Random(1)
    for problem in task.toy_problems(10, seed=6, levels=[3, 4, 5]):
        e = make_example(problem, tiny_tokenizer, PromptConfig(), rng, cfg, teacher=False)
        assert list(e.prompt_ids) == student_prompt(tiny_tokenizer, problem.problem, PromptConfig())
        text = tiny_tokenizer.decode(e.completion_ids).removesuffix(tiny_tokenizer.eos_token)
        check = task.check_steps(problem.problem, text)
        assert check.first_error is not None and not all(e.loss_mask)


def test_without_student_wrong_prefixes_every_student_example_is_fully_trained(tiny_tokenizer, toy_problems):
    cfg = WarmStartConfig(teacher_fraction=0.0, student_max_level=None)
    stream = example_stream(toy_problems, tiny_tokenizer, PromptConfig(), cfg, 0)
    assert all(all(next(stream).loss_mask) for _ in range(30))
    mixed = example_stream(toy_problems, tiny_tokenizer, PromptConfig(),
                           WarmStartConfig(teacher_fraction=0.0, student_max_level=None, student_wrong_prefix_prob=0.5), 0)
    assert not all(all(next(mixed).loss_mask) for _ in range(30))


def test_piecewise_encoding_equals_encoding_the_whole_completion(tiny_tokenizer, toy_problems):
    solution = toy_problems[-1].solution
    cut = solution.index("\n\n", solution.index("\n\n") + 1)
    e = completion_example(tiny_tokenizer, [1], solution, skip=(solution.index("\n\n"), cut))
    whole = completion_example(tiny_tokenizer, [1], solution)
    assert e.completion_ids == whole.completion_ids
    assert e.loss_mask != whole.loss_mask


def test_student_examples_respect_the_level_cap_and_teacher_examples_cover_all(tiny_tokenizer):
    problems = task.toy_problems(50, seed=0)
    cfg = WarmStartConfig(student_max_level=2, teacher_fraction=0.5)
    by_prompt = {}
    stream = example_stream(problems, tiny_tokenizer, PromptConfig(), cfg, seed=0)
    students = {tuple(student_prompt(tiny_tokenizer, p.problem, PromptConfig())): p.difficulty for p in problems}
    seen_student_levels = set()
    for _ in range(100):
        e = next(stream)
        if e.prompt_ids in students:
            seen_student_levels.add(students[e.prompt_ids])
        by_prompt[e.prompt_ids] = e
    assert seen_student_levels == {1, 2}
    assert len(by_prompt) > 60  # teacher examples on every level make up the rest


def test_example_stream_and_batches_are_deterministic_for_a_seed(tiny_tokenizer, toy_problems):
    cfg = WarmStartConfig(wrong_prefix_prob=0.3)

    def first_batches(seed):
        stream = batches(example_stream(toy_problems, tiny_tokenizer, PromptConfig(), cfg, seed), 4, 2, seed)
        return [next(stream) for _ in range(3)]

    assert first_batches(0) == first_batches(0)
    assert first_batches(0) != first_batches(1)


def test_learning_rate_warms_up_then_decays_to_the_floor():
    cfg = WarmStartConfig(steps=100, lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    rates = [learning_rate(step, cfg) for step in range(101)]
    assert rates[0] == 1e-4 and max(rates) == rates[9] == 1e-3
    assert all(a >= b for a, b in zip(rates[9:], rates[10:]))
    assert abs(rates[100] - 1e-4) < 1e-12


def test_a_few_warm_start_steps_lower_the_completion_loss(tiny_model, tiny_tokenizer, toy_problems):
    from atesd.toy.warmstart import completion_loss, train_supervised

    cfg = WarmStartConfig(steps=8, batch_size=8, lr=3e-3, warmup_steps=1)
    probe = collate([make_example(p, tiny_tokenizer, PromptConfig(), random.Random(0), cfg, False)
                     for p in toy_problems[:8]], tiny_tokenizer.pad_token_id)
    with torch.no_grad():
        before = completion_loss(tiny_model, probe).item()
    losses = train_supervised(tiny_model, tiny_tokenizer, example_stream(toy_problems, tiny_tokenizer, PromptConfig(),
                              cfg, 0), cfg, seed=0, progress=False)
    with torch.no_grad():
        after = completion_loss(tiny_model, probe).item()
    assert len(losses) == 8 and after < before
    assert tiny_model.config._attn_implementation == "sdpa" and not tiny_model.training
