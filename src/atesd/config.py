"""The training configuration: nested dataclasses, YAML files and dotted overrides.

Every field is documented once, here, and names the paper symbol it sets. `load_config` reads a
YAML file into this schema with OmegaConf, applies `key=value` overrides, and rejects an unknown key
with the closest valid one as a suggestion. A choice is a `Literal` (OmegaConf rejects any other
value at merge time, naming the key); each section checks its own fields in `__post_init__` and
`TrainConfig` the checks that span sections. Names are the same in YAML, on the command line, in
metrics and in docs/algorithm.md.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from atesd.config_names import report_to_list, trl_suggestion
from atesd.exposure.config import ExposureConfig
from atesd.prompts import PromptConfig


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message says which key and why."""


def _check(condition: bool, message: str) -> None:
    """A section's own validation: the message names the key and says how to fix it."""
    if not condition:
        raise ValueError(message)


def check_choices(section, prefix: str) -> None:
    """Every `Literal` field of a dataclass holds one of its values (OmegaConf checks this when a
    config is merged; this covers sections built directly in Python)."""
    hints = typing.get_type_hints(type(section))
    for f in dataclasses.fields(section):
        hint = hints[f.name]
        if typing.get_origin(hint) is Literal and getattr(section, f.name) not in typing.get_args(hint):
            choices = ", ".join(repr(c) for c in typing.get_args(hint))
            raise ValueError(f"{prefix}.{f.name}={getattr(section, f.name)!r} is not one of {choices}")


@dataclass
class LoraConfig:
    """LoRA through peft. OPSD: rank 64, alpha 128 on all attention and MLP projections."""

    enabled: bool = False
    rank: int = 64
    alpha: int = 128
    dropout: float = 0.0
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )

    def __post_init__(self) -> None:
        _check(self.rank >= 1 and self.alpha > 0, "model.lora.rank must be >= 1 and model.lora.alpha > 0")


@dataclass
class ModelConfig:
    """The policy (student) model; the teacher is the same model (see TeacherConfig)."""

    name_or_path: str = "???"  # hub id or local directory
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    trust_remote_code: bool = False  # off unless the user turns it on
    gradient_checkpointing: bool = False
    attn_implementation: Optional[str] = None  # e.g. sdpa, flash_attention_2; None: transformers' default
    lora: LoraConfig = field(default_factory=LoraConfig)

    def __post_init__(self) -> None:
        check_choices(self, "model")


@dataclass
class DataConfig:
    """Training problems x with reference solutions y*."""

    train: str = "???"  # a local JSONL/JSON/CSV/Parquet file or a hub dataset name
    split: Optional[str] = None  # hub split (e.g. "train")
    problem_column: str = "problem"
    solution_column: str = "solution"
    answer_column: Optional[str] = None  # None: the last \boxed{} of the solution
    val: Optional[str] = None  # validation file, used by periodic evaluation
    on_bad_row: Literal["error", "skip"] = "error"  # skip: drop bad rows with one warning naming them
    max_bad_row_share: Optional[float] = 0.05  # skip: stop when more than this share of the rows is bad; null: never
    max_prompt_tokens: Optional[int] = None  # drop rows whose student prompt is longer (train and val); None: keep all

    def __post_init__(self) -> None:
        check_choices(self, "data")
        _check(self.max_bad_row_share is None or 0 <= self.max_bad_row_share <= 1,
               f"data.max_bad_row_share must be between 0 and 1 (or null), got {self.max_bad_row_share}")
        _check(self.max_prompt_tokens is None or self.max_prompt_tokens >= 1,
               f"data.max_prompt_tokens must be >= 1 (or null for no limit), got {self.max_prompt_tokens}")


