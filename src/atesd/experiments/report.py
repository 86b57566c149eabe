"""Plots and a short text summary of one training run directory (`atesd report RUN_DIR`).

Reads the two logs the training loop (`atesd.train`) appends to a run directory:
  metrics.jsonl   one object per optimizer step (keys of `atesd.metrics.StepSummary.metrics` and `atesd.train`)
  exposure.jsonl  exposure-policy events "decision", "credit", "update", "dropped"
                  (`atesd.exposure.decision`, `atesd.exposure.learned`)
and draws PNGs into RUN_DIR/plots/ on matplotlib's Agg canvas (no pyplot, no display):
  reveal_ratio.png  α per step, with each decision's sampled α_raw and used α
  beta_density.png  the controller's Beta(a, b) density over α at five points of training, like
                    ATESD (arXiv 2605.11458) Figure 4B; learned runs only
  reward.png        G_lp, G_gt and R = G_lp + λ_gt·G_gt per closed decision; the controller's
                    loss and Beta entropy per update
  loss_kl.png       distillation loss, divergence mean/p95/p99, top-1 disagreement, divergence
                    on correct vs incorrect rollouts, rollout accuracy, the shares of rollouts that
                    end in a repetition loop (rollout/loop_rate) and that hit the token limit
                    (rollout/truncated), probe NLL, grounding score
A plot whose data the run lacks is not drawn, and a stale copy of it is removed. Lines that do
not parse (a run killed mid-write) and non-finite values (skipped steps) are left out; when a
resumed run repeated a step, the last line of that step wins.

Departures from the paper:
  1. The Beta density snapshots (first decision, 25/50/75 % of the decisions, last) are ours.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

from atesd import atomic
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

SNAPSHOT_FRACTIONS = (0.0, 0.25, 0.5, 0.75, 1.0)
PLOT_NAMES = ("reveal_ratio.png", "beta_density.png", "reward.png", "loss_kl.png")
Series = tuple[list[float], list[float]]  # (x values, y values), same length


def read_jsonl(path: Path) -> list[dict]:
    """The JSON objects of a JSONL file in order; [] when the file is missing; bad lines skipped."""
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if path.is_file() else []:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return [record for record in records if isinstance(record, dict)]


def _number(value) -> float | None:
    """A finite int/float as float; None for bools, strings, null, NaN and ±inf."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return float(value) if number and math.isfinite(value) else None


def _series(records: list[dict], key: str, x_key: str = "step") -> Series:
    xs, ys = [], []
    for record in records:
        x, y = _number(record.get(x_key)), _number(record.get(key))
        if x is not None and y is not None:
            xs.append(x)
            ys.append(y)
    return xs, ys


def beta_params(decision: dict) -> tuple[float, float] | None:
    """(a, b) of a learned-policy decision record; None for the untrained policies' records."""
    a, b = _number(decision.get("beta_a")), _number(decision.get("beta_b"))
    return (a, b) if a is not None and b is not None and a > 0 and b > 0 else None


def beta_pdf(x: float, a: float, b: float) -> float:
    """Beta(a, b) density x^(a−1)(1−x)^(b−1)/B(a, b) at x ∈ (0, 1), B by log-gamma; 0 outside."""
    if not 0.0 < x < 1.0:
        return 0.0
    log_norm = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    return math.exp(log_norm + (a - 1.0) * math.log(x) + (b - 1.0) * math.log1p(-x))


def snapshot_indices(n: int, fractions: tuple[float, ...] = SNAPSHOT_FRACTIONS) -> list[int]:
    """Distinct indices into n decisions at the given fractions of the way through, ascending."""
    return sorted({round(f * (n - 1)) for f in fractions}) if n > 0 else []


@dataclass(frozen=True)
class RunLogs:
    """The parsed logs: metrics one per step (ascending), exposure records by event."""

    metrics: list[dict]
    decisions: list[dict]  # one per decision step, ascending
    credits: list[dict]
    updates: list[dict]

    @property
    def learned(self) -> bool:
        return any(beta_params(d) is not None for d in self.decisions)


