"""The ATESD exposure controller: a Beta policy over the reveal ratio, trained by REINFORCE.

ATESD (arXiv 2605.11458), controller section:
  * f_φ is an MLP n_features → hidden → hidden → 2 with tanh; (a, b) = 1 + softplus(f_φ(s)), so
    a, b > 1 and Beta(a, b) is unimodal. The output bias starts at softplus⁻¹(1) = log(e − 1) and
    the output weights small, so the initial policy is close to Beta(2, 2) (mean 0.5).
  * At the start of each hold window (every H steps) it samples α_raw ~ Beta(a, b) and uses
    α = clip(α_raw, α_min, α_max) for the H steps of the window.
  * reward="discounted" / "one_step": a decision taken at step t0 is pending until its lookahead
    closes after observe(t0 + L) (ℓ_{t0} … ℓ_{t0+L} and g_{t0} … g_{t0+L−1}, or with
    grounding_steps="next" the paper's g_{t0+1} … g_{t0+L}; `atesd.exposure.reward`),
    then earns R = G_lp + λ_gt·G_gt (each z-scored first with grounding_scale="zscore").
  * reward="counterfactual" (ours): the decision also draws α′_raw from the same Beta; on the first
    step of its window the loop measures, on the same θ_t and rollouts, the first-order probe credit
    of both (`atesd.exposure.credit`); R_j = mean over the credited rollouts of credit(α) −
    credit(α′), a paired difference whose expectation under the policy is zero, so it needs no
    baseline: A_j = R_j / RMS(R) (running). The decision closes at the end of its window.
  * When B decisions have closed, one Adam step on
        L_ctrl = −(1/B) Σ_j A_j · log π_φ(α_raw_j | s_j) + c · max(0, H̄ − H_target)²
    (counterfactual: −(1/2B) Σ_j A_j · [log π_φ(α_raw_j | s_j) − log π_φ(α′_raw_j | s_j)] + penalty)
    where A_j = (R_j − mean R)/(std R + ε) for the lookahead rewards and H̄ is the mean Beta entropy.

Distributed training: the controller lives on rank 0 only. The loop calls `decide` and `observe`
on rank 0 (with signals already averaged over ranks), broadcasts α to the other ranks, and saves
this policy's `state_dict` from rank 0.

Departures from the paper (all but 1–4 are options; docs/algorithm.md lists the defaults):
  1. The state has 7 features by default (see `atesd.exposure.state`), so the MLP input is 7, not
     6; `state_features` selects the paper's 6 (configs/toy-atesd-paper.yaml).
  2. log π_φ(α_raw | s) is recomputed under the current φ at update time; decisions sampled under
     an older φ (at most B·H + L steps old) are not importance-corrected.
  3. α_raw is clamped into [1e-6, 1 − 1e-6] for the log-prob, so a draw that rounds to 0 or 1
     does not give an infinite log-prob.
  4. The draws of hold window w come from a private stream seeded by (seed, w), not from a global
     or saved generator, so a resumed run draws exactly what the uninterrupted run drew.
  5. Decisions whose lookahead runs past the last training step, or contains a step without
     signals (observe(t, None)), never earn a reward and are never used for an update.
  6. By default G_gt averages g over the decision's own steps t0 … t0+L−1; the paper's t0+1 …
     t0+L (whose last term is measured under the next decision's α when L = H) is
     grounding_steps="next" (configs/toy-atesd-paper.yaml).
"""

from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass, field

import torch

from atesd.exposure.beta_policy import BetaPolicyNetwork, clipped, default_target_entropy, policy_step
from atesd.exposure.config import ExposureConfig
from atesd.exposure.decision import ExposureDecision, StepClock
from atesd.exposure.reward import (
    DecisionReturn,
    RunningScale,
    decision_reward,
    discounted_progress,
    grounding_return,
    normalized_advantages,
    one_step_progress,
)
from atesd.exposure.state import FEATURE_NAMES, ExposureStateTracker, TrainingSignals

@dataclass
class _Pending:
    """A decision whose credit is being collected: ℓ_{t0}, ℓ_{t0+1}, …, g_{t0}, … so far, or (reward
    "counterfactual") the paired credit of each step of its window."""

    decision: ExposureDecision
    losses: list[float] = field(default_factory=list)
    scores: list[float | None] = field(default_factory=list)
    paired: list[float] = field(default_factory=list)
    steps: int = 0


@dataclass(frozen=True)
class _ClosedDecision:
    decision: ExposureDecision
    closed_step: int
    returns: DecisionReturn


