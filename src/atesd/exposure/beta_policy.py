"""The Beta policy over the reveal ratio and its REINFORCE step (ATESD, arXiv 2605.11458, controller).

  * f_φ is an MLP n_features → hidden → hidden → 2 with tanh; (a, b) = 1 + softplus(f_φ(s)), so
    a, b > 1 and Beta(a, b) is unimodal. The output bias starts at softplus⁻¹(1) = log(e − 1) and
    the output weights small, so the initial policy is close to Beta(2, 2) (mean 0.5).
  * α_raw ~ Beta(a, b), α = clip(α_raw, α_min, α_max); the log-prob uses α_raw, clamped into
    [1e-6, 1 − 1e-6] so a draw that rounds to 0 or 1 does not give an infinite log-prob.
  * L_ctrl = −(1/N) Σ_j A_j log π_φ(α_raw_j | s_j) + c · max(0, H̄ − H_target)², one Adam step.

Used by the global controller (`atesd.exposure.learned`) and the per-example one
(`atesd.exposure.per_example`). `BetaTable` (ours) is the per-difficulty controller's f_φ: one
(a_k, b_k) = 1 + softplus(w_k) per group k of a one-hot state, i.e. one Beta per difficulty level.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import Beta

from atesd.exposure.config import ExposureConfig

LOG_PROB_EPS = 1e-6
_INITIAL_OUTPUT_SCALE = 0.01


def default_target_entropy() -> float:
    """H_target default: the differential entropy of Beta(2, 2) (≈ −0.125 nats)."""
    two = torch.tensor(2.0, dtype=torch.float64)
    return float(Beta(two, two).entropy())


def inverse_softplus_of_shape(shape: float) -> float:
    """w with 1 + softplus(w) = shape (> 1): the output that starts the policy at that Beta shape."""
    return math.log(math.expm1(shape - 1.0))


class BetaPolicyNetwork(nn.Module):
    """f_φ: s [N, F] → (a [N], b [N]) with (a, b) = 1 + softplus(f_φ(s)), F = n_features; it starts
    close to Beta(initial_a, initial_b) (the paper: Beta(2, 2))."""

    def __init__(self, n_features: int, hidden_size: int, seed: int, initial_a: float = 2.0,
                 initial_b: float = 2.0) -> None:
        super().__init__()
        # skip_init + a private generator: building a controller never draws from the global RNG.
        self.layers = nn.Sequential(
            nn.utils.skip_init(nn.Linear, n_features, hidden_size),
            nn.Tanh(),
            nn.utils.skip_init(nn.Linear, hidden_size, hidden_size),
            nn.Tanh(),
            nn.utils.skip_init(nn.Linear, hidden_size, 2),
        )
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for layer in self.layers:
                if isinstance(layer, nn.Linear):
                    bound = 1.0 / math.sqrt(layer.in_features)
                    layer.weight.uniform_(-bound, bound, generator=generator)
                    layer.bias.uniform_(-bound, bound, generator=generator)
            output = self.layers[-1]
            output.weight.mul_(_INITIAL_OUTPUT_SCALE)
            output.bias.copy_(torch.tensor([inverse_softplus_of_shape(initial_a),  # Beta(2, 2): log(e − 1)
                                             inverse_softplus_of_shape(initial_b)]))

    def forward(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shapes = 1.0 + nn.functional.softplus(self.layers(states))  # [N, 2]
        return shapes[:, 0], shapes[:, 1]

    def shapes(self, state: list[float]) -> tuple[float, float]:
        """(a, b) of one state, without gradient."""
        with torch.no_grad():
            a, b = self(torch.tensor([state], dtype=torch.float32))
        return float(a[0]), float(b[0])


class BetaTable(nn.Module):
    """f_φ for a one-hot state s [N, K]: (a, b) = 1 + softplus(s · W), W [K, 2]; row k of W is group
    k's Beta, every row starts at Beta(initial_a, initial_b)."""

    def __init__(self, rows: int, initial_a: float = 2.0, initial_b: float = 2.0) -> None:
        super().__init__()
        start = torch.tensor([inverse_softplus_of_shape(initial_a), inverse_softplus_of_shape(initial_b)])
        self.weight = nn.Parameter(start.repeat(rows, 1))

    def forward(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shapes = 1.0 + nn.functional.softplus(states @ self.weight)  # [N, 2]
        return shapes[:, 0], shapes[:, 1]


def entropy_penalty(
    entropy: torch.Tensor, target_entropy: float, entropy_coef: float
) -> torch.Tensor:
    """c · max(0, H − H_target)²: zero at or below the target, quadratic above it."""
    return entropy_coef * torch.clamp(entropy - target_entropy, min=0.0) ** 2


def controller_loss(
    network: nn.Module,
    states: torch.Tensor,
    raw_ratios: torch.Tensor,
    advantages: torch.Tensor,
    target_entropy: float,
    entropy_coef: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """L_ctrl = −(1/N) Σ_j A_j log π_φ(α_raw_j | s_j) + c · max(0, H̄ − H_target)².

    states [N, F], raw_ratios [N] (α_raw, before clipping), advantages [N]. H̄ is the mean over j
    of the entropy of Beta(a(s_j), b(s_j)). Returns the loss and its metrics as floats.
    """
    beta_a, beta_b = network(states)
    policy = Beta(beta_a, beta_b)
    log_probs = policy.log_prob(raw_ratios.clamp(LOG_PROB_EPS, 1.0 - LOG_PROB_EPS))  # [N]
    policy_loss = -(advantages * log_probs).mean()
    entropy = policy.entropy().mean()
    penalty = entropy_penalty(entropy, target_entropy, entropy_coef)
    loss = policy_loss + penalty
    metrics = {
        "loss": float(loss.detach()),
        "policy_loss": float(policy_loss.detach()),
        "entropy": float(entropy.detach()),
        "entropy_penalty": float(penalty.detach()),
        "beta_mean": float((beta_a / (beta_a + beta_b)).mean().detach()),
    }
    return loss, metrics


def policy_step(network: nn.Module, optimizer: torch.optim.Optimizer, states: torch.Tensor,
                raw_ratios: torch.Tensor, advantages: torch.Tensor, target_entropy: float,
                entropy_coef: float) -> dict[str, float]:
    """One Adam step on `controller_loss`; its metrics."""
    loss, metrics = controller_loss(network, states, raw_ratios, advantages, target_entropy, entropy_coef)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return metrics


def clipped(cfg: ExposureConfig, raw: float) -> float:
    """α = clip(α_raw, α_min, α_max)."""
    return min(cfg.ratio_max, max(cfg.ratio_min, raw))