@dataclass
class RolloutConfig:
    """Sampling ŷ ~ p_S(·|x). OPSD: up to 1024 tokens, temperature 1.1, top-p 0.95, top-k 20."""

    backend: Literal["hf", "vllm"] = "hf"
    max_new_tokens: int = 1024
    temperature: float = 1.1
    top_p: float = 0.95
    top_k: int = 20
    num_generations: int = 1  # rollouts per prompt (GRPO's G; 1 for OPSD/ATESD)
    batch_size: int = 64  # prompts per generation call (HF backend)
    hf_decoder: Literal["lean", "generate"] = "lean"  # HF backend: atesd.rollout.lean for plain Qwen3, or generate
    vllm_gpu_memory_utilization: float = 0.3  # vLLM backend: GPU memory fraction for its KV cache
    vllm_enforce_eager: bool = False  # vLLM backend: skip CUDA graphs (slower, less memory)
    # vLLM backend: sleep (level 2) after each rollout phase, freeing its weights and KV cache for the
    # loss; the next weight sync and generate wake them (GPU only; memory/device_used_gib shows it)
    vllm_sleep_mode: bool = False

    def __post_init__(self) -> None:
        check_choices(self, "rollout")
        _check(self.max_new_tokens >= 1, f"rollout.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        _check(self.num_generations >= 1, "rollout.num_generations must be >= 1")
        _check(self.batch_size >= 1, f"rollout.batch_size must be >= 1, got {self.batch_size}")


@dataclass
class LossConfig:
    """The per-token objective D(p_T^α ‖ p_S) and its options (OPSD section 3)."""

    objective: Literal["distill", "sft", "grpo"] = "distill"
    divergence: Literal["forward_kl", "reverse_kl", "jsd", "sampled_token"] = "forward_kl"
    jsd_beta: float = 0.5  # β of generalised JSD: mixture β·p_T + (1−β)·p_S
    token_clip: Optional[float] = None  # τ_clip: cap on each vocabulary entry's term (OPSD: 0.05)
    temperature: float = 1.0  # both logits divided by it before the softmax (OPSD: 1.1)
    top_k: Optional[int] = None  # restrict to the teacher's top-k support plus a tail bucket
    # Tokens per chunk of the memory-efficient divergence and log-probs; null: the largest power of
    # two up to 1024 whose ~5 float32 [chunk, V] buffers fit in chunk_memory_mib (128 at Qwen3's
    # 151,936 vocabulary, 12x below full logits at 2048 tokens: BENCHMARKS.md; 1024 for the toy world).
    chunk_size: Optional[int] = None
    chunk_memory_mib: int = 512  # the budget of the automatic chunk size
    # Logits as float32 products of bf16/fp16 weights (atesd.divergence_chunked, "Logit precision");
    # null: on when token_clip is set (bf16 logits move terms across the clip: 17-21% gradient error).
    float32_logits: Optional[bool] = None
    skip_first_tokens: int = 0  # completion tokens excluded from the loss at the start
    grpo_kl_coef: float = 0.0  # GRPO: weight of the k3 KL to the initial policy (OPSD's baseline: 0)
    grpo_clip_eps: float = 0.2  # GRPO: importance-ratio clip ε

    def __post_init__(self) -> None:
        check_choices(self, "loss")
        _check(0 <= self.jsd_beta <= 1, f"loss.jsd_beta must be in [0, 1], got {self.jsd_beta}")
        _check(self.token_clip is None or self.token_clip > 0,
               "loss.token_clip must be positive (or null to disable the clip)")
        _check(self.temperature > 0, f"loss.temperature must be > 0, got {self.temperature}")
        _check(self.chunk_size is None or self.chunk_size >= 1,
               f"loss.chunk_size must be >= 1 (or null: automatic), got {self.chunk_size}")
        _check(self.chunk_memory_mib >= 1, f"loss.chunk_memory_mib must be >= 1, got {self.chunk_memory_mib}")


@dataclass
class TeacherConfig:
    """Which weights play p_T. OPSD default: the frozen initial policy."""

    kind: Literal["frozen", "live", "ema"] = "frozen"
    ema_decay: float = 0.99  # for kind=ema: θ_T ← d·θ_T + (1−d)·θ

    def __post_init__(self) -> None:
        check_choices(self, "teacher")
        _check(0 <= self.ema_decay < 1, "teacher.ema_decay must be in [0, 1)")


@dataclass
class OptimConfig:
    """AdamW with warm-up then a constant or cosine learning rate. OPSD: lr 5e-6, grad clip 0.1."""

    lr: float = 5e-6
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8  # AdamW ε
    warmup_steps: int = 0
    schedule: Literal["constant", "cosine"] = "constant"
    max_grad_norm: float = 0.1
    grad_accum_steps: int = 1  # micro-batches per optimizer step on each process

    def __post_init__(self) -> None:
        check_choices(self, "optim")
        _check(self.grad_accum_steps >= 1, f"optim.grad_accum_steps must be >= 1, got {self.grad_accum_steps}")
        _check(self.lr > 0 and self.max_grad_norm > 0, "optim.lr and optim.max_grad_norm must be > 0")


@dataclass
class ValidationConfig:
    """Periodic sampled evaluation on `data.val`, used to choose the checkpoint (never the test split).

    every: evaluate after every N optimizer steps and after the last one (0: never).
    k: samples per problem (Average@k). max_problems: the first N validation problems.
    The best model by validation Average@k is kept in `output_dir/best/`.
    """

    every: int = 0
    k: int = 4
    max_problems: int = 200
    temperature: float = 1.0
    max_new_tokens: Optional[int] = None  # None: rollout.max_new_tokens

    def __post_init__(self) -> None:
        _check(self.every >= 0 and self.k >= 1, "validation.every must be >= 0 and validation.k >= 1")


@dataclass
class TrainConfig:
    """One training run. `prompts_per_step` is the global batch: split across processes and
    gradient-accumulation micro-batches, so results do not depend on how it is split."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    exposure: ExposureConfig = field(default_factory=ExposureConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    steps: int = 100  # optimizer steps T
    prompts_per_step: int = 32  # global prompts per optimizer step
    seed: int = 0
    output_dir: str = "runs/default"
    save_every: int = 50  # checkpoint every N steps (and at the end)
    keep_checkpoints: int = 2  # most recent checkpoints kept on disk
    max_bad_steps: int = 5  # stop after this many non-finite losses in a row
    report_to: list[str] = field(default_factory=list)  # accelerate trackers: tensorboard, wandb ("wandb" works too)
    progress: bool = True  # tqdm progress bar on the main process

    def __post_init__(self) -> None:
        """Checks that span sections (each section checks its own fields)."""
        _check(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        _check(self.prompts_per_step >= 1, f"prompts_per_step must be >= 1, got {self.prompts_per_step}")
        _check(self.save_every >= 1, "save_every must be >= 1")
        _check(self.loss.objective != "grpo" or self.rollout.num_generations >= 2,
               "loss.objective=grpo needs rollout.num_generations >= 2 (group-normalised advantages)")
        _check(not self.validation.every or bool(self.data.val),
               "validation.every > 0 needs data.val (a validation problem file)")
        _check(self.exposure.policy != "learned" or self.loss.divergence != "sampled_token",
               "exposure.policy=learned reads the top-1 disagreement of a full-vocabulary divergence; "
               "loss.divergence=sampled_token has none: use forward_kl, reverse_kl or jsd")


def valid_keys(schema: type = TrainConfig, prefix: str = "") -> list[str]:
    """Every dotted key the schema accepts (e.g. "exposure.hold_steps")."""
    keys = []
    for f in dataclasses.fields(schema):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            keys.extend(valid_keys(type(default), f"{prefix}{f.name}."))
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def _unknown_key_error(bad: str, source: str, schema: type) -> ConfigError:
    """The error for an unknown key: the atesd key of a TRL / Transformers name (atesd.config_names),
    else the closest valid spelling."""
    trl = trl_suggestion(bad) if schema is TrainConfig else None
    close = difflib.get_close_matches(bad, valid_keys(schema), n=1, cutoff=0.5)
    hint = f"; {trl}" if trl else f"; did you mean '{close[0]}'?" if close else ""
    return ConfigError(f"{source}: unknown config key '{bad}'{hint}")


def merge_into(base, other, source: str, schema: type = None):
    """OmegaConf.merge with errors that name the source and suggest the closest valid key; a string
    `report_to` (TRL's `report_to="wandb"`) becomes a list first."""
    if OmegaConf.is_dict(other) and isinstance(other.get("report_to"), str):
        other.report_to = report_to_list(other.report_to)
    try:
        return OmegaConf.merge(base, other)
    except ConfigKeyError as err:
        bad = getattr(err, "full_key", None) or str(err)
        raise _unknown_key_error(str(bad), source, schema or TrainConfig) from None
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", "?")
        detail = str(getattr(err, "msg", err)).splitlines()[0]
        raise ConfigError(f"{source}: invalid value for '{key}': {detail}") from None


def merge_yaml_file(conf, path: Path, schema: type = None, seen: tuple = ()):
    """Merge a YAML file into `conf`; a top-level `base: other.yaml` (relative to the file) is
    merged first, so a config can state only how it differs from another."""
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: 'base' files form a cycle")
    try:
        file_conf = OmegaConf.load(path)
    except Exception as err:  # yaml errors carry the line
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    base = file_conf.pop("base", None) if OmegaConf.is_dict(file_conf) else None
    if base is not None:
        conf = merge_yaml_file(conf, path.parent / str(base), schema, seen + (path.resolve(),))
    return merge_into(conf, file_conf, str(path), schema)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Schema defaults ← base files ← YAML file ← `key=value` overrides, validated into a TrainConfig."""
    conf = OmegaConf.structured(TrainConfig)
    if path is not None:
        conf = merge_yaml_file(conf, Path(path))
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}': expected key=value")
        conf = merge_into(conf, OmegaConf.from_dotlist([item]), f"override '{item}'")
    missing = sorted(OmegaConf.missing_keys(conf))
    if missing:
        raise ConfigError(f"missing required config value(s): {', '.join(missing)}")
    try:
        cfg = OmegaConf.to_object(conf)
    except (ValueError, TypeError) as err:  # __post_init__ validation of a section
        raise ConfigError(str(err)) from None
    return cfg


def hyperparameters(cfg: TrainConfig) -> dict:
    """The resolved config as flat `section.key` → scalar pairs, what the trackers record as the
    run's hyperparameters (TensorBoard's hparams take numbers, strings and booleans only)."""
    flat = {}

    def walk(node, prefix):
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                flat[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)

    walk(OmegaConf.to_container(OmegaConf.structured(cfg)), "")
    return flat


def config_yaml(cfg: TrainConfig) -> str:
    """The resolved config as YAML, every field (`atesd train --print-config`, config.yaml)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (the run directory's config.yaml)."""
    Path(path).write_text(config_yaml(cfg))