def load_run(run_dir: str | Path) -> RunLogs:
    """Read RUN_DIR/metrics.jsonl and RUN_DIR/exposure.jsonl (either may be missing or empty)."""
    run_dir = Path(run_dir)
    if not (run_dir / "metrics.jsonl").is_file() and not (run_dir / "exposure.jsonl").is_file():
        raise FileNotFoundError(f"{run_dir} holds neither metrics.jsonl nor exposure.jsonl: pass "
                                "the directory a training run wrote (its output_dir)")
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    metrics_by_step = {int(r["step"]): r for r in metrics if _number(r.get("step")) is not None}
    events = read_jsonl(run_dir / "exposure.jsonl")
    decisions_by_step = {}
    for record in events:
        step = _number(record.get("decision_step", record.get("step")))
        if record.get("event") == "decision" and step is not None:
            decisions_by_step[int(step)] = record
    return RunLogs(
        metrics=[metrics_by_step[s] for s in sorted(metrics_by_step)],
        decisions=[decisions_by_step[s] for s in sorted(decisions_by_step)],
        credits=[r for r in events if r.get("event") == "credit"],
        updates=[r for r in events if r.get("event") == "update"],
    )


@dataclass(frozen=True)
class RunSummary:
    """The numbers `summarize_run` prints; None where the run did not log them."""

    steps: int  # optimizer steps in metrics.jsonl
    final_step: int | None
    final_loss: float | None  # train/loss of the last step with a finite loss
    window_steps: int  # k = max(1, ceil(n/10)) of the n steps that logged a reveal ratio
    reveal_ratio_first: float | None  # mean α over the first k of them
    reveal_ratio_last: float | None  # mean α over the last k of them
    decisions: int  # "decision" events in exposure.jsonl
    learned: bool  # decisions carry the controller's Beta(a, b)
    mean_step_s: float | None  # mean timing/step_s
    planned_steps: int | None = None  # `steps` of the run's config.yaml (None without one)
    finished: bool = False  # the run saved final/: it ran its last step

    @property
    def stopped_early(self) -> bool:
        """The run ended before its planned steps (killed, stopped by the non-finite-loss guard)."""
        return self.planned_steps is not None and not self.finished


def _planned_steps(run_dir: Path) -> int | None:
    from omegaconf import OmegaConf

    config = run_dir / "config.yaml"
    return int(OmegaConf.load(config).steps) if config.is_file() else None


def run_summary(run_dir: str | Path) -> RunSummary:
    logs = load_run(run_dir)
    loss_steps, losses = _series(logs.metrics, "train/loss")
    _, ratios = _series(logs.metrics, "exposure/reveal_ratio")
    _, step_times = _series(logs.metrics, "timing/step_s")
    k = max(1, math.ceil(len(ratios) / 10)) if ratios else 0
    return RunSummary(
        steps=len(logs.metrics),
        final_step=int(loss_steps[-1]) if loss_steps else None,
        final_loss=losses[-1] if losses else None,
        window_steps=k,
        reveal_ratio_first=sum(ratios[:k]) / k if k else None,
        reveal_ratio_last=sum(ratios[-k:]) / k if k else None,
        decisions=len(logs.decisions),
        learned=logs.learned,
        mean_step_s=sum(step_times) / len(step_times) if step_times else None,
        planned_steps=_planned_steps(Path(run_dir)),
        finished=(Path(run_dir) / "final").is_dir(),
    )


def _fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def summarize_run(run_dir: str | Path) -> str:
    """A few lines: final loss, mean reveal ratio over the first/last 10 % of steps, number of
    exposure decisions, mean step time."""
    s = run_summary(run_dir)
    kind = ", learned (Beta controller)" if s.learned else ", untrained policy" if s.decisions else ""
    at_step = f" (step {s.final_step})" if s.final_loss is not None else ""
    planned = "" if s.planned_steps is None else f" of {s.planned_steps}"
    stopped = [f"stopped early: {s.steps}{planned} steps logged and no final/ model; metrics.jsonl says why if a "
               f"guard stopped it, and `atesd train --config {Path(run_dir) / 'config.yaml'} --resume` continues "
               "from its latest checkpoint"] if s.stopped_early else []
    return "\n".join([
        f"run: {Path(run_dir)}",
        *stopped,
        f"steps: {s.steps}{planned}",
        f"final train/loss: {_fmt(s.final_loss)}{at_step}",
        f"mean reveal_ratio: first 10% {_fmt(s.reveal_ratio_first, 3)}, last 10% "
        f"{_fmt(s.reveal_ratio_last, 3)} ({s.window_steps} step{'s' * (s.window_steps != 1)} each)",
        f"exposure decisions: {s.decisions}{kind}",
        f"mean timing/step_s: {_fmt(s.mean_step_s, 3)} s",
    ])


