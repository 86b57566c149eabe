"""First-order probe credit: the central difference is the directional derivative autograd gives,
the weights come back bit for bit, and the probe direction leaves the training gradient alone."""

from __future__ import annotations

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
