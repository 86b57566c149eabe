"""`atesd bench --suite toy`: every method on the toy world, same rollout budget, several seeds.

For each seed and each method of `METHODS` (name → config file + overrides) the bench

1. trains into `<out>/<seed>/<method>/` with `seed=<seed>`, validating on the val split a few
   times (`validation.every`) and keeping the best model by validation Average@k in `best/`
   ("base" does not train: it is the warm-started model, validated once the same way),
2. evaluates `best/` under the budget's test protocol (`atesd.experiments.protocol.TOY_PROTOCOL`
   for the full bench: Average@8 on the 500 test problems, sampling seed 1234), so every run of
   every method and seed is scored on the same problems with the same sampling seeds (paired
   comparisons),
3. records the rollout tokens spent (the sum of `rollout/tokens` in metrics.jsonl up to the chosen
   step, and in total) and the validation curve against cumulative rollout tokens,
4. writes `result.json` atomically. A killed bench continues: runs with a result.json are skipped,
   the others resume from their latest checkpoint with `train(cfg, resume=True)`.

Then `atesd.experiments.bench_report` writes `<out>/bench.json`, `<out>/BENCHMARKS-toy.md` and the PNGs.

The budget (stated in the report): every trained method sees the same number of (prompt, rollout)
pairs per step, `prompts_per_step`. GRPO samples G rollouts per prompt, so it gets
prompts_per_step / G distinct prompts per step (G = min(the config's G, prompts_per_step)).
SFT samples nothing: its "rollout tokens" are the tokens of the reference completions it trains
on, as the training loop logs them.

Time plan (printed at start): a cost model fitted to runs of this bench on a 2-core CPU
(`SECONDS_PER_ROLLOUT` per (prompt, rollout) pair of training, `SECONDS_PER_EVAL_SAMPLE` per
sampled evaluation completion, `RUN_OVERHEAD_S` per run; learned exposure pays
`LEARNED_OVERHEAD` for its probe forwards). A resumed run's `train_seconds` counts its last
stretch only.

Departures (ours, not the papers'):
  1. Toy scale: the toy configs' 500 steps of 32 prompts, validation on the 200 validation problems
     with k = 4 every 125 steps, the test protocol of `atesd.experiments.protocol`.
  2. `--quick` builds its own tiny world (preset toy-test, 400 training problems, 50 warm-start
     steps, cached): a CI smoke of every method in about a minute.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from atesd import atomic
from atesd.config import ConfigError, TrainConfig, load_config
from atesd.experiments.bench_methods import METHODS, METHODS_BY_NAME, Method  # noqa: F401 (the bench's table)
from atesd.experiments.protocol import TOY_PROTOCOL, EvalProtocol, evaluate_under

RESULT_FILE = "result.json"
PLAN_FILE = "bench_plan.json"
SECONDS_PER_ROLLOUT = 0.88 / 32  # OPSD on toy-1m, 2 threads: 0.88 s per step of 32 rollouts (2026-11-29)
SECONDS_PER_EVAL_SAMPLE = 0.01  # the toy protocol's 4,000 samples in ~35-45 s
LEARNED_OVERHEAD = 1.2  # toy-atesd.yaml: probe and counterfactual credit, 1.03 s per step
RUN_OVERHEAD_S = 10.0  # per run: loading models, checkpoints, saving best/ and final/




@dataclass(frozen=True)
class BenchBudget:
    """Per-run budget. Rollouts per run = steps × prompts_per_step for every trained method."""

    steps: int
    prompts_per_step: int
    validation_every: int
    val_problems: int
    val_k: int
    test: EvalProtocol
    max_new_tokens: int
    keep_checkpoints: int = 2

    @property
    def rollouts_per_run(self) -> int:
        return self.steps * self.prompts_per_step


FULL_BUDGET = BenchBudget(steps=500, prompts_per_step=32, validation_every=125, val_problems=200, val_k=4,
                          test=TOY_PROTOCOL, max_new_tokens=128, keep_checkpoints=4)
QUICK_BUDGET = BenchBudget(steps=2, prompts_per_step=2, validation_every=1, val_problems=2, val_k=2,
                           test=EvalProtocol(name="quick", n_problems=8, k=2, max_new_tokens=32, batch_size=16),
                           max_new_tokens=32)


@dataclass(frozen=True)
class BenchOutcome:
    """What `run_bench` returns: the output folder, the (seed, method) runs it trained or evaluated
    in this call (finished runs found on disk are skipped) and the files it wrote."""

    out: Path
    ran: tuple[tuple[int, str], ...]
    skipped: tuple[tuple[int, str], ...]
    files: tuple[Path, ...]


def planned_seconds(budget: BenchBudget, methods: Sequence[Method], n_seeds: int) -> float:
    """The cost model of the module docstring: training, validation and test sampling."""
    total = 0.0
    validations = -(-budget.steps // budget.validation_every)
    for method in methods:
        evaluation = (budget.test.n_problems or 500) * budget.test.k
        if method.trains:  # the exposure-controller configs pay for probe forwards (an upper bound)
            overhead = LEARNED_OVERHEAD if method.config.startswith("toy-atesd") else 1.0
            total += budget.rollouts_per_run * SECONDS_PER_ROLLOUT * overhead
            evaluation += validations * budget.val_problems * budget.val_k
        else:
            evaluation += budget.val_problems * budget.val_k
        total += evaluation * SECONDS_PER_EVAL_SAMPLE + RUN_OVERHEAD_S
    return total * n_seeds


def _shown(path: Path) -> str:
    """The path as a report records it: relative to the working directory when inside it (a committed
    bench.json names no path of the machine it ran on), else absolute."""
    path = path.resolve()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def _default_config_dir() -> Path:
    here = Path("configs")
    return here if (here / "toy-opsd.yaml").is_file() else Path(__file__).resolve().parents[2] / "configs"


def quick_world() -> Path:
    """A tiny cached toy world for `--quick` (departure 2)."""
    from atesd.toy.build import ToyWorldConfig, build_toy_world
    from atesd.toy.warmstart import WarmStartConfig

    cfg = ToyWorldConfig(preset="toy-test", n_train=400, n_val=16, n_test=16, threads=1,
                         warm_start=WarmStartConfig(steps=50, batch_size=16))
    return build_toy_world(cfg, progress=False)


def method_config(method: Method, seed: int, budget: BenchBudget, run_dir: Path, model_dir: str,
                  data_dir: str, config_dir: Path | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """The TrainConfig of one run: the method's file, the bench's `overrides` (the same for every
    method, e.g. optim.lr=1e-4), the method's overrides, then the bench's budget, seed (also the
    exposure policy's seed), paths and validation settings; checkpoints at every validation. A method
    with G > 1 rollouts per prompt (GRPO, the group pass rate) gets prompts_per_step / G prompts of G each."""
    factor = math.gcd(method.batch_factor, budget.steps)  # the method's own unless the budget is too short (--quick)
    every = max(1, budget.validation_every // factor)
    common = [
        f"model.name_or_path={model_dir}", f"data.train={Path(data_dir) / 'train.jsonl'}",
        f"data.val={Path(data_dir) / 'val.jsonl'}", f"seed={seed}", f"exposure.seed={seed}",
        f"steps={budget.steps // factor}", f"prompts_per_step={budget.prompts_per_step * factor}",
        f"rollout.max_new_tokens={budget.max_new_tokens}", f"validation.every={every}",
        f"validation.k={budget.val_k}", f"validation.max_problems={budget.val_problems}",
        "validation.temperature=1.0", f"save_every={every}", f"output_dir={run_dir}",
        f"keep_checkpoints={budget.keep_checkpoints}",
        "progress=false",
    ]
    path = (config_dir or _default_config_dir()) / method.config
    cfg = load_config(path, [*overrides, *method.overrides, *common])
    if cfg.rollout.num_generations > 1:
        per_step = budget.prompts_per_step * factor
        group = min(cfg.rollout.num_generations, per_step)
        if per_step % group:
            raise ConfigError(f"bench: prompts_per_step={per_step} is not a multiple of {method.name}'s "
                             f"{group} rollouts per prompt; the rollout budgets would differ")
        cfg = load_config(path, [*overrides, *method.overrides, *common, f"rollout.num_generations={group}",
                                 f"prompts_per_step={per_step // group}"])
    return cfg


def _validation_protocol(budget: BenchBudget, seed: int) -> EvalProtocol:
    """The base row's validation: what the training loop's validator does for trained runs."""
    return EvalProtocol(name="validation", split="val", n_problems=budget.val_problems, k=budget.val_k, seed=seed,
                        max_new_tokens=budget.max_new_tokens, batch_size=64)


def _metrics_by_step(run_dir: Path) -> list[dict]:
    """metrics.jsonl, one record per step (the last line of a repeated step wins), in step order."""
    from atesd.experiments.report import read_jsonl

    by_step = {r["step"]: r for r in read_jsonl(run_dir / "metrics.jsonl") if isinstance(r.get("step"), int)}
    return [by_step[s] for s in sorted(by_step)]


def training_record(run_dir: Path, chosen_step: int) -> dict:
    """Rollout tokens to the chosen step (steps 0 … chosen_step − 1) and in total, the validation
    curve [(step, cumulative rollout tokens, val Average@k)] and the reveal ratio per step."""
    from atesd.experiments.report import final_beta_mean

    tokens, to_chosen, curve, ratios = 0, 0, [], []
    for record in _metrics_by_step(run_dir):
        tokens += int(record.get("rollout/tokens", 0))
        if record["step"] < chosen_step:
            to_chosen = tokens
        if record.get("eval/val_average_at_k") is not None:
            curve.append({"step": record["step"] + 1, "tokens": tokens,
                          "val_accuracy": float(record["eval/val_average_at_k"])})
        if record.get("exposure/reveal_ratio") is not None:
            ratios.append([record["step"], float(record["exposure/reveal_ratio"])])
    return {"rollout_tokens_to_chosen": to_chosen, "rollout_tokens_total": tokens, "val_curve": curve,
            "reveal_ratios": ratios, "final_beta_mean": final_beta_mean(run_dir),
            "reward_correlations": credited_reward_correlations(run_dir)}


def credited_reward_correlations(run_dir: Path) -> dict | None:
    """`atesd diagnose rewards` of a learned run (corr of α, or α − α′, with each reward part, overall and
    per level), kept in result.json so that a committed bench carries what the docs' correlation tables
    are read from; None for a run without credited decisions. An undefined r (under 4 decisions) is null."""
    from atesd.experiments.exposure_diagnostic import reward_correlations

    if not (run_dir / "exposure.jsonl").is_file():
        return None
    try:
        found = reward_correlations(run_dir)
    except ValueError:  # no credited decision: not a learned policy, or too short a run
        return None
    found.pop("run")  # the result's own folder
    return json.loads(json.dumps(found), parse_constant=lambda constant: None)  # NaN → null


def run_one(method: Method, seed: int, budget: BenchBudget, run_dir: Path, model_dir: str, data_dir: str,
            config_dir: Path, overrides: Sequence[str] = ()) -> dict:
    """Train (or resume), choose `best/` by validation, evaluate it under the budget's test protocol,
    write result.json."""
    from atesd.train import train

    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = method_config(method, seed, budget, run_dir, model_dir, data_dir, config_dir, overrides)
    test = budget.test.problems(data_dir)
    started = time.perf_counter()
    if method.trains:
        train(cfg, resume=True)  # from the latest checkpoint, or from step 0 when there is none
        chosen_dir = run_dir / "best"
        validation = json.loads((chosen_dir / "validation.json").read_text())
        chosen_step, val_best = int(validation["step"]), float(validation["average_at_k"])
        record = training_record(run_dir, chosen_step)
    else:  # the warm-started model, validated once like the trained runs (a line in bench_tokens.png)
        chosen_dir, chosen_step = Path(model_dir), 0
        validation = _validation_protocol(budget, seed)
        val_best = evaluate_under(validation, chosen_dir, validation.problems(data_dir), cfg.prompts).average_at_k
        record = {"rollout_tokens_to_chosen": 0, "rollout_tokens_total": 0,
                  "val_curve": [{"step": 0, "tokens": 0, "val_accuracy": val_best}], "reveal_ratios": [],
                  "final_beta_mean": None, "reward_correlations": None}
    train_seconds = time.perf_counter() - started
    report = evaluate_under(budget.test, chosen_dir, test, cfg.prompts)
    last = last_step_test(method, budget, run_dir, chosen_step, report.to_dict(), test, cfg.prompts)
    result = {
        "method": method.name, "seed": seed, "config": method.config, "overrides": list(method.overrides),
        "objective": cfg.loss.objective, "exposure_policy": cfg.exposure.policy,
        "prompts_per_step": cfg.prompts_per_step, "num_generations": cfg.rollout.num_generations,
        "chosen_step": chosen_step, "val_best": val_best, **record,
        "test": report.to_dict(), "test_last_step": last, "train_seconds": round(train_seconds, 1),
        "eval_seconds": round(time.perf_counter() - started - train_seconds, 1),
    }
    atomic.write_json(run_dir / RESULT_FILE, result)
    return result


def last_step_test(method: Method, budget: BenchBudget, run_dir: Path, chosen_step: int, chosen_test: dict, test,
                   prompts) -> dict | None:
    """The test evaluation of the last step's model (`final/`), for telling a method apart from the
    noise of choosing its checkpoint on validation: the chosen checkpoint's own when it is the last."""
    if not method.trains:
        return None
    if chosen_step == budget.steps:
        return chosen_test
    return evaluate_under(budget.test, run_dir / "final", test, prompts).to_dict()


def machine_info() -> dict:
    """CPU model, core count, torch version and intra-op threads of this machine."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "python": platform.python_version()}


def _check_plan(out: Path, plan: dict) -> None:
    """A bench folder holds one budget and one set of overrides: continuing it with others would mix
    incomparable runs."""
    path = out / PLAN_FILE
    if path.is_file():
        old = json.loads(path.read_text())
        keys = ("budget", "model_dir", "data_dir", "overrides")
        if {k: old.get(k, [] if k == "overrides" else None) for k in keys} != {k: plan[k] for k in keys}:
            raise ConfigError(f"{out} holds a bench with another budget, model or overrides ({path}); "
                              "choose another --out")
    atomic.write_json(path, plan)


def run_bench(suite: str = "toy", seeds: int | None = None, quick: bool = False, out: str | os.PathLike | None = None,
              methods: Sequence[str] | None = None, model_dir: str | os.PathLike | None = None,
              data_dir: str | os.PathLike | None = None, config_dir: str | os.PathLike | None = None,
              command: str | None = None, overrides: Sequence[str] = (), steps: int | None = None,
              seed_offset: int = 0) -> BenchOutcome:
    """Run (or continue) the bench and write its report; see the module docstring.

    seeds: how many seeds (seed_offset … seed_offset + seeds − 1); default 3, or 1 with quick. seed_offset
    (default 0): where they start, so fresh seeds are one call (seeds=3, seed_offset=6: seeds 6, 7, 8); the
    folder's report covers the seeds of this call. methods: a subset of `METHODS` by name (default all).
    model_dir / data_dir: a prebuilt model and a folder with train.jsonl, val.jsonl, test.jsonl (default: the configs' toy world, or the quick world;
    data_dir defaults to `<model_dir>/data`, a toy world's layout). command: shown in the report.
    overrides: `key=value` applied to every method's config before its own overrides (recorded in
    the plan: a folder holds one bench). steps: training steps per run instead of the budget's,
    validating every steps / 4 (the toy configs' own length: `steps=500`, 5.5 h for the full suite by the cost model).
    """
    from atesd.experiments.bench_report import write_report

    if suite != "toy":
        raise ConfigError(f"bench: unknown suite {suite!r}; the only suite is 'toy'")
    budget = QUICK_BUDGET if quick else FULL_BUDGET
    if steps is not None:
        if steps < 1:
            raise ConfigError(f"bench: --steps must be >= 1, got {steps}")
        budget = replace(budget, steps=steps, validation_every=max(1, steps // 4))
    seeds = seeds if seeds is not None else (1 if quick else 3)
    if seeds < 1:
        raise ConfigError(f"bench: --seeds must be >= 1, got {seeds}")
    if seed_offset < 0:
        raise ConfigError(f"bench: --seed-offset must be >= 0, got {seed_offset}")
    seed_list = list(range(seed_offset, seed_offset + seeds))
    chosen = list(methods) if methods is not None else [m.name for m in METHODS]
    unknown = [name for name in chosen if name not in METHODS_BY_NAME]
    if unknown:
        raise ConfigError(f"bench: unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS_BY_NAME)}")
    table = [METHODS_BY_NAME[name] for name in chosen]
    out = Path(out if out is not None else ("runs/bench-toy-quick" if quick else "runs/bench-toy"))
    config_dir = Path(config_dir) if config_dir is not None else _default_config_dir()
    if model_dir is None:
        if quick:
            model_dir = quick_world()
        else:
            from atesd.toy.paths import resolve_toy_paths

            print("[bench] building (or reusing) the toy world ...")
            model_dir = resolve_toy_paths(load_config(config_dir / "toy-opsd.yaml")).model.name_or_path
    model_dir = _shown(Path(model_dir))
    data_dir = _shown(Path(data_dir) if data_dir is not None else Path(model_dir) / "data")
    command = command or (f"atesd bench --suite {suite} --seeds {seeds}"
                          f"{f' --seed-offset {seed_offset}' if seed_offset else ''}{' --quick' if quick else ''} --out {out}")

    out.mkdir(parents=True, exist_ok=True)
    plan = {"suite": suite, "budget": asdict(budget), "seeds": seed_list, "methods": chosen,
            "model_dir": model_dir, "data_dir": data_dir, "overrides": list(overrides)}
    _check_plan(out, plan)
    estimate = planned_seconds(budget, table, seeds)
    print(f"[bench] {len(table)} methods × seeds {', '.join(map(str, seed_list))}; per run {budget.steps} steps × "
          f"{budget.prompts_per_step} rollouts = {budget.rollouts_per_run} (prompt, rollout) pairs "
          f"(GRPO: prompts_per_step / G prompts × G rollouts); validation every {budget.validation_every} steps "
          f"on {budget.val_problems} problems × {budget.val_k}; test: {budget.test.describe()}; estimated {estimate / 60:.1f} min on 2 CPU cores "
          "(a cost model, see atesd.experiments.bench)")

    results, ran, skipped = [], [], []
    for seed in seed_list:
        for method in table:
            run_dir = out / str(seed) / method.name
            if (run_dir / RESULT_FILE).is_file():
                results.append(json.loads((run_dir / RESULT_FILE).read_text()))
                skipped.append((seed, method.name))
                continue
            t0 = time.perf_counter()
            result = run_one(method, seed, budget, run_dir, model_dir, data_dir, config_dir, overrides)
            results.append(result)
            ran.append((seed, method.name))
            print(f"[bench] seed {seed} {method.name}: test Average@{budget.test.k} "
                  f"{100 * result['test']['average_at_k']:.1f}% (chosen step {result['chosen_step']}, "
                  f"{time.perf_counter() - t0:.0f} s)")
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    meta = {"command": command, "machine": machine_info(), "date": date, "estimated_seconds": round(estimate), **plan}
    files = write_report(out, results, meta)
    return BenchOutcome(out, tuple(ran), tuple(skipped), tuple(files))
