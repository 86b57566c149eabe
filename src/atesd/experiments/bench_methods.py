"""The toy bench's method table: each row a config file in configs/ and the overrides that make the method.

`atesd.experiments.bench` runs them (`atesd bench --methods NAME ...`); a committed bench.json names its
runs by these names, so a row's meaning does not change: a config whose behaviour changed gets the
overrides that keep its old rows as they ran (`PAPER_BEFORE_25`) and a new row for the new behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    """One row of the bench: a config file in configs/ and the overrides that make the method.
    trains=False: evaluate the warm-started model as it is (the "base" row). batch_factor = f: the run
    takes f times the budget's rollouts per step for 1/f of its steps (the same rollouts in all;
    validation and checkpoints every 1/f as many steps too)."""

    name: str
    config: str
    overrides: tuple[str, ...] = ()
    trains: bool = True
    batch_factor: int = 1


PAPER_BEFORE_25 = ("exposure.grounding_scale=none", "exposure.grounding_steps=own",
                   "exposure.state_features=[progress,ratio_ema,distill_loss_ema,divergence_mean_ema,"
                   "top1_disagreement_ema,probe_nll_ema,self_confidence]")
METHODS: tuple[Method, ...] = (
    Method("base", "toy-opsd.yaml", trains=False),
    Method("sft", "toy-sft.yaml"),
    # GRPO at the bench's 32 rollouts per step: 4 prompts × 8 for 500 steps, lr 3e-5 (toy-grpo.yaml's rate then)
    Method("grpo", "toy-grpo.yaml", ("optim.lr=3e-5",)),
    # 16 prompts × 8 rollouts per step for 125 steps (the same rollouts), lr 3e-5, then 1e-5: the budget where GRPO
    # gains on both worlds (docs/toy-world.md section 10.1), toy-grpo.yaml's own since
    Method("grpo-16x8", "toy-grpo.yaml", ("optim.lr=3e-5",), batch_factor=4),
    Method("grpo-16x8-lr1e-5", "toy-grpo.yaml", ("optim.lr=1e-5",), batch_factor=4),
    Method("opsd", "toy-opsd.yaml"),  # fixed reveal ratio 1: the full reference
    Method("fixed-0", "toy-opsd.yaml", ("exposure.reveal_ratio=0",)),  # the final answer only
    Method("fixed-0.25", "toy-opsd.yaml", ("exposure.reveal_ratio=0.25",)),
    Method("fixed-0.5", "toy-opsd.yaml", ("exposure.reveal_ratio=0.5",)),
    Method("fixed-0.75", "toy-opsd.yaml", ("exposure.reveal_ratio=0.75",)),
    Method("random", "toy-opsd.yaml", ("exposure.policy=random", "exposure.hold_steps=4")),  # U[0.05, 1]
    Method("schedule", "toy-opsd.yaml", ("exposure.policy=schedule",)),  # 0.25 → 1, linear
    Method("schedule-down", "toy-opsd.yaml", ("exposure.policy=schedule", "exposure.schedule_start=1.0",
                                              "exposure.schedule_end=0.25")),  # 1 → 0.25, linear
    # oracle checks of per-difficulty exposure (fixed α per level 1..5)
    Method("by-difficulty-easy-full", "toy-opsd.yaml", ("exposure.policy=by_difficulty",
                                                        "exposure.difficulty_ratios=[1,1,1,0.5,0.5]")),
    Method("by-difficulty-hard-full", "toy-opsd.yaml", ("exposure.policy=by_difficulty",
                                                        "exposure.difficulty_ratios=[0.5,0.5,0.5,1,1]")),
    # the same check over label-free features (`atesd.exposure.by_feature`): the easy-full oracle's 0.5 goes to
    # the rollouts that look hard (about 42 % of the training problems are levels 4-5)
    Method("by-correct", "toy-opsd.yaml", ("exposure.policy=by_feature", "exposure.feature=correct",
                                           "exposure.feature_thresholds=[0.5]", "exposure.feature_ratios=[0.5,1]")),
    Method("by-pass-rate", "toy-opsd.yaml", ("exposure.policy=by_feature", "exposure.feature=pass_rate",
                                             "exposure.feature_thresholds=[0.5]", "exposure.feature_ratios=[0.5,1]",
                                             "rollout.num_generations=4")),  # a group of 4 rollouts per problem
    # by-pass-rate's control: OPSD on the same 8 problems × 4 rollouts per step
    Method("opsd-g4", "toy-opsd.yaml", ("rollout.num_generations=4",)),
    Method("by-confidence", "toy-opsd.yaml", ("exposure.policy=by_feature", "exposure.feature=confidence",
                                              "exposure.feature_binning=batch_quantile",
                                              "exposure.feature_thresholds=[0.4]", "exposure.feature_ratios=[0.5,1]")),
    Method("by-divergence", "toy-opsd.yaml", ("exposure.policy=by_feature", "exposure.feature=divergence",
                                              "exposure.feature_binning=batch_quantile",
                                              "exposure.feature_thresholds=[0.6]", "exposure.feature_ratios=[1,0.5]")),
    # their control: a random 40 % of the rollouts at α = 0.5 (the share by-confidence and by-divergence give 0.5)
    Method("by-random", "toy-opsd.yaml", ("exposure.policy=by_feature", "exposure.feature=random",
                                          "exposure.feature_thresholds=[0.4]", "exposure.feature_ratios=[0.5,1]")),
    Method("atesd", "toy-atesd.yaml"),  # paired counterfactual credit, one global α per step
    Method("atesd-per-example", "toy-atesd.yaml", ("exposure.granularity=per_example", "exposure.policy_lr=3e-3")),
    # one learned Beta per level, started at Beta(6, 1.2), α·m rounded to the nearest step; and its ablations
    Method("atesd-per-difficulty", "toy-atesd-per-difficulty.yaml"),
    Method("atesd-per-difficulty-paper-start", "toy-atesd-per-difficulty.yaml",
           ("prompts.reveal_rounding=floor", "exposure.initial_beta_a=2", "exposure.initial_beta_b=2")),
    Method("atesd-per-difficulty-floor", "toy-atesd-per-difficulty.yaml", ("prompts.reveal_rounding=floor",)),
    Method("atesd-per-difficulty-beta22", "toy-atesd-per-difficulty.yaml",
           ("exposure.initial_beta_a=2", "exposure.initial_beta_b=2")),
    # label-free: one learned Beta per bin of a per-example feature (whether the rollout was right), forward-mode credit
    Method("atesd-per-feature", "toy-atesd-per-feature.yaml"),
    # the feature the rule of docs/toy-world.md 14.1 picked (by-divergence's bins): the confirmatory test's controller
    Method("atesd-per-feature-divergence", "toy-atesd-per-feature.yaml",
           ("exposure.feature=divergence", "exposure.feature_binning=batch_quantile", "exposure.feature_thresholds=[0.6]")),
    Method("atesd-slow", "toy-atesd.yaml", ("exposure.policy_lr=3e-3",)),  # toy-atesd.yaml's rate before 2026-11-29
    Method("atesd-paper-exact", "toy-atesd-paper.yaml"),  # the paper's controller, exactly (docs/algorithm.md)
    # toy-atesd-paper.yaml as it was before issue 25 (G_gt unscaled, over g_{t0} … g_{t0+L−1}, 7 state features),
    # which the committed "atesd-paper" and ablation results ran with
    Method("atesd-paper", "toy-atesd-paper.yaml", PAPER_BEFORE_25),
    Method("atesd-discounted", "toy-atesd-paper.yaml",  # the paper's reward with our fixes
           (*PAPER_BEFORE_25, "exposure.progress_signal=probe_nll", "exposure.lookahead_steps=4",
            "exposure.grounding_scale=zscore", "exposure.policy_lr=1e-2")),
    Method("atesd-one-step", "toy-atesd-paper.yaml", (*PAPER_BEFORE_25, "exposure.reward=one_step")),
    Method("atesd-no-gt", "toy-atesd-paper.yaml", (*PAPER_BEFORE_25, "exposure.grounding_weight=0")),
)
METHODS_BY_NAME = {m.name: m for m in METHODS}
