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


def _sequences(tokenizer, toy_problems):
    from atesd.prompts import student_prompt
    from atesd.scoring import build_sequences

    prompts = [student_prompt(tokenizer, p.problem, PromptConfig()) for p in toy_problems[:3]]
    completions = [text_ids(tokenizer, reference_completion(p.solution, tokenizer)) for p in toy_problems[:3]]
    return build_sequences(prompts, completions, tokenizer.pad_token_id)


@pytest.mark.parametrize("wrap", ["plain", "peft"])
def test_completion_hidden_is_the_last_hidden_state_without_keeping_every_layers(tiny_model, tiny_tokenizer,
                                                                                 toy_problems, wrap):
    from atesd.scoring import completion_hidden

    model = tiny_model
    if wrap == "peft":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    batch = _sequences(tiny_tokenizer, toy_problems)
    requested = []
    model.register_forward_pre_hook(lambda module, args, kwargs: requested.append(kwargs), with_kwargs=True)
    with torch.no_grad():
        hidden = completion_hidden(model, batch)
        everything = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                           position_ids=batch.position_ids, output_hidden_states=True).hidden_states
    assert not requested[0].get("output_hidden_states")  # only the final norm's output is captured
    expected = everything[-1].reshape(-1, everything[-1].shape[-1]).index_select(0, batch.target_index)
    assert hidden.shape == (len(batch.target_ids), everything[-1].shape[-1])
    assert torch.equal(hidden, expected)


def test_completion_hidden_keeps_the_graph_for_the_student_loss(tiny_model, tiny_tokenizer, toy_problems):
    from atesd.scoring import completion_hidden

    hidden = completion_hidden(tiny_model.train(), _sequences(tiny_tokenizer, toy_problems))
    hidden.square().sum().backward()
    assert tiny_model.model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0