@dataclass(frozen=True)
class Panel:
    """One axes of a multi-panel figure: labelled lines; drawn only if some line has data."""

    ylabel: str
    lines: tuple[tuple[str, Series], ...]
    xlabel: str = "step"


def _figure(n_panels: int, ncols: int = 2) -> tuple[Figure, list]:
    ncols = max(1, min(ncols, n_panels))
    nrows = math.ceil(n_panels / ncols)
    width, height = 5.0 * ncols, 3.3 * nrows  # inches; fixed margins, no layout engine (slow)
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.8 / width, right=1 - 0.15 / width, bottom=0.55 / height,
                        top=1 - 0.15 / height, wspace=0.25, hspace=0.35)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def save_figure(fig: Figure, path: Path, dpi: int = 110) -> Path:
    """A figure as PNG (rendered with Agg, no pyplot), written atomically."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return atomic.write_bytes(path, buffer.getvalue())


def _style(ax, xlabel: str, ylabel: str) -> None:
    ax.set(xlabel=xlabel, ylabel=ylabel)
    if xlabel in ("step", "decision_step"):  # steps are whole numbers: no 2.5 tick on a short run
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")


def _panel_figure(path: Path, panels: list[Panel]) -> Path | None:
    panels = [p for p in panels if any(xs for _, (xs, _) in p.lines)]
    if not panels:
        return None
    fig, axes = _figure(len(panels))
    for ax, panel in zip(axes, panels):
        for label, (xs, ys) in panel.lines:
            if xs:
                ax.plot(xs, ys, marker="." if len(xs) <= 60 else None, label=label)
        _style(ax, panel.xlabel, panel.ylabel)
    return save_figure(fig, path)


def rolling_mean(values: list[float], window: int) -> list[float]:
    """Mean of the last `window` values at each position (fewer at the start)."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def beta_mean_by_level(decisions: list[dict]) -> dict[str, Series]:
    """Per difficulty level, the learned Beta's mean at each decision (per-example and per-difficulty
    policies log `beta_mean_by_difficulty`); {} for a global policy."""
    out: dict[str, tuple[list[float], list[float]]] = {}
    for record in decisions:
        for level, mean in (record.get("beta_mean_by_difficulty") or {}).items():
            xs, ys = out.setdefault(level, ([], []))
            xs.append(record["decision_step"])
            ys.append(mean)
    return dict(sorted(out.items()))


def final_beta_mean(run_dir: str | Path) -> dict | None:
    """The learned controller's Beta mean E[α] = a / (a + b) at the run's last decision ("all") and,
    for per-example, per-difficulty and per-feature policies, each level's last logged value
    ("by_difficulty"; per feature: the mean over that level's rollouts of their bins' Betas) and, per
    feature, each bin's ("by_bin"); None for a run without a learned controller (no Beta in
    exposure.jsonl)."""
    if not (Path(run_dir) / "exposure.jsonl").is_file():
        return None
    learned = [d for d in load_run(run_dir).decisions if d.get("beta_mean") is not None]
    if not learned:
        return None
    by_level = {level: ys[-1] for level, (_, ys) in beta_mean_by_level(learned).items()}
    by_bin = learned[-1].get("beta_mean_by_bin")  # granularity="per_feature": each feature bin's Beta
    return {"decision_step": learned[-1]["decision_step"], "all": learned[-1]["beta_mean"], "by_difficulty": by_level,
            **({"by_bin": by_bin} if by_bin else {})}


