"""The ATESD exposure controller: a Beta policy over the reveal ratio, trained by REINFORCE.

ATESD (arXiv 2605.11458), controller section:
  * f_φ is an MLP N_FEATURES → hidden → hidden → 2 with tanh; (a, b) = 1 + softplus(f_φ(s)), so
    a, b > 1 and Beta(a, b) is unimodal. The output bias starts at softplus⁻¹(1) = log(e − 1) and
    the output weights small, so the initial policy is close to Beta(2, 2) (mean 0.5).
  * At the start of each hold window (every H steps) it samples α_raw ~ Beta(a, b) and uses
    α = clip(α_raw, α_min, α_max) for the H steps of the window.
  * A decision taken at step t0 is pending until its lookahead closes after observe(t0 + L)
    (ℓ_{t0} … ℓ_{t0+L} and g_{t0+1} … g_{t0+L}; indexing in `atesd.exposure.reward`), then earns
    R = G_lp + λ_gt·G_gt. Lookaheads of consecutive decisions overlap when L > H.
  * When B decisions have closed: A_j = (R_j − mean R)/(std R + ε) and one Adam step on
        L_ctrl = −(1/B) Σ_j A_j · log π_φ(α_raw_j | s_j) + c · max(0, H̄ − H_target)²
    where H̄ is the Beta entropy averaged over the B decisions' states.

Distributed training: the controller lives on rank 0 only. The loop calls `ratio_for_step` and
`observe` on rank 0 (with signals already averaged over ranks), broadcasts the float α to the
other ranks, and saves this policy's `state_dict` from rank 0.

Departures from the paper:
  1. The state has 7 features (see `atesd.exposure.state`), so the MLP input is 7, not 6.
  2. log π_φ(α_raw | s) is recomputed under the current φ at update time; decisions sampled under
     an older φ (at most B·H + L steps old) are not importance-corrected.
  3. α_raw is clamped into [1e-6, 1 − 1e-6] for the log-prob, so a draw that rounds to 0 or 1
     does not give an infinite log-prob.
  4. The draw of α_raw for hold window w comes from a private stream seeded by (seed, w), not from
     a global or saved generator, so a resumed run draws exactly what the uninterrupted run drew.
  5. Decisions whose lookahead runs past the last training step, or contains a step without
     signals (observe(t, None)), never earn a reward and are never used for an update.
"""

from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.distributions import Beta

from atesd.exposure.config import ExposureConfig
from atesd.exposure.decision import ExposureDecision, StepClock
from atesd.exposure.reward import (
    DecisionReturn,
    decision_reward,
    discounted_progress,
    grounding_return,
    normalized_advantages,
    one_step_progress,
)
from atesd.exposure.state import N_FEATURES, ExposureStateTracker, TrainingSignals

LOG_PROB_EPS = 1e-6
_INITIAL_OUTPUT_SCALE = 0.01


def default_target_entropy() -> float:
    """H_target default: the differential entropy of Beta(2, 2) (≈ −0.125 nats)."""
    two = torch.tensor(2.0, dtype=torch.float64)
    return float(Beta(two, two).entropy())


