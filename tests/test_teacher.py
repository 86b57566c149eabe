"""Sequence building: left padding, explicit positions, completion-only hidden states."""

import pytest
import torch

from atesd.scoring import build_sequences, check_same_completions, completion_hidden
from atesd.teacher import Teacher


def test_left_padding_right_aligns_completions_and_positions_start_at_zero():
    batch = build_sequences([[5, 6, 7], [8]], [[1, 2], [3, 4, 9]], pad_id=0)
    assert batch.input_ids.tolist() == [[5, 6, 7, 1, 2], [0, 8, 3, 4, 9]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 3, 4], [0, 0, 1, 2, 3]]
    assert batch.target_ids.tolist() == [1, 2, 3, 4, 9]
    # targets are predicted from the previous position: row 0 positions 2,3; row 1 positions 1,2,3
    assert batch.target_index.tolist() == [2, 3, 6, 7, 8]
    assert batch.token_rollout.tolist() == [0, 0, 1, 1, 1]


def test_completion_hidden_states_give_the_same_logits_as_a_full_unpadded_forward(tiny_model):
    torch.manual_seed(0)
    prompts = [[3, 4, 5, 6, 7, 8], [9, 10]]
    completions = [[11, 12, 13], [14, 15, 16, 17]]
    batch = build_sequences(prompts, completions, pad_id=0)
    with torch.no_grad():
        logits = tiny_model.lm_head(completion_hidden(tiny_model, batch))
        expected = []
        for p, c in zip(prompts, completions):
            full = tiny_model(input_ids=torch.tensor([p + c])).logits[0]
            expected.append(full[len(p) - 1: len(p) + len(c) - 1])
    torch.testing.assert_close(logits, torch.cat(expected), atol=1e-4, rtol=1e-4)


def test_teacher_must_score_the_students_ids():
    student = build_sequences([[1, 2]], [[3, 4]], pad_id=0)
    same = build_sequences([[7, 7, 7]], [[3, 4]], pad_id=0)
    other = build_sequences([[7, 7, 7]], [[3, 5]], pad_id=0)
    check_same_completions(student, same)
    with pytest.raises(AssertionError):
        check_same_completions(student, other)


def test_ema_teacher_moves_toward_the_policy_and_frozen_copy_does_not(tiny_model):
    ema = Teacher("ema", tiny_model, ema_decay=0.5)
    frozen = Teacher("frozen", tiny_model)
    before = next(ema.copy.parameters()).clone()
    with torch.no_grad():
        for p in tiny_model.parameters():
            p.add_(1.0)
    ema.after_optimizer_step(tiny_model)
    frozen.after_optimizer_step(tiny_model)
    torch.testing.assert_close(next(ema.copy.parameters()), before + 0.5)
    torch.testing.assert_close(next(frozen.copy.parameters()), before)


def test_frozen_lora_teacher_is_the_model_with_its_adapter_disabled(tiny_model):
    from peft import LoraConfig, get_peft_model

    lora = get_peft_model(tiny_model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    teacher = Teacher("frozen", lora)
    assert teacher.copy is None  # no second copy of the weights
    batch = build_sequences([[3, 4, 5]], [[6, 7]], pad_id=0)
    with torch.no_grad():
        adapted = completion_hidden(lora, batch)
        with lora.disable_adapter():
            base = completion_hidden(lora, batch)
        t = teacher.hidden(lora, batch)
    torch.testing.assert_close(t, base)
    assert not torch.allclose(t, adapted)
