"""The names a TRL / Transformers user types, mapped to atesd's config keys.

`load_config` (atesd.config) suggests the mapped key when an unknown key is one of these names
(`max_steps=3` → `steps`), before falling back to the closest spelling; README.md prints the same
table (`markdown_table`, checked by tests/test_config_names.py). Names follow
`transformers.TrainingArguments` and TRL's `GRPOConfig` / `GKDConfig` / `ModelConfig`.
"""

from __future__ import annotations

# TRL / Transformers name → (atesd key, what to write or how it differs)
TRL_NAMES: dict[str, tuple[str, str]] = {
    "max_steps": ("steps", "optimizer steps T"),
    "num_train_epochs": ("steps", "atesd counts optimizer steps: steps = epochs × problems / prompts_per_step"),
    "learning_rate": ("optim.lr", ""),
    "per_device_train_batch_size": ("prompts_per_step", "the global batch: split over processes and "
                                                        "optim.grad_accum_steps"),
    "gradient_accumulation_steps": ("optim.grad_accum_steps", ""),
    "bf16": ("model.dtype", "model.dtype=bfloat16"),
    "fp16": ("model.dtype", "model.dtype=float16"),
    "torch_dtype": ("model.dtype", "float32, bfloat16 or float16"),
    "model_name_or_path": ("model.name_or_path", ""),
    "dataset_name": ("data.train", "a local file or a hub dataset (with data.split)"),
    "save_steps": ("save_every", ""),
    "save_total_limit": ("keep_checkpoints", ""),
    "eval_steps": ("validation.every", "needs data.val"),
    "logging_steps": ("(none)", "every step is logged to metrics.jsonl and the trackers"),
    "warmup_steps": ("optim.warmup_steps", ""),
    "lr_scheduler_type": ("optim.schedule", "constant or cosine"),
    "weight_decay": ("optim.weight_decay", ""),
    "adam_beta1": ("optim.beta1", ""),
    "adam_beta2": ("optim.beta2", ""),
    "adam_epsilon": ("optim.eps", ""),
    "max_grad_norm": ("optim.max_grad_norm", ""),
    "gradient_checkpointing": ("model.gradient_checkpointing", ""),
    "use_peft": ("model.lora.enabled", ""),
    "lora_r": ("model.lora.rank", ""),
    "lora_alpha": ("model.lora.alpha", ""),
    "lora_dropout": ("model.lora.dropout", ""),
    "lora_target_modules": ("model.lora.target_modules", ""),
    "max_prompt_length": ("data.max_prompt_tokens", "longer prompts are dropped with a warning"),
    "max_completion_length": ("rollout.max_new_tokens", ""),
    "max_new_tokens": ("rollout.max_new_tokens", ""),
    "num_generations": ("rollout.num_generations", ""),
    "temperature": ("rollout.temperature", "sampling; loss.temperature scales the divergence's logits"),
    "top_p": ("rollout.top_p", ""),
    "top_k": ("rollout.top_k", ""),
    "use_vllm": ("rollout.backend", "rollout.backend=vllm"),
    "vllm_gpu_memory_utilization": ("rollout.vllm_gpu_memory_utilization", ""),
    "beta": ("loss.grpo_kl_coef", "GRPO's KL weight; GKD's β is loss.jsd_beta"),
    "epsilon": ("loss.grpo_clip_eps", ""),
    "report_to": ("report_to", "report_to=wandb or report_to=[tensorboard,wandb]"),
}


def trl_suggestion(key: str) -> str | None:
    """The hint for an unknown dotted key whose last part is a TRL / Transformers name, or None."""
    name = key.rsplit(".", 1)[-1]
    if name not in TRL_NAMES or name == key and name == TRL_NAMES[name][0]:
        return None
    ours, note = TRL_NAMES[name]
    if ours == "(none)":
        return f"TRL's '{name}' has no atesd key: {note}"
    return f"TRL's '{name}' is '{ours}' here" + (f" ({note})" if note else "")


def report_to_list(value) -> list[str]:
    """`report_to` as a list of tracker names: a string is one name or a comma-separated list, as in
    TRL; "none" is no tracker."""
    if isinstance(value, str):
        names = [name.strip() for name in value.split(",") if name.strip()]
        return [] if names == ["none"] else names
    return list(value)


def markdown_table() -> str:
    """README.md's table: TRL / Transformers argument → atesd config key → note."""
    rows = ["| TRL / Transformers | atesd | note |", "| --- | --- | --- |"]
    rows += [f"| `{name}` | `{ours}` | {note} |" if ours != "(none)" else f"| `{name}` | (none) | {note} |"
             for name, (ours, note) in TRL_NAMES.items()]
    return "\n".join(rows) + "\n"
