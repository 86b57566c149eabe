"""Student and teacher prompts.

The student sees the problem; the teacher sees the problem and a revealed part of the reference
solution (OPSD, arXiv 2601.18734, section 3; ATESD, arXiv 2605.11458, section 3). Both render through
the tokenizer's chat template when it has one, plain text otherwise.

Where we depart from the published code:
1. The teacher's assistant prefix is always the student's generation prefix. The rollout that the
   teacher scores starts right after the student's prefix (for Qwen3 with thinking off: an empty
   think block); giving the teacher another prefix puts a spurious KL spike on the first rollout
   tokens (a known bug of the OPSD reference code). `teacher_thinking` therefore only changes how
   the teacher's own context renders, never the prefix before the scored tokens.
2. The same student prompt is used for training and for evaluation (no "Problem:" drift).
3. The wording of the instructions is ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from atesd.reveal import ROUNDINGS, reveal

DEFAULT_STUDENT_TEMPLATE = "{problem}\n\nPlease reason step by step, and put your final answer within \\boxed{{}}."

DEFAULT_TEACHER_TEMPLATE = (
    "{problem}\n\n"
    "Here is a reference solution:\n"
    "=== Reference Solution Begin ===\n"
    "{reference}\n"
    "=== Reference Solution End ===\n\n"
    "Study the reference, then solve the problem in your own reasoning; do not copy it.\n"
    "Please reason step by step, and put your final answer within \\boxed{{}}."
)


@dataclass
class PromptConfig:
    """How the two roles are rendered.

    student_template: the user turn of the student; `{problem}` is replaced.
    teacher_template: the user turn of the teacher; `{problem}` and `{reference}` (the revealed
        reference ỹ*_α) are replaced.
    student_thinking: `enable_thinking` for the student's chat template (OPSD: off). It also sets
        the assistant prefix shared by both roles.
    teacher_thinking: `enable_thinking` for rendering the teacher's context (OPSD: on).
    system_prompt: an optional system turn for both roles.
    reveal_rounding: how α becomes a number of revealed steps: "floor" ⌊α·m⌋ (the paper's), or
        "nearest" ⌊α·m + 1/2⌋ (ours: with few steps per solution the floor never gives full
        exposure to α < 1; `atesd.reveal`, departure 7).
    """

    student_template: str = DEFAULT_STUDENT_TEMPLATE
    teacher_template: str = DEFAULT_TEACHER_TEMPLATE
    student_thinking: bool = False
    teacher_thinking: bool = True
    system_prompt: str | None = None
    reveal_rounding: Literal["floor", "nearest"] = "floor"

    def __post_init__(self) -> None:
        if self.reveal_rounding not in ROUNDINGS:
            raise ValueError(f"prompts.reveal_rounding must be one of {', '.join(ROUNDINGS)}, got {self.reveal_rounding!r}")
        if "{problem}" not in self.student_template:
            raise ValueError("prompts.student_template must contain '{problem}'")
        for field in ("{problem}", "{reference}"):
            if field not in self.teacher_template:
                raise ValueError(f"prompts.teacher_template must contain '{field}'")


def _messages(user: str, cfg: PromptConfig) -> list[dict[str, str]]:
    system = [{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt else []
    return system + [{"role": "user", "content": user}]


def _has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _render(tokenizer, user: str, cfg: PromptConfig, thinking: bool, generation: bool) -> str:
    if not _has_chat_template(tokenizer):
        return user + ("\n\n" if generation else "")
    return tokenizer.apply_chat_template(
        _messages(user, cfg),
        tokenize=False,
        add_generation_prompt=generation,
        enable_thinking=thinking,
    )


def assistant_prefix(tokenizer, cfg: PromptConfig) -> str:
    """The text the student's chat template appends to open the assistant turn.

    Found as the difference between the rendering with and without the generation prompt, so it
    works for any template (Qwen3 with thinking off: "<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n").
    """
    probe = "x"
    with_prefix = _render(tokenizer, probe, cfg, cfg.student_thinking, generation=True)
    without = _render(tokenizer, probe, cfg, cfg.student_thinking, generation=False)
    if not with_prefix.startswith(without):
        raise ValueError("the chat template's generation prompt does not extend the conversation")
    return with_prefix[len(without):]


def student_text(tokenizer, problem: str, cfg: PromptConfig) -> str:
    """The student's full prompt text, ending with the assistant prefix."""
    user = cfg.student_template.format(problem=problem)
    return _render(tokenizer, user, cfg, cfg.student_thinking, generation=True)


def teacher_text(tokenizer, problem: str, revealed: str, cfg: PromptConfig) -> str:
    """The teacher's full prompt text: its own context, then the student's assistant prefix."""
    user = cfg.teacher_template.format(problem=problem, reference=revealed)
    context = _render(tokenizer, user, cfg, cfg.teacher_thinking, generation=False)
    return context + assistant_prefix(tokenizer, cfg)


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def student_prompt(tokenizer, problem: str, cfg: PromptConfig) -> list[int]:
    """Token ids of the student prompt p_S(·|x)."""
    return _encode(tokenizer, student_text(tokenizer, problem, cfg))


def teacher_prompt(tokenizer, problem: str, revealed: str, cfg: PromptConfig) -> list[int]:
    """Token ids of the teacher prompt p_T^α(·|x, ỹ*_α); ends with the student's assistant prefix."""
    return _encode(tokenizer, teacher_text(tokenizer, problem, revealed, cfg))


def teacher_view(tokenizer, problem, reveal_ratio: float, cfg: PromptConfig) -> list[int]:
    """The teacher prompt of a problem (an `atesd.data.Problem`) at reveal ratio α: the problem x and
    ỹ*_α = reveal(y*, α). The one place a teacher view is built."""
    return teacher_prompt(tokenizer, problem.problem, reveal(problem.solution, reveal_ratio, cfg.reveal_rounding), cfg)


def reference_completion(solution: str, tokenizer=None) -> str:
    """The completion a model should produce for a reference solution (used by SFT, the probe NLL
    and the grounding score): the solution itself, closed by the end-of-turn token when the
    tokenizer has one."""
    end = getattr(tokenizer, "eos_token", None) if tokenizer is not None else None
    return solution.strip() + (end or "")