class LearnedExposure:
    """ATESD: α from a learned Beta policy, one draw per hold window, REINFORCE every B decisions.

    Call protocol (rank 0 only): ratio_for_step(t) (or decide) before step t's teacher views;
    observe(t, signals, credit) after step t's student update (signals=None if the step produced
    none). observe returns the step's `exposure.jsonl` records.
    """

    kind = "learned"
    needs_probe_nll = True  # a state feature, and ℓ_t by default
    needs_full_divergence = False
    STATE_PROBE_EVERY = 4  # steps between probe NLL measurements when it is a state feature only

    def __init__(self, cfg: ExposureConfig, total_steps: int) -> None:
        self.cfg = cfg
        self.counterfactual = cfg.reward == "counterfactual"
        self.needs_credit = self.counterfactual
        progress_from_probe = not self.counterfactual and cfg.progress_signal == "probe_nll"
        self.probe_every = 1 if progress_from_probe else self.STATE_PROBE_EVERY
        self.needs_grounding_score = cfg.grounding_weight > 0.0 and not self.counterfactual
        if cfg.reward == "one_step":
            self._lookahead = 1
            self._progress = one_step_progress
        elif cfg.reward == "discounted":
            self._lookahead = cfg.lookahead_steps
            self._progress = lambda losses: discounted_progress(losses, cfg.discount)
        else:
            self._lookahead = cfg.hold_steps  # the decision's own window
        self.target_entropy = (
            default_target_entropy() if cfg.target_entropy is None else cfg.target_entropy
        )
        self.state_names = tuple(cfg.state_features)
        self._state_index = [FEATURE_NAMES.index(name) for name in self.state_names]
        self._required = [signal for feature, signal in (("top1_disagreement_ema", "top1_disagreement"),
                                                          ("self_confidence", "self_confidence"))
                          if feature in self.state_names]
        self._first_grounding_step = 1 if cfg.grounding_steps == "next" else 0
        self.network = BetaPolicyNetwork(len(self.state_names), cfg.hidden_size, cfg.seed, cfg.initial_beta_a,
                                         cfg.initial_beta_b)
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=cfg.policy_lr)
        self.tracker = ExposureStateTracker(total_steps, cfg.ema_decay)
        self.scales = {"progress": RunningScale(), "grounding": RunningScale(), "paired": RunningScale()}
        self._clock = StepClock()
        self._current: ExposureDecision | None = None
        self._open: list[_Pending] = []
        self._closed: list[_ClosedDecision] = []
        self.updates = 0

    def ratio_for_step(self, step: int) -> float:
        """α for student step t: a new draw at the first step of a hold window, else the held α."""
        if self._clock.begin(step):
            window = step // self.cfg.hold_steps
            if self._current is None or self._current.window != window:
                self._current = self._decide(step, window)
                self._open.append(_Pending(self._current))
        return self._current.reveal_ratio

    def wants_credit(self, step: int) -> bool:
        """reward="counterfactual": the paired credit is measured on the first step of each window."""
        return self.counterfactual and step % self.cfg.hold_steps == 0

    def counterfactual_ratio(self) -> float | None:
        """α′ = clip(α′_raw) of the current window (reward="counterfactual"), else None."""
        raw = self._current.counterfactual_raw_ratio if self._current is not None else None
        return None if raw is None else clipped(self.cfg, raw)

    def _decide(self, step: int, window: int) -> ExposureDecision:
        every = self.tracker.features(step)
        state = [every[i] for i in self._state_index]
        a, b = self.network.shapes(state)
        rng = random.Random(f"atesd.exposure.learned:{self.cfg.seed}:{window}")
        raw = rng.betavariate(a, b)
        counterfactual = rng.betavariate(a, b) if self.counterfactual else None
        return ExposureDecision(step=step, window=window, raw_reveal_ratio=raw, reveal_ratio=clipped(self.cfg, raw),
                                state=tuple(state), beta_a=a, beta_b=b, counterfactual_raw_ratio=counterfactual)

    def observe(self, step: int, signals: TrainingSignals | None, credit=None) -> list[dict]:
        """Fold in step t's signals (and, for reward="counterfactual", its `StepCredit`); close the
        decisions whose credit is complete at t; update once B have closed.

        Returns the records of step t, in order: the decision taken at t (if any), then, when the
        controller updated, one "credit" record per decision of the batch and one "update" record.
        signals=None marks a step without usable signals (e.g. a skipped non-finite update): every
        open decision contains that step, so those decisions are dropped (a "dropped" record
        each) and never credited; the state's moving averages are left as they were.
        """
        if signals is None:
            return self._observe_missing(step)
        signals.require(*self._required)
        if self.counterfactual and self.wants_credit(step) and credit is None:
            raise ValueError("exposure.reward=counterfactual needs the paired credit of the first step of each "
                             "hold window (the loop's credit phase); got none")
        loss = None if self.counterfactual else self._progress_value(signals)
        score = signals.grounding_score
        if score is None and self.needs_grounding_score:
            raise ValueError(
                "TrainingSignals.grounding_score is None but exposure.grounding_weight > 0: "
                "compute g_t every step, or set exposure.grounding_weight=0"
            )
        self._clock.end(step)
        assert self._current is not None
        records = [self._current.record(self.state_names)] if self._current.step == step else []
        self.tracker.observe(self._current.reveal_ratio, signals)
        still_open = []
        for pending in self._open:
            pending.steps += 1
            if self.counterfactual:
                if credit is not None:
                    pending.paired.append(credit.paired_mean())
                complete = pending.steps == self._lookahead
            else:
                pending.losses.append(loss)
                if pending.steps > self._first_grounding_step and len(pending.scores) < self._lookahead:
                    pending.scores.append(score)  # g_{t0} … or (grounding_steps="next") g_{t0+1} …
                complete = len(pending.losses) == self._lookahead + 1
            if complete:
                self._closed.append(_ClosedDecision(pending.decision, step, self._returns(pending)))
            else:
                still_open.append(pending)
        self._open = still_open
        if len(self._closed) >= self.cfg.decisions_per_update:
            records += self._update(step)
        return records

    def _observe_missing(self, step: int) -> list[dict]:
        self._clock.end(step)
        assert self._current is not None
        records = [self._current.record(self.state_names)] if self._current.step == step else []
        records += [
            {
                "event": "dropped",
                "step": step,
                "decision_step": pending.decision.step,
                "reason": f"no training signals at step {step}, inside this decision's credit",
            }
            for pending in self._open
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

    def _returns(self, pending: _Pending) -> DecisionReturn:
        if self.counterfactual:
            paired = sum(pending.paired)
            return DecisionReturn(progress_return=paired, grounding_return=None, reward=paired)
        progress = self._progress(pending.losses)
        grounding = None
        if pending.scores and all(g is not None for g in pending.scores):
            grounding = grounding_return(pending.scores, self.cfg.discount)
        if self.cfg.grounding_scale == "zscore":
            scaled_progress = self.scales["progress"].scaled(progress)
            scaled_grounding = None if grounding is None else self.scales["grounding"].scaled(grounding)
            reward = decision_reward(scaled_progress, scaled_grounding, self.cfg.grounding_weight).reward
            return DecisionReturn(progress_return=progress, grounding_return=grounding, reward=reward)
        return decision_reward(progress, grounding, self.cfg.grounding_weight)

    def _update(self, step: int) -> list[dict]:
        """One REINFORCE step on the first B closed decisions; their records and the update's."""
        batch = self._closed[: self.cfg.decisions_per_update]
        self._closed = self._closed[self.cfg.decisions_per_update :]
        rewards = [closed.returns.reward for closed in batch]
        states = torch.tensor([closed.decision.state for closed in batch], dtype=torch.float32)
        raw = torch.tensor([closed.decision.raw_reveal_ratio for closed in batch], dtype=torch.float32)
        if self.counterfactual:
            scale = self.scales["paired"]
            for r in rewards:
                scale.update(r)
            advantages = [r / scale.rms() for r in rewards]
            other = torch.tensor([closed.decision.counterfactual_raw_ratio for closed in batch], dtype=torch.float32)
            metrics = policy_step(self.network, self.optimizer, torch.cat([states, states]), torch.cat([raw, other]),
                                  torch.tensor(advantages + [-a for a in advantages], dtype=torch.float32),
                                  self.target_entropy, self.cfg.entropy_coef)
        else:
            advantages = normalized_advantages(rewards)
            metrics = policy_step(self.network, self.optimizer, states, raw,
                                  torch.tensor(advantages, dtype=torch.float32), self.target_entropy,
                                  self.cfg.entropy_coef)
        self.updates += 1
        records = [
            {
                "event": "credit",
                "step": step,
                "decision_step": closed.decision.step,
                "closed_step": closed.closed_step,
                "raw_reveal_ratio": closed.decision.raw_reveal_ratio,
                "reveal_ratio": closed.decision.reveal_ratio,
                **({"counterfactual_ratio": clipped(self.cfg, closed.decision.counterfactual_raw_ratio)}
                   if self.counterfactual else {}),
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
            "scales": {name: scale.state_dict() for name, scale in self.scales.items()},
            "clock": self._clock.state_dict(),
            "current": None if self._current is None else self._current.to_state(),
            "open": [
                {
                    "decision": pending.decision.to_state(),
                    "losses": list(pending.losses),
                    "scores": list(pending.scores),
                    "paired": list(pending.paired),
                    "steps": pending.steps,
                }
                for pending in self._open
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
        for name, scale in self.scales.items():
            scale.load_state_dict(state["scales"][name])
        self._clock.load_state_dict(state["clock"])
        current = state["current"]
        self._current = None if current is None else ExposureDecision.from_state(current)
        self._open = [
            _Pending(
                ExposureDecision.from_state(p["decision"]),
                [float(x) for x in p["losses"]],
                [None if g is None else float(g) for g in p["scores"]],
                [float(x) for x in p["paired"]],
                int(p["steps"]),
            )
            for p in state["open"]
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
