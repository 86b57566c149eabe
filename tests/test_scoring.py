"""atesd.scoring: log-probs of completions after a prompt, batch-independent, and the grounding score."""

from __future__ import annotations

import pytest
import torch

from atesd.prompts import PromptConfig, reference_completion, teacher_view
from atesd.reveal import withheld
from atesd.scoring import completion_logprobs, grounding_scores, text_ids


def test_completion_logprobs_equal_a_full_forward_per_sequence_in_any_batch(tiny_model, tiny_tokenizer,
                                                                              toy_problems):
    prompts = [teacher_view(tiny_tokenizer, p, 0.5, PromptConfig()) for p in toy_problems[:4]]
    completions = [[5, 6, 7], [8], [9, 10, 11, 12], [13, 14]]
    with torch.no_grad():
        batched = completion_logprobs(tiny_model, prompts, completions, tiny_tokenizer.pad_token_id,
                                      batch_size=3, chunk_size=2)
        for prompt, completion, got in zip(prompts, completions, batched):
            logits = tiny_model(input_ids=torch.tensor([prompt + completion])).logits[0, len(prompt) - 1:-1]
            expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(completion)[:, None]).squeeze(-1)
            assert torch.allclose(got, expected, atol=1e-5)


def test_grounding_score_is_the_teacher_mean_logprob_of_the_withheld_reference(tiny_model, tiny_tokenizer,
                                                                               toy_problems):
    problems = toy_problems[:5]
    batched = grounding_scores(tiny_model, tiny_tokenizer, problems, 0.5, PromptConfig(), batch_size=2, chunk_size=7)
    alone = grounding_scores(tiny_model, tiny_tokenizer, problems, 0.5, PromptConfig(), batch_size=1)
    assert len(batched) == 5 and all(-50.0 < g <= 0.0 for g in batched)
    assert batched == pytest.approx(alone, abs=1e-4)
    problem = problems[3]
    completion = text_ids(tiny_tokenizer, reference_completion(withheld(problem.solution, 0.5), tiny_tokenizer))
    (logprobs,) = completion_logprobs(tiny_model, [teacher_view(tiny_tokenizer, problem, 0.5, PromptConfig())],
                                      [completion], tiny_tokenizer.pad_token_id)
    assert batched[3] == pytest.approx(float(logprobs.double().mean()), abs=1e-6)