def plot_reveal_ratio(logs: RunLogs, path: Path, window: int = 50) -> Path | None:
    """α per step (faint), its rolling mean over `window` steps, the learned Beta's mean a/(a+b) at
    each decision (one line per difficulty level for per-level policies), and the decisions' α_raw /
    α (markers only when there are few: with a new draw every step they would hide the trend)."""
    steps, ratios = _series(logs.metrics, "exposure/reveal_ratio")
    sampled = _series(logs.decisions, "raw_reveal_ratio", "decision_step")
    used = _series(logs.decisions, "reveal_ratio", "decision_step")
    beta = _series(logs.decisions, "beta_mean", "decision_step")
    if not (steps or sampled[0] or used[0]):
        return None
    fig, (ax,) = _figure(1)
    if steps:  # a step line: α is held between decisions
        ax.plot(steps, ratios, color="C0", alpha=0.35, lw=0.8, drawstyle="steps-post", label="exposure/reveal_ratio")
        ax.plot(steps, rolling_mean(ratios, window), color="C0", lw=2.2, label=f"its mean over {window} steps")
    levels = beta_mean_by_level(logs.decisions)
    for index, (level, series) in enumerate(levels.items()):
        ax.plot(*series, color=f"C{3 + index}", lw=1.6, label=f"learned Beta mean, difficulty {level}")
    if beta[0] and not levels:
        ax.plot(*beta, color="C3", lw=1.6, label="learned Beta mean a/(a+b)")
    if 0 < len(used[0]) <= 60:
        if sampled[0]:
            ax.scatter(*sampled, facecolors="none", edgecolors="C1", label="decision raw_reveal_ratio (α_raw)")
        ax.scatter(*used, marker="x", color="C2", label="decision reveal_ratio (α)")
    ax.set_ylim(-0.03, 1.03)
    _style(ax, "step", "reveal_ratio")
    return save_figure(fig, path)


def plot_beta_density(logs: RunLogs, path: Path, points: int = 400) -> Path | None:
    learned = [(d.get("decision_step"), beta_params(d)) for d in logs.decisions if beta_params(d)]
    if not learned:
        return None
    xs = [(i + 0.5) / points for i in range(points)]  # midpoints: the density may diverge at 0, 1
    fig, (ax,) = _figure(1)
    chosen = snapshot_indices(len(learned))
    for rank, (step, (a, b)) in enumerate(learned[i] for i in chosen):
        color = colormaps["viridis"](rank / max(1, len(chosen) - 1))  # early dark → late light
        ax.plot(xs, [beta_pdf(x, a, b) for x in xs], color=color,
                label=f"step {step}: Beta({a:.2f}, {b:.2f}), mean {a / (a + b):.2f}")
    ax.set(xlim=(0, 1), ylim=(0, None))
    _style(ax, "reveal_ratio (α)", "density π_φ(α | s)")
    return save_figure(fig, path)


def plot_reward(logs: RunLogs, path: Path) -> Path | None:
    credit = [(f"{key} {symbol}", _series(logs.credits, key, "decision_step")) for key, symbol in
              (("progress_return", "G_lp"), ("grounding_return", "G_gt"), ("reward", "R"))]
    return _panel_figure(path, [
        Panel("reward", tuple(credit), xlabel="decision_step"),
        Panel("controller loss", (("loss", _series(logs.updates, "loss")),
                                  ("policy_loss", _series(logs.updates, "policy_loss")))),
        Panel("entropy", (("entropy", _series(logs.updates, "entropy")),
                          ("target_entropy", _series(logs.updates, "target_entropy")))),
    ])


def plot_loss_kl(logs: RunLogs, path: Path) -> Path | None:
    return _panel_figure(path, loss_kl_panels(logs))


def loss_kl_panels(logs: RunLogs) -> list[Panel]:
    """The panels of loss_kl.png, each line a metric over steps (empty where the run lacks it)."""
    def metric(*keys: str) -> tuple[tuple[str, Series], ...]:
        return tuple((key, _series(logs.metrics, key)) for key in keys)

    return [
        Panel("loss", metric("train/loss")),
        Panel("divergence", metric("train/divergence_mean", "train/divergence_p95", "train/divergence_p99")),
        Panel("top1_disagreement", metric("train/top1_disagreement")),
        Panel("divergence", metric("train/divergence_correct", "train/divergence_incorrect")),
        Panel("accuracy", metric("rollout/accuracy")),
        Panel("share of rollouts", metric("rollout/loop_rate", "rollout/truncated")),
        Panel("probe_nll", metric("exposure/probe_nll")),
        Panel("grounding_score", metric("exposure/grounding_score")),
    ]


def make_report(run_dir: str | Path) -> list[Path]:
    """Draw the plots the run has data for into RUN_DIR/plots/; return their paths in PLOT_NAMES
    order. Raises FileNotFoundError when RUN_DIR holds neither log."""
    logs = load_run(run_dir)
    out = Path(run_dir) / "plots"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in zip(PLOT_NAMES, (plot_reveal_ratio, plot_beta_density, plot_reward, plot_loss_kl)):
        (out / name).unlink(missing_ok=True)  # a plot this run no longer has data for goes too
        path = draw(logs, out / name)
        written += [path] if path is not None else []
    return written
