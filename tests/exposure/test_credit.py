"""First-order probe credit: the central difference and the forward-mode credit are the directional
derivative autograd gives (forward mode also in bfloat16 with LoRA), the weights come back bit for bit, and the probe direction leaves the training gradient alone."""

from __future__ import annotations

import copy

import torch

from atesd.config import LossConfig
from atesd.exposure import ProbeCredit, StepCredit
from atesd.prompts import PromptConfig, student_prompt, teacher_view
from atesd.scoring import build_sequences, completion_hidden
from atesd.teacher import Teacher


def _setup(tiny_model, tiny_tokenizer, toy_problems):
    model = tiny_model.train().requires_grad_(True)
    cfg = LossConfig(divergence="reverse_kl", chunk_size=5)
    credit = ProbeCredit(toy_problems[10:14], tiny_tokenizer, PromptConfig(), cfg, step=1e-3)
    problems = toy_problems[:3]
    completions = [[5, 6, 7, 8], [9, 10], [11, 12, 13]]
    student = build_sequences([student_prompt(tiny_tokenizer, p.problem, PromptConfig()) for p in problems],
                              completions, tiny_tokenizer.pad_token_id)
    views = [build_sequences([teacher_view(tiny_tokenizer, p, a, PromptConfig()) for p in problems], completions,
                             tiny_tokenizer.pad_token_id) for a in (0.0, 1.0)]
    return model, cfg, credit, student, views


def test_credit_is_the_directional_derivative_of_each_rollouts_loss(tiny_model, tiny_tokenizer, toy_problems):
    from atesd.divergence_chunked import chunked_divergence

    model, cfg, credit, student, views = _setup(tiny_model, tiny_tokenizer, toy_problems)
    teacher = Teacher("frozen", model)
    direction = credit.direction(model, torch.optim.AdamW(model.parameters()))
    assert abs(sum(float((d.double() ** 2).sum()) for d in direction) - 1.0) < 1e-6  # unit norm
    before = [p.detach().clone() for p in model.parameters()]
    values = credit.measure(model, teacher, student, views, direction)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # restored exactly
    params = [p for p in model.parameters() if p.requires_grad]
    for arm, view in enumerate(views):
        with torch.no_grad():
            teacher_hidden = completion_hidden(teacher.copy, view)
        for i in range(3):
            out = chunked_divergence(completion_hidden(model, student), teacher_hidden, model.lm_head.weight,
                                     kind="reverse_kl", teacher_lm_head_weight=teacher.copy.lm_head.weight)
            per_rollout = out.divergence[student.token_rollout == i].mean()
            grads = torch.autograd.grad(per_rollout, params, allow_unused=True)
            exact = sum(float((g * d).sum()) for g, d in zip(grads, direction) if g is not None)
            assert abs(float(values[arm, i]) - exact) < 2e-3 * max(1.0, abs(exact)), (arm, i, float(values[arm, i]), exact)


def test_probe_direction_leaves_the_accumulated_training_gradient_alone(tiny_model, tiny_tokenizer, toy_problems):
    model, _, credit, _, _ = _setup(tiny_model, tiny_tokenizer, toy_problems)
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    credit.direction(model, torch.optim.AdamW(model.parameters()))
    assert all(torch.equal(p.grad, torch.full_like(p, 0.5)) for p in model.parameters())


def test_adam_preconditions_the_direction_once_it_has_state(tiny_model, tiny_tokenizer, toy_problems):
    model, _, credit, _, _ = _setup(tiny_model, tiny_tokenizer, toy_problems)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    plain = credit.direction(model, optimizer)
    for p in model.parameters():  # one step with a gradient that is large on some parameters only
        p.grad = torch.zeros_like(p)
        p.grad.view(-1)[0] = 100.0
    optimizer.step()
    conditioned = credit.direction(model, optimizer)
    assert any(not torch.allclose(a, b) for a, b in zip(plain, conditioned))


def test_step_credit_pairs_each_example_with_its_counterfactual():
    credit = StepCredit(indices=(0, 5), chosen=(0.3, -0.1), counterfactual=(0.1, 0.2))
    assert credit.paired() == [0.3 - 0.1, -0.1 - 0.2]
    assert abs(credit.paired_mean() - (0.2 - 0.3) / 2) < 1e-12


