"""The toy tokenizer, chat template and model presets, loaded the way users load real checkpoints."""

from __future__ import annotations

import os

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from atesd.prompts import PromptConfig, assistant_prefix, student_prompt, student_text, teacher_prompt
from atesd.reveal import reveal
from atesd.toy.model import PRESETS, build_model


def test_tokenizer_decodes_back_to_the_exact_text(tiny_tokenizer, toy_problems):
    for p in toy_problems:
        for text in (p.problem, p.solution, student_text(tiny_tokenizer, p.problem, PromptConfig())):
            ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
            assert tiny_tokenizer.decode(ids) == text


def test_every_digit_and_punctuation_mark_is_its_own_token(tiny_tokenizer):
    tokens = tiny_tokenizer.convert_ids_to_tokens(tiny_tokenizer("((12*7)+84)-1099")["input_ids"])
    assert tokens == list("((12*7)+84)-1099")


def test_special_tokens_are_single_ids_and_eos_ends_the_assistant_turn(tiny_tokenizer):
    for token in ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"):
        assert len(tiny_tokenizer(token, add_special_tokens=False)["input_ids"]) == 1
    assert tiny_tokenizer.eos_token == "<|im_end|>"
    assert tiny_tokenizer.pad_token == "<|endoftext|>" and tiny_tokenizer.pad_token_id != tiny_tokenizer.eos_token_id


def test_chat_template_with_thinking_off_opens_an_empty_think_block(tiny_tokenizer):
    messages = [{"role": "user", "content": "hi"}]
    off = tiny_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    on = tiny_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=True)
    default = tiny_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert off == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    assert on == default == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_student_and_teacher_prompts_end_with_the_same_assistant_prefix(tiny_tokenizer, toy_problems):
    problem = toy_problems[-1]
    for student_thinking in (False, True):
        cfg = PromptConfig(student_thinking=student_thinking, teacher_thinking=not student_thinking)
        prefix = tiny_tokenizer(assistant_prefix(tiny_tokenizer, cfg), add_special_tokens=False)["input_ids"]
        student = student_prompt(tiny_tokenizer, problem.problem, cfg)
        teacher = teacher_prompt(tiny_tokenizer, problem.problem, reveal(problem.solution, 0.5), cfg)
        assert student[-len(prefix):] == teacher[-len(prefix):] == prefix
    off = assistant_prefix(tiny_tokenizer, PromptConfig(student_thinking=False))
    assert off == "<|im_start|>assistant\n<think>\n\n</think>\n\n"


def test_model_dir_loads_offline_with_auto_classes_and_generates_until_eos(tiny_model_dir):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert (tiny_model_dir / "model.safetensors").is_file()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert type(model).__name__ == "Qwen3ForCausalLM"
    assert model.config.eos_token_id == tokenizer.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert model.config.vocab_size == len(tokenizer)
    ids = torch.tensor([tokenizer("Evaluate 1+2.")["input_ids"]])
    out = model.generate(ids, max_new_tokens=5, do_sample=False)
    assert out.shape[0] == 1 and 0 < out.shape[1] - ids.shape[1] <= 5


def test_presets_have_the_documented_sizes(tiny_tokenizer):
    sizes = {name: sum(p.numel() for p in build_model(name, tiny_tokenizer).parameters()) for name in PRESETS}
    assert 0.8e6 < sizes["toy-1m"] < 1.0e6
    assert 3.5e6 < sizes["toy-5m"] < 5.0e6
    assert sizes["toy-test"] < 0.05e6
    assert PRESETS["toy-1m"].hidden == 128 and PRESETS["toy-1m"].layers == 4
    assert PRESETS["toy-5m"].hidden == 256 and PRESETS["toy-5m"].layers == 5


def test_same_seed_gives_the_same_initial_weights(tiny_tokenizer):
    first, second = build_model("toy-test", tiny_tokenizer, seed=1), build_model("toy-test", tiny_tokenizer, seed=1)
    other = build_model("toy-test", tiny_tokenizer, seed=2)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    assert not torch.equal(first.model.embed_tokens.weight, other.model.embed_tokens.weight)
