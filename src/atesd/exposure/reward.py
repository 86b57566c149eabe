"""Rewards and advantages of the exposure controller: pure functions of logged numbers.

Indexing convention (the same everywhere in `atesd.exposure`): student steps are 0-based; ℓ_t is
the progress signal logged at step t, measured on the parameters θ_t that step t starts from (for
the distillation loss: the loss of step t's batch, computed before step t's optimizer update);
g_t is the grounding score logged at step t. A decision taken at step t0 sets α for steps
t0 … t0+H−1, so the first update it drives is the one that turns θ_{t0} into θ_{t0+1}, and
ℓ_{t0} − ℓ_{t0+1} is the progress of that update.

Equations (ATESD, arXiv 2605.11458, the controller's reward), for a lookahead of L steps:

    G_lp = Σ_{i=1..L} γ^{i−1} · max(0, ℓ_{t0+i−1} − ℓ_{t0+i})          needs ℓ_{t0} … ℓ_{t0+L}
    G_gt = Σ_{i=1..L} γ^{i−1} · g_{t0+i} / Σ_{i=1..L} γ^{i−1}            needs g_{t0+1} … g_{t0+L}
    R    = G_lp + λ_gt · G_gt
    A_j  = (R_j − mean_j R) / (std_j R + ε)

Departures from the paper:
  1. The one-step reward of the paper's ablation is not written out there; ours is the signed
     immediate change ℓ_{t0} − ℓ_{t0+1} (no max(0, ·), no lookahead).
  2. std in A_j is the population standard deviation over the B decisions; a batch of one, or of
     rewards equal up to ε, gives advantage 0 instead of NaN or amplified rounding noise.
  3. "λ_gt after scaling" (the method's words) is ours to define: with grounding_scale="zscore",
     G_lp and G_gt are each divided by their running standard deviation over the decisions closed
     so far (`RunningScale`) before R = G_lp + λ_gt·G_gt.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class DecisionReturn:
    """What one decision earned once its lookahead closed."""

    progress_return: float  # G_lp (or the one-step change)
    grounding_return: float | None  # G_gt; None when no grounding score was logged
    reward: float  # R = G_lp + λ_gt·G_gt


def discounted_progress(losses: Sequence[float], discount: float) -> float:
    """G_lp = Σ_{i=1..L} γ^{i−1} · max(0, ℓ_{t0+i−1} − ℓ_{t0+i}).

    `losses` is [ℓ_{t0}, ℓ_{t0+1}, …, ℓ_{t0+L}] (L+1 values); only decreases count.
    """
    if len(losses) < 2:
        raise ValueError(f"discounted_progress needs L+1 >= 2 losses, got {len(losses)}")
    return sum(
        discount**i * max(0.0, losses[i] - losses[i + 1]) for i in range(len(losses) - 1)
    )


def one_step_progress(losses: Sequence[float]) -> float:
    """The immediate loss change ℓ_{t0} − ℓ_{t0+1} (signed); `losses` is [ℓ_{t0}, ℓ_{t0+1}]."""
    if len(losses) != 2:
        raise ValueError(f"one_step_progress needs exactly 2 losses, got {len(losses)}")
    return losses[0] - losses[1]


def grounding_return(scores: Sequence[float], discount: float) -> float:
    """G_gt = Σ_{i=1..L} γ^{i−1} · g_{t0+i} / Σ_{i=1..L} γ^{i−1}, a discounted mean.

    `scores` is [g_{t0+1}, …, g_{t0+L}] (L values).
    """
    if len(scores) < 1:
        raise ValueError("grounding_return needs at least one score")
    weights = [discount**i for i in range(len(scores))]
    return sum(w * g for w, g in zip(weights, scores)) / sum(weights)


def decision_reward(
    progress_return: float, grounding: float | None, grounding_weight: float
) -> DecisionReturn:
    """R = G_lp + λ_gt · G_gt; with no grounding score (None), R = G_lp."""
    reward = progress_return
    if grounding is not None:
        reward += grounding_weight * grounding
    return DecisionReturn(
        progress_return=progress_return, grounding_return=grounding, reward=reward
    )


def normalized_advantages(rewards: Sequence[float], eps: float = 1e-8) -> list[float]:
    """A_j = (R_j − mean R) / (std R + ε) over one batch of B decisions (population std).

    A batch of one, or of rewards whose spread is at most ε (equal up to rounding), gets all-zero
    advantages, never NaN: there is nothing to tell the decisions apart.
    """
    if len(rewards) == 0:
        return []
    mean = math.fsum(rewards) / len(rewards)
    std = math.sqrt(math.fsum((r - mean) ** 2 for r in rewards) / len(rewards))
    if std <= eps:
        return [0.0] * len(rewards)
    return [(r - mean) / (std + eps) for r in rewards]


class RunningScale:
    """Running mean, variance and mean square of one scalar stream (Welford)."""

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.sum_sq = 0.0

    def update(self, value: float) -> None:
        self.count += 1
        delta = value - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (value - self.mean)
        self.sum_sq += value * value

    def std(self) -> float:
        return math.sqrt(self.m2 / self.count) if self.count else 0.0

    def rms(self, eps: float = 1e-12) -> float:
        """sqrt(mean of squares) of the values so far (at least eps)."""
        return max(eps, math.sqrt(self.sum_sq / self.count)) if self.count else eps

    def scaled(self, value: float) -> float:
        """Fold in `value`, then return it divided by the running standard deviation (0 until two
        different values have been seen: no scale yet)."""
        self.update(value)
        std = self.std()
        return value / std if std > 1e-12 else 0.0

    def state_dict(self) -> dict:
        return {"count": self.count, "mean": self.mean, "m2": self.m2, "sum_sq": self.sum_sq}

    def load_state_dict(self, state: dict) -> None:
        self.count, self.mean = int(state["count"]), float(state["mean"])
        self.m2, self.sum_sq = float(state["m2"]), float(state["sum_sq"])