def _teacher_side(model, teacher, views):
    """The teacher's hidden states of each view and its head weight, as the credit takes them."""
    with torch.no_grad(), teacher.context(model):
        teacher_model = teacher.model(model)
        return ([completion_hidden(teacher_model, view) for view in views],
                teacher_model.get_output_embeddings().weight.detach().clone())


def _exact_credit(model, teacher_hidden, teacher_head, student, direction):
    """⟨∇_θ L_i(α), û⟩ by reverse mode, per view and rollout (the definition the credit approximates)."""
    from atesd.divergence_chunked import chunked_divergence

    params = [p for p in model.parameters() if p.requires_grad]
    values = torch.zeros(len(teacher_hidden), len(student.completion_lengths), dtype=torch.float64)
    for arm, hidden in enumerate(teacher_hidden):
        for i in range(len(student.completion_lengths)):
            out = chunked_divergence(completion_hidden(model, student), hidden.to(params[0].dtype),
                                     model.get_output_embeddings().weight, kind="reverse_kl",
                                     teacher_lm_head_weight=teacher_head.to(params[0].dtype))
            grads = torch.autograd.grad(out.divergence[student.token_rollout == i].mean(), params, allow_unused=True)
            values[arm, i] = sum(float((g.double() * d.double()).sum()) for g, d in zip(grads, direction)
                                 if g is not None)
    return values


def test_forward_mode_credit_is_the_directional_derivative_in_float32(tiny_model, tiny_tokenizer, toy_problems):
    model, cfg, credit, student, views = _setup(tiny_model, tiny_tokenizer, toy_problems)
    forward = ProbeCredit(toy_problems[10:14], tiny_tokenizer, PromptConfig(), cfg, step=1e-3,
                          derivative="forward_mode")
    teacher = Teacher("frozen", model)
    direction = forward.direction(model, torch.optim.AdamW(model.parameters()))
    before = [p.detach().clone() for p in model.parameters()]
    values = forward.measure(model, teacher, student, views, direction)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    exact = _exact_credit(model, *_teacher_side(model, teacher, views), student, direction)
    torch.testing.assert_close(values.double(), exact, rtol=1e-4, atol=1e-6)
    central = credit.measure(model, teacher, student, views, direction)
    torch.testing.assert_close(values, central, rtol=2e-3, atol=2e-3)


def test_forward_mode_credit_holds_in_bfloat16_with_lora_and_checkpointing(tiny_model_dir, tiny_tokenizer,
                                                                           toy_problems):
    """On a bf16 LoRA model (checkpointing on, train mode) the forward-mode credit matches the exact
    derivative computed in float64 on the same weights: each paired difference within 5 % of their
    spread."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"],
                                            lora_dropout=0.0, init_lora_weights=False))
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    cfg = LossConfig(divergence="reverse_kl", chunk_size=5)
    problems = toy_problems[:4]
    completions = [[5, 6, 7, 8, 9, 10], [9, 10, 11], [11, 12, 13, 14], [20, 21, 22, 23, 24]]
    student = build_sequences([student_prompt(tiny_tokenizer, p.problem, PromptConfig()) for p in problems],
                              completions, tiny_tokenizer.pad_token_id)
    views = [build_sequences([teacher_view(tiny_tokenizer, p, a, PromptConfig()) for p in problems], completions,
                             tiny_tokenizer.pad_token_id) for a in (0.0, 1.0)]
    forward = ProbeCredit(toy_problems[10:14], tiny_tokenizer, PromptConfig(), cfg, step=1e-2,
                          derivative="forward_mode")
    teacher = Teacher("frozen", model)
    direction = forward.direction(model, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad]))
    values = forward.measure(model, teacher, student, views, direction).double()

    reference = copy.deepcopy(model).double()  # the same (bf16-valued) weights, float64 arithmetic
    reference.gradient_checkpointing_disable()
    exact = _exact_credit(reference, *_teacher_side(model, teacher, views), student, direction)
    paired, exact_paired = values[0] - values[1], exact[0] - exact[1]
    spread = float(exact_paired.abs().max())
    assert spread > 0
    assert float((paired - exact_paired).abs().max()) < 0.05 * spread, (paired, exact_paired)
