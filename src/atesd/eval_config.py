"""`atesd eval`: its config (one YAML file per benchmark, `--config FILE [--model M]`) and `run_eval`.

An `EvalConfig` holds the arguments of `atesd.evaluate.run_eval` (same names, same defaults as the
`atesd eval` flags) plus the data source: `data`, `split` and `columns` (our field → the source's
column, as `atesd.data.load_problems` takes it). A file may start with `base: other.yaml`
(relative to the file), merged first, so each benchmark file states only its data. Precedence:
defaults ← base files ← the file ← command-line flags.

The shipped configs (configs/eval/) reproduce the evaluation of ATESD (arXiv 2605.11458) and OPSD
(arXiv 2601.18734): AIME 2024, AIME 2025 and HMMT February 2025 at Average@12, thinking on,
temperature 1.0, top-p 0.95, up to 38,912 new tokens, math-verify on the last `\\boxed{}`.

Where we depart from the papers / what we add:
1. Benchmarks have a problem and a final answer, no worked solution. `prepare_eval_dir` loads them
   with `load_problems(..., require_solution=False)` and writes `out_dir/problems.jsonl` (the exact
   problems evaluated) plus `out_dir/eval_config.yaml` (the resolved config, with the hub id);
   `run_eval` then reads that file. A row without a boxed solution gets the stand-in solution
   `\\boxed{answer}`: it is never shown to the model (evaluation uses only the problem and the
   answer), it only keeps problems.jsonl a valid training-format file (`run_eval` itself loads
   evaluation-only sets: `atesd eval --data answers.jsonl --columns problem=question,answer=final`
   works without a config too).
2. The papers do not say whether top-k was used at evaluation; the shipped configs disable it
   (top_k 0), sampling exactly "temperature 1.0, top-p 0.95".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Optional

from omegaconf import OmegaConf

from atesd import atomic
from atesd.config import ConfigError, check_choices, merge_into, merge_yaml_file
from atesd.evaluate import EvalReport, evaluate

PROBLEMS_FILE = "problems.jsonl"
CONFIG_FILE = "eval_config.yaml"
_COLUMN_FIELDS = ("id", "problem", "solution", "answer", "difficulty", "source")


@dataclass(frozen=True)
class EvalConfig:
    """One evaluation: which model, which problems, how to sample (`atesd.evaluate.run_eval` takes
    it; the `atesd eval` flags override its fields and show these defaults)."""

    model: Optional[str] = None  # local model directory or hub id (usually given with --model)
    data: Optional[str] = None  # problem file (JSONL/JSON/CSV/Parquet) or hub dataset name
    split: Optional[str] = None  # hub split; only for hub datasets
    columns: dict[str, str] = field(default_factory=dict)  # field → column, e.g. {id: problem_idx}
    k: int = 8  # samples per problem (Average@k)
    out_dir: str = "eval"  # eval.json, eval.md, samples.jsonl, problems.jsonl, eval_config.yaml
    max_new_tokens: int = 1024
    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 20  # 0: no top-k filter
    seed: int = 0
    limit: Optional[int] = None  # the first N problems only
    thinking: bool = False  # the student prompt's enable_thinking
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    batch_size: int = 64  # samples per generation call
    device: Optional[str] = None  # None: cuda when available, else cpu
    score_workers: Optional[int] = None  # answer-checking processes (None: default pool; 0: in-process)
    write_samples: bool = True  # also write samples.jsonl
    on_bad_row: Literal["error", "skip"] = "error"  # skip: drop bad rows with one warning naming them
    max_bad_row_share: Optional[float] = None  # skip: stop when more than this share of the rows is bad; None: never
    max_prompt_tokens: Optional[int] = None  # drop problems whose student prompt is longer; None: keep all
    backend: Literal["hf", "vllm"] = "hf"  # vllm: atesd.eval_vllm (the `vllm` extra)
    data_parallel: Optional[int] = None  # vllm: engines (None: every visible GPU group; 1 without GPUs)
    tensor_parallel: int = 1  # vllm: GPUs per engine
    gpu_memory_utilization: float = 0.9  # vllm: fraction of each GPU an engine may take
    max_model_len: Optional[int] = None  # vllm: prompt + completion limit (None: the model's)

    def __post_init__(self) -> None:
        """Range checks; each message names the key."""
        check_choices(self, "eval")
        checks = (
            (self.k >= 1, f"k must be >= 1, got {self.k}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.max_new_tokens >= 1, f"max_new_tokens must be >= 1, got {self.max_new_tokens}"),
            (self.limit is None or self.limit >= 1, f"limit must be >= 1 (or null for all problems), got {self.limit}"),
            (self.temperature >= 0, f"temperature must be >= 0, got {self.temperature}"),
            (0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}"),
            (self.top_k >= 0, f"top_k must be >= 0 (0 disables it), got {self.top_k}"),
            (self.max_bad_row_share is None or 0 <= self.max_bad_row_share <= 1,
             f"max_bad_row_share must be between 0 and 1 (or null), got {self.max_bad_row_share}"),
            (self.max_prompt_tokens is None or self.max_prompt_tokens >= 1,
             f"max_prompt_tokens must be >= 1 (or null for no limit), got {self.max_prompt_tokens}"),
            (self.tensor_parallel >= 1, f"tensor_parallel must be >= 1, got {self.tensor_parallel}"),
            (self.data_parallel is None or self.data_parallel >= 1,
             f"data_parallel must be >= 1 (or null: every visible GPU), got {self.data_parallel}"),
            (not set(self.columns) - set(_COLUMN_FIELDS),
             f"columns: unknown field(s) {sorted(set(self.columns) - set(_COLUMN_FIELDS))}; the fields are "
             f"{list(_COLUMN_FIELDS)}"),
        )
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


def load_eval_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> EvalConfig:
    """Defaults ← base files ← the YAML file at `path` ← `overrides` (field name → value; the CLI
    passes only the flags given). Overriding `data` without `split` clears the split: a split
    belongs to its dataset. Raises ConfigError for an unknown key or an invalid value.
    `model` and `data` may still be None here: see `check_complete`."""
    conf = OmegaConf.structured(EvalConfig)
    if path is not None:
        conf = merge_yaml_file(conf, Path(path), EvalConfig)
    overrides = dict(overrides or {})
    if "data" in overrides and "split" not in overrides:
        overrides["split"] = None
    if overrides:
        conf = merge_into(conf, OmegaConf.create(overrides), "command line", EvalConfig)
    try:
        return OmegaConf.to_object(conf)
    except (ValueError, TypeError) as err:
        raise ConfigError(str(err)) from None


def parse_columns(value: str) -> dict[str, str]:
    """The `--columns` flag, ``problem=question,answer=final``, as {field: column}. Raises
    ConfigError naming the flag, the bad part and the fields for a malformed value."""
    columns: dict[str, str] = {}
    form = f"expected FIELD=COLUMN[,FIELD=COLUMN...] with FIELD one of {', '.join(_COLUMN_FIELDS)}"
    for part in value.split(","):
        field_name, equals, column = (text.strip() for text in part.partition("="))
        if not equals or not field_name or not column:
            raise ConfigError(f"--columns {value!r}: {part.strip()!r} is not FIELD=COLUMN; {form}")
        if field_name not in _COLUMN_FIELDS:
            raise ConfigError(f"--columns {value!r}: unknown field {field_name!r}; {form}")
        if field_name in columns:
            raise ConfigError(f"--columns {value!r}: field {field_name!r} is mapped twice")
        columns[field_name] = column
    return columns


def check_complete(cfg: EvalConfig) -> None:
    """A runnable config names a model and data; the message says which flag supplies each."""
    missing = [f"{name} (--{name})" for name in ("model", "data") if not getattr(cfg, name)]
    if missing:
        raise ConfigError(f"missing required eval value(s): {', '.join(missing)}")


def _stand_in_solution(problem) -> str:
    """The problem's own solution when it has a boxed answer, else `\\boxed{answer}` (departure 1)."""
    from atesd.answers import extract_boxed

    if extract_boxed(problem.solution):
        return problem.solution
    boxed = f"\\boxed{{{problem.answer}}}"
    return boxed if extract_boxed(boxed) == problem.answer else "\\boxed{?}"


