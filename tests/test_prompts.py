"""Student and teacher prompts end in the same assistant prefix, so the rollout ids line up."""

import pytest

from atesd.prompts import PromptConfig, assistant_prefix, student_prompt, teacher_prompt, teacher_text, teacher_view
from atesd.reveal import reveal


def _ends_with(seq, tail):
    return list(seq[len(seq) - len(tail):]) == list(tail)


def test_teacher_and_student_sequences_end_in_identical_rollout_ids(tiny_tokenizer, toy_problems):
    problem = toy_problems[7]
    rollout = tiny_tokenizer(problem.solution + "<|im_end|>", add_special_tokens=False)["input_ids"]
    for student_thinking in (False, True):
        for teacher_thinking in (False, True):
            cfg = PromptConfig(student_thinking=student_thinking, teacher_thinking=teacher_thinking)
            s = student_prompt(tiny_tokenizer, problem.problem, cfg)
            t = teacher_prompt(tiny_tokenizer, problem.problem, reveal(problem.solution, 0.5), cfg)
            prefix = tiny_tokenizer(assistant_prefix(tiny_tokenizer, cfg), add_special_tokens=False)["input_ids"]
            assert _ends_with(s, prefix) and _ends_with(t, prefix)
            assert _ends_with(s + rollout, rollout) and _ends_with(t + rollout, rollout)


def test_thinking_off_opens_an_empty_think_block_for_both_roles(tiny_tokenizer, toy_problems):
    cfg = PromptConfig(student_thinking=False, teacher_thinking=True)
    assert assistant_prefix(tiny_tokenizer, cfg).endswith("<think>\n\n</think>\n\n")
    text = teacher_text(tiny_tokenizer, toy_problems[0].problem, "ref", cfg)
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    cfg_on = PromptConfig(student_thinking=True)
    assert assistant_prefix(tiny_tokenizer, cfg_on) == "<|im_start|>assistant\n"


def test_teacher_prompt_holds_the_revealed_reference_and_student_prompt_does_not(tiny_tokenizer, toy_problems):
    problem = toy_problems[-1]
    revealed = reveal(problem.solution, 1.0)
    cfg = PromptConfig()
    t = tiny_tokenizer.decode(teacher_prompt(tiny_tokenizer, problem.problem, revealed, cfg))
    s = tiny_tokenizer.decode(student_prompt(tiny_tokenizer, problem.problem, cfg))
    assert revealed in t and problem.problem in t
    assert revealed not in s and problem.problem in s


def test_teacher_view_rounds_the_revealed_steps_as_the_config_says(tiny_tokenizer, toy_problems):
    problem = next(p for p in toy_problems if p.difficulty == 2)  # two steps: α = 0.8 shows 1 (floor) or 2
    floor, nearest = PromptConfig(), PromptConfig(reveal_rounding="nearest")
    assert teacher_view(tiny_tokenizer, problem, 0.8, floor) == teacher_view(tiny_tokenizer, problem, 0.5, floor)
    assert teacher_view(tiny_tokenizer, problem, 0.8, nearest) == teacher_view(tiny_tokenizer, problem, 1.0, floor)
    with pytest.raises(ValueError, match="reveal_rounding"):
        PromptConfig(reveal_rounding="ceil")


def test_plain_text_rendering_without_chat_template(tiny_tokenizer):
    import copy

    plain = copy.deepcopy(tiny_tokenizer)
    plain.chat_template = None
    ids = student_prompt(plain, "Given a = 1 + 2. Find a.", PromptConfig())
    assert plain.decode(ids).startswith("Given a = 1 + 2. Find a.")