class BetaPolicyNetwork(nn.Module):
    """f_φ: s [N, F] → (a [N], b [N]) with (a, b) = 1 + softplus(f_φ(s)), F = n_features."""

    def __init__(self, n_features: int, hidden_size: int, seed: int) -> None:
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
            output.bias.fill_(math.log(math.e - 1.0))  # softplus(bias) = 1 → a = b = 2

    def forward(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shapes = 1.0 + nn.functional.softplus(self.layers(states))  # [N, 2]
        return shapes[:, 0], shapes[:, 1]


def entropy_penalty(
    entropy: torch.Tensor, target_entropy: float, entropy_coef: float
) -> torch.Tensor:
    """c · max(0, H − H_target)²: zero at or below the target, quadratic above it."""
    return entropy_coef * torch.clamp(entropy - target_entropy, min=0.0) ** 2


def controller_loss(
    network: BetaPolicyNetwork,
    states: torch.Tensor,
    raw_ratios: torch.Tensor,
    advantages: torch.Tensor,
    target_entropy: float,
    entropy_coef: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """L_ctrl = −(1/B) Σ_j A_j log π_φ(α_raw_j | s_j) + c · max(0, H̄ − H_target)².

    states [B, F], raw_ratios [B] (α_raw, before clipping), advantages [B]. H̄ is the mean over j
    of the entropy of Beta(a(s_j), b(s_j)). Returns the loss and its metrics as floats.
    """
    beta_a, beta_b = network(states)
    policy = Beta(beta_a, beta_b)
    log_probs = policy.log_prob(raw_ratios.clamp(LOG_PROB_EPS, 1.0 - LOG_PROB_EPS))  # [B]
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


@dataclass
class _Lookahead:
    """A decision whose lookahead is open: ℓ_{t0}, ℓ_{t0+1}, … and g_{t0+1}, … so far."""

    decision: ExposureDecision
    losses: list[float] = field(default_factory=list)
    scores: list[float | None] = field(default_factory=list)


@dataclass(frozen=True)
class _ClosedDecision:
    decision: ExposureDecision
    closed_step: int
    returns: DecisionReturn


class LearnedExposure:
    """ATESD: α from a learned Beta policy, one draw per hold window, REINFORCE every B decisions.

    Call protocol (rank 0 only): ratio_for_step(t) before step t's rollouts; observe(t, signals)
    after step t's student update (signals=None if the step produced none). observe returns the
    step's `exposure.jsonl` records.
    """

    kind = "learned"
    needs_probe_nll = True  # a state feature; required every step when progress_signal="probe_nll"

    def __init__(self, cfg: ExposureConfig, total_steps: int) -> None:
        self.cfg = cfg
        self.needs_grounding_score = cfg.grounding_weight > 0.0
        if cfg.reward == "one_step":
            self._lookahead = 1
            self._progress = one_step_progress
        else:
            self._lookahead = cfg.lookahead_steps
            self._progress = lambda losses: discounted_progress(losses, cfg.discount)
        self.target_entropy = (
            default_target_entropy() if cfg.target_entropy is None else cfg.target_entropy
        )
        self.network = BetaPolicyNetwork(N_FEATURES, cfg.hidden_size, cfg.seed)
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=cfg.policy_lr)
        self.tracker = ExposureStateTracker(total_steps, cfg.ema_decay)
        self._clock = StepClock()
        self._current: ExposureDecision | None = None
        self._open: list[_Lookahead] = []
        self._closed: list[_ClosedDecision] = []
        self.updates = 0

    def ratio_for_step(self, step: int) -> float:
        """α for student step t: a new draw at the first step of a hold window, else the held α."""
        if self._clock.begin(step):
            window = step // self.cfg.hold_steps
            if self._current is None or self._current.window != window:
                self._current = self._decide(step, window)
                self._open.append(_Lookahead(self._current))
        return self._current.used_ratio

    def _decide(self, step: int, window: int) -> ExposureDecision:
        state = self.tracker.features(step)
        with torch.no_grad():
            beta_a, beta_b = self.network(torch.tensor([state], dtype=torch.float32))
        a, b = float(beta_a[0]), float(beta_b[0])
        rng = random.Random(f"atesd.exposure.learned:{self.cfg.seed}:{window}")
        raw = rng.betavariate(a, b)
        used = min(self.cfg.ratio_max, max(self.cfg.ratio_min, raw))
        return ExposureDecision(
            step=step,
            window=window,
            sampled_ratio=raw,
            used_ratio=used,
            state=tuple(state),
            beta_a=a,
            beta_b=b,
        )

    def observe(self, step: int, signals: TrainingSignals | None) -> list[dict]:
        """Fold in step t's signals; close lookaheads that end at t; update once B have closed.

        Returns the records of step t, in order: the decision taken at t (if any), then, when the
        controller updated, one "credit" record per decision of the batch and one "update" record.
        signals=None marks a step without usable signals (e.g. a skipped non-finite update): every
        open lookahead contains that step, so those decisions are dropped (a "dropped" record
        each) and never credited; the state's moving averages are left as they were.
        """
        if signals is None:
            return self._observe_missing(step)
        signals.require("top1_disagreement", "self_confidence")
        loss = self._progress_value(signals)
        score = signals.grounding_score
        if score is None and self.needs_grounding_score:
            raise ValueError(
                "TrainingSignals.grounding_score is None but exposure.grounding_weight > 0: "
                "compute g_t every step, or set exposure.grounding_weight=0"
            )
        self._clock.end(step)
        assert self._current is not None
        records = [self._current.record()] if self._current.step == step else []
        self.tracker.observe(self._current.used_ratio, signals)
        still_open = []
        for lookahead in self._open:
            lookahead.losses.append(loss)
            if step > lookahead.decision.step:
                lookahead.scores.append(score)
            if len(lookahead.losses) == self._lookahead + 1:
                self._closed.append(
                    _ClosedDecision(lookahead.decision, step, self._returns(lookahead))
                )
            else:
                still_open.append(lookahead)
        self._open = still_open
        if len(self._closed) >= self.cfg.decisions_per_update:
            records += self._update(step)
        return records

    def _observe_missing(self, step: int) -> list[dict]:
        self._clock.end(step)
        assert self._current is not None
        records = [self._current.record()] if self._current.step == step else []
        records += [
            {
                "event": "dropped",
                "step": step,
                "decision_step": lookahead.decision.step,
                "reason": f"no training signals at step {step}, inside this decision's lookahead",
            }
            for lookahead in self._open
        ]
        self._open = []
        return records

    def _progress_value(self, signals: TrainingSignals) -> float:
        if self.cfg.progress_signal == "probe_nll":
            if signals.probe_nll is None:
                raise ValueError(
                    "TrainingSignals.probe_nll is None but exposure.progress_signal='probe_nll': "
                    "measure the probe NLL every step, or set exposure.progress_signal=distill_loss"
                )
            return float(signals.probe_nll)
        return float(signals.distill_loss)

    def _returns(self, lookahead: _Lookahead) -> DecisionReturn:
        progress = self._progress(lookahead.losses)
        scores = lookahead.scores
        grounding = None
        if all(g is not None for g in scores):
            grounding = grounding_return(scores, self.cfg.discount)
        return decision_reward(progress, grounding, self.cfg.grounding_weight)

    def _update(self, step: int) -> list[dict]:
        """One REINFORCE step on the first B closed decisions; their records and the update's."""
        batch = self._closed[: self.cfg.decisions_per_update]
        self._closed = self._closed[self.cfg.decisions_per_update :]
        rewards = [closed.returns.reward for closed in batch]
        advantages = normalized_advantages(rewards)
        states = torch.tensor([closed.decision.state for closed in batch], dtype=torch.float32)
        raw = torch.tensor([closed.decision.sampled_ratio for closed in batch], dtype=torch.float32)
        loss, metrics = controller_loss(
            self.network,
            states,
            raw,
            torch.tensor(advantages, dtype=torch.float32),
            self.target_entropy,
            self.cfg.entropy_coef,
        )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.updates += 1
        records = [
            {
                "event": "credit",
                "step": step,
                "decision_step": closed.decision.step,
                "closed_step": closed.closed_step,
                "sampled_ratio": closed.decision.sampled_ratio,
                "used_ratio": closed.decision.used_ratio,
                "progress_return": closed.returns.progress_return,
                "grounding_return": closed.returns.grounding_return,
                "reward": closed.returns.reward,
                "advantage": advantage,
            }
            for closed, advantage in zip(batch, advantages)
        ]
        mean_reward = sum(rewards) / len(rewards)
        std_reward = math.sqrt(sum((r - mean_reward) ** 2 for r in rewards) / len(rewards))
        records.append(
            {
                "event": "update",
                "step": step,
                "update": self.updates,
                **metrics,
                "target_entropy": self.target_entropy,
                "reward_mean": mean_reward,
                "reward_std": std_reward,
                "decision_steps": [closed.decision.step for closed in batch],
            }
        )
        return records

    def state_dict(self) -> dict:
        """Everything needed to continue exactly; tensors, lists, dicts, floats, ints, str, None."""
        return {
            "kind": self.kind,
            "network": {k: v.detach().clone() for k, v in self.network.state_dict().items()},
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "tracker": copy.deepcopy(self.tracker.state_dict()),
            "clock": self._clock.state_dict(),
            "current": None if self._current is None else self._current.to_state(),
            "open": [
                {
                    "decision": la.decision.to_state(),
                    "losses": list(la.losses),
                    "scores": list(la.scores),
                }
                for la in self._open
            ],
            "closed": [
                {
                    "decision": c.decision.to_state(),
                    "closed_step": c.closed_step,
                    "progress_return": c.returns.progress_return,
                    "grounding_return": c.returns.grounding_return,
                    "reward": c.returns.reward,
                }
                for c in self._closed
            ],
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != self.kind:
            raise ValueError(
                f"this checkpoint holds a {state.get('kind')!r} exposure policy, not 'learned': "
                "resume with the exposure.policy the run was started with"
            )
        self.network.load_state_dict(state["network"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.tracker.load_state_dict(state["tracker"])
        self._clock.load_state_dict(state["clock"])
        current = state["current"]
        self._current = None if current is None else ExposureDecision.from_state(current)
        self._open = [
            _Lookahead(
                ExposureDecision.from_state(la["decision"]),
                [float(x) for x in la["losses"]],
                [None if g is None else float(g) for g in la["scores"]],
            )
            for la in state["open"]
        ]
        self._closed = [
            _ClosedDecision(
                ExposureDecision.from_state(c["decision"]),
                int(c["closed_step"]),
                DecisionReturn(
                    progress_return=float(c["progress_return"]),
                    grounding_return=None
                    if c["grounding_return"] is None
                    else float(c["grounding_return"]),
                    reward=float(c["reward"]),
                ),
            )
            for c in state["closed"]
        ]
        self.updates = int(state["updates"])