def prepare_eval_dir(cfg: EvalConfig) -> Path:
    """Load cfg's problems as an evaluation-only set; write the ones evaluated (the first `limit`),
    with stand-in solutions, to `out_dir/problems.jsonl` and the resolved config to
    `out_dir/eval_config.yaml`; return the problems file, `run_eval`'s data path (departure 1)."""
    from atesd.data import EVAL_OPTIONS, DataError, load_problems, write_problems

    check_complete(cfg)
    try:
        problems = load_problems(cfg.data, split=cfg.split, columns=cfg.columns or None, on_bad_row=cfg.on_bad_row,
                                 require_solution=False, max_bad_row_share=cfg.max_bad_row_share,
                                 options=EVAL_OPTIONS)
    except DataError:
        raise
    except ValueError as err:  # e.g. a split given for a local file
        raise ConfigError(f"data={cfg.data!r}: {err}") from None
    problems = problems[:cfg.limit] if cfg.limit is not None else problems
    out = Path(cfg.out_dir)
    path = out / PROBLEMS_FILE
    write_problems(path, [dataclasses.replace(p, solution=_stand_in_solution(p)) for p in problems])
    atomic.write_text(out / CONFIG_FILE, OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    return path


__all__ = ["EvalConfig", "load_eval_config", "parse_columns", "check_complete", "prepare_eval_dir"]


def run_eval(cfg: EvalConfig, progress: bool = True) -> EvalReport:
    """Load cfg's problems (an evaluation-only set: a problem and an answer, a worked solution
    optional; the first `limit`; bad rows per `on_bad_row`), the tokenizer (dropping problems whose
    prompt is over `max_prompt_tokens`), then the model (offline, safetensors, no remote code);
    evaluate, and write eval.json, eval.md (and samples.jsonl) into `cfg.out_dir`. Returns the
    report. `thinking` is the student's `enable_thinking`; `device` defaults to cuda when available.
    backend "vllm": vLLM engines serve the model directory (`atesd.eval_vllm`, data-parallel over the
    visible GPUs, `tensor_parallel` GPUs each); the HF model is not loaded."""
    from atesd.config import ModelConfig
    from atesd.data import EVAL_OPTIONS, load_problems
    from atesd.data_checks import drop_long_prompts
    from atesd.models import load_pretrained, load_tokenizer
    from atesd.prompts import PromptConfig
    from atesd.rollout import SamplingParams

    problems = load_problems(cfg.data, split=cfg.split, columns=cfg.columns or None, on_bad_row=cfg.on_bad_row,
                             require_solution=False, max_bad_row_share=cfg.max_bad_row_share,
                             options=EVAL_OPTIONS)  # evaluation uses the problem and the answer only
    problems = problems[: cfg.limit] if cfg.limit is not None else problems
    prompt_cfg = PromptConfig(student_thinking=cfg.thinking)
    tokenizer = load_tokenizer(ModelConfig(name_or_path=str(cfg.model)))  # prompts are checked before the model loads
    problems = drop_long_prompts(problems, tokenizer, prompt_cfg, cfg.max_prompt_tokens, str(cfg.data))
    sampling = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                              top_k=cfg.top_k, seed=cfg.seed)
    meta = dict(model=str(cfg.model), data=str(cfg.data), split=cfg.split, limit=cfg.limit, thinking=cfg.thinking,
                dtype=cfg.dtype, batch_size=cfg.batch_size, max_prompt_tokens=cfg.max_prompt_tokens)
    model = engine = None
    if cfg.backend == "vllm":
        from atesd.eval_vllm import DataParallelVLLM

        engine = DataParallelVLLM(str(cfg.model), cfg.tensor_parallel, cfg.data_parallel, dict(
            dtype=cfg.dtype, seed=cfg.seed, gpu_memory_utilization=cfg.gpu_memory_utilization,
            max_model_len=cfg.max_model_len))
        meta.update(engine.layout())
    else:
        model, tokenizer = load_pretrained(cfg.model, cfg.dtype, cfg.device, tokenizer=tokenizer)
        meta.update(backend="hf", device=str(next(model.parameters()).device))
    report = evaluate(model, tokenizer, problems, k=cfg.k, sampling=sampling, prompt_cfg=prompt_cfg,
                      batch_size=cfg.batch_size, progress=progress, engine=engine, score_workers=cfg.score_workers,
                      meta=meta)
    report.save(cfg.out_dir, samples=cfg.write_samples)
    return report


__all__ = ["EvalConfig", "load_eval_config", "check_complete", "prepare_eval_dir", "run_eval"]
