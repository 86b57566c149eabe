"""The toy world's tokenizer and model presets, saved as ordinary Hugging Face directories.

The tokenizer is a byte-level BPE trained offline on the task's own text, with Qwen3's ChatML
special tokens and a chat template that handles `enable_thinking` like Qwen3's: thinking off opens
the assistant turn with an empty think block. The model is a `Qwen3ForCausalLM` with random weights,
so everything downstream (prompts, rollouts, teacher scoring, LoRA) runs on the same code path as a
real Qwen3 checkpoint.

Where this departs from a real Qwen3:
1. A vocabulary of a few hundred tokens learnt on the toy text; every digit and every punctuation
   mark is its own token, so arithmetic is written digit by digit.
2. The chat template keeps only what the project renders (system/user/assistant turns, the
   generation prompt, thinking on/off); no tools, no reasoning-content stripping of past turns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

END_OF_TEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
THINK_START = "<think>"
THINK_END = "</think>"
SPECIAL_TOKENS = (END_OF_TEXT, IM_START, IM_END, THINK_START, THINK_END)

# Qwen3's behaviour: thinking is on unless enable_thinking is passed as false; with thinking off the
# generation prompt carries an empty think block.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512, max_length: int = 1024):
    """A byte-level BPE `PreTrainedTokenizerFast` trained on `texts` (about a second for ~1 MB).

    Digits and punctuation marks are split one per token before BPE (so `((`, `)-(` never merge
    and an expression is the same tokens wherever it is written); the ByteLevel decoder turns
    tokens back into the exact text (without it, decoding joins tokens with spaces and answer extraction fails).
    """
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.Punctuation(behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token=IM_END,
        pad_token=END_OF_TEXT,
        additional_special_tokens=[IM_START, THINK_START, THINK_END],
        model_max_length=max_length,
        padding_side="left",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


@dataclass(frozen=True)
class ModelPreset:
    """Shape of a toy Qwen3. `head_dim` × `heads` need not equal `hidden` (Qwen3 allows it)."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    max_positions: int = 1024


PRESETS: dict[str, ModelPreset] = {
    # unit tests: builds and runs in milliseconds
    "toy-test": ModelPreset(hidden=32, layers=2, heads=2, kv_heads=1, head_dim=16, intermediate=64),
    # the default toy world: 0.84M parameters with the toy task's 385-token vocabulary
    "toy-1m": ModelPreset(hidden=128, layers=4, heads=4, kv_heads=2, head_dim=32, intermediate=384),
    # ~4M parameters: slower to warm-start on CPU (~1.7 s/step on 2 cores)
    "toy-5m": ModelPreset(hidden=256, layers=5, heads=4, kv_heads=2, head_dim=64, intermediate=768),
}


def build_model(preset: str | ModelPreset, tokenizer, seed: int = 0):
    """A randomly initialised `Qwen3ForCausalLM` sized for `tokenizer`, deterministic for `seed`."""
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    shape = PRESETS[preset] if isinstance(preset, str) else preset
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        head_dim=shape.head_dim,
        max_position_embeddings=shape.max_positions,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.convert_tokens_to_ids(END_OF_TEXT),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=config.bos_token_id,
    )
    return model


def save_model_dir(model, tokenizer, directory: str | Path) -> Path:
    """Write a directory that `AutoModelForCausalLM` / `AutoTokenizer.from_pretrained` load offline."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


def tokenizer_corpus(problems: Iterable, prompt_cfg=None) -> Iterable[str]:
    """The texts a toy tokenizer learns from: each problem in the student and teacher instructions,
    its solution, and the chat roles, so instructions merge into few tokens."""
    from atesd.prompts import PromptConfig

    cfg = prompt_cfg or PromptConfig()
    yield "system\nuser\nassistant\n"
    for p in problems:
        yield cfg.student_template.format(problem=p.problem)
        yield cfg.teacher_template.format(problem=p.problem, reference=p.solution)
        yield p.solution
