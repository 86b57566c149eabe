"""Loading models and tokenizers: the one place `from_pretrained` is called.

`load_model` / `load_tokenizer` give the policy for training (a hub id or a local directory, a
dtype, LoRA or full fine-tuning, gradient checkpointing); `load_pretrained` gives a frozen model and
its tokenizer for evaluation and analysis.

Weights load through `from_pretrained` (safetensors); `trust_remote_code` stays off unless the
config turns it on. A model or tokenizer that cannot be loaded is an OSError naming it (the CLI
prints it on one line). Nothing here reaches the network unless the user names a hub model.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from atesd import atomic
from atesd.config import ModelConfig
from atesd.distributed import is_sharded

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _from_pretrained(loader, what: str, name_or_path: str, **kwargs):
    """`loader.from_pretrained(name_or_path, ...)`; a failure (transformers raises OSError or
    ValueError for a missing or foreign directory) becomes an OSError that names the model."""
    try:
        return loader.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError) as err:
        where = "" if Path(name_or_path).expanduser().is_dir() else " (no such local directory, so looked up as a hub id)"
        raise OSError(f"cannot load the {what} of {name_or_path!r}{where}: {err}") from err


def load_tokenizer(cfg: ModelConfig):
    tokenizer = _from_pretrained(AutoTokenizer, "tokenizer", cfg.name_or_path, trust_remote_code=cfg.trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(cfg: ModelConfig, trainable: bool = True):
    """The causal LM, with a LoRA adapter when `cfg.lora.enabled` and `trainable`."""
    kwargs = {"dtype": DTYPES[cfg.dtype], "trust_remote_code": cfg.trust_remote_code}
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    model = _from_pretrained(AutoModelForCausalLM, "model", cfg.name_or_path, **kwargs)
    if not trainable:
        return model.eval().requires_grad_(False)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if cfg.lora.enabled:
        from peft import LoraConfig as PeftLoraConfig
        from peft import get_peft_model

        peft_cfg = PeftLoraConfig(
            r=cfg.lora.rank,
            lora_alpha=cfg.lora.alpha,
            lora_dropout=cfg.lora.dropout,
            target_modules=list(cfg.lora.target_modules),
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, peft_cfg)
    return model


def load_pretrained(name_or_path, dtype: str = "float32", device: str | None = None,
                    trust_remote_code: bool = False, tokenizer=None):
    """(model, tokenizer): a frozen model in eval mode on `device` (default: cuda when present) and
    its tokenizer (`tokenizer` when the caller loaded it already, e.g. to check prompts first)."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    cfg = ModelConfig(name_or_path=str(name_or_path), dtype=dtype, trust_remote_code=trust_remote_code)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return load_model(cfg, trainable=False).to(device), tokenizer if tokenizer is not None else load_tokenizer(cfg)


def is_lora(model) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


def output_head(model) -> torch.nn.Module:
    """The lm_head projecting final hidden states to vocabulary logits."""
    return model.get_output_embeddings()


def save_trained(model, tokenizer, directory: str | Path, extra_json: dict[str, dict] | None = None,
                 is_main: bool = True) -> Path:
    """The trained model as an ordinary Hugging Face directory, written atomically (a staging folder,
    then a rename), with `extra_json` files (name → content) inside. A LoRA run saves the adapter in
    `adapter/` and the merged weights at the top, so `atesd eval` loads it like any model.

    Every process may call it and only `is_main` writes; a sharded model (FSDP2, ZeRO-3) is gathered
    module by module (`atesd.weights`), so there every process must call it."""
    directory = Path(directory)
    if is_sharded(model):
        return _save_sharded(model, tokenizer, directory, extra_json, is_main)
    if not is_main:
        return directory
    staging = atomic.staging_dir(directory, "saving")
    try:
        if is_lora(model):
            model.save_pretrained(staging / "adapter", safe_serialization=True)
            copy.deepcopy(model).merge_and_unload().save_pretrained(staging, safe_serialization=True)
        else:
            model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        for name, payload in (extra_json or {}).items():
            atomic.write_json(staging / name, payload)
        return atomic.replace_dir(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _save_sharded(model, tokenizer, directory: Path, extra_json, is_main: bool) -> Path:
    from atesd.weights import trainable_state, write_checkpoint

    staging = atomic.staging_dir(directory, "saving") if is_main else None
    try:
        adapter = trainable_state(model) if is_lora(model) else None
        write_checkpoint(model, tokenizer, staging, write=is_main)
        if not is_main:
            return directory
        if adapter is not None:
            model.save_pretrained(staging / "adapter", state_dict=adapter, safe_serialization=True)
        for name, payload in (extra_json or {}).items():
            atomic.write_json(staging / name, payload)
        return atomic.replace_dir(staging, directory)
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
