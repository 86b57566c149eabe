"""atesd.metrics: one step's summary from hand-made loss stats and rollouts (one process)."""

import pytest
import torch
from accelerate import Accelerator

from atesd.metrics import summarize_step
from atesd.objectives import LossStats
from atesd.rollout.base import Rollout

LOOPING = tuple(range(10, 20)) + (7, 8) * 12  # ends with a 2-gram 12 times: a loop
FINE = tuple(range(10, 44))


def _rollout(ids, truncated):
    return Rollout(prompt_ids=(1, 2), completion_ids=ids, text="", logprobs=(-0.5,) * len(ids), truncated=truncated)


def _stats(lengths):
    n = sum(lengths)
    owner = torch.tensor([i for i, length in enumerate(lengths) for _ in range(length)])
    return LossStats(per_token=torch.full((n,), 0.1), mask=torch.ones(n, dtype=torch.bool), token_rollout=owner,
                     completion_lengths=tuple(lengths))


@pytest.fixture(scope="module")
def accelerator():
    return Accelerator(cpu=True)


def test_loop_rate_is_the_share_of_rollouts_ending_in_a_loop(accelerator):
    rollouts = [_rollout(LOOPING, True), _rollout(FINE, True), _rollout(FINE + (0,), False), _rollout(FINE, False)]
    completions = [list(r.completion_ids) for r in rollouts]
    summary = summarize_step(accelerator, torch.tensor(0.1), [_stats([len(c) for c in completions])], rollouts,
                             [False, True, True, False], completions)
    assert summary.loop_rate == 0.25 and summary.truncated == 0.5
    metrics = summary.metrics()
    assert metrics["rollout/loop_rate"] == 0.25 and metrics["rollout/truncated"] == 0.5


def test_a_step_without_rollouts_logs_no_loop_rate(accelerator):
    completions = [list(FINE), list(LOOPING)]
    summary = summarize_step(accelerator, torch.tensor(0.1), [_stats([len(c) for c in completions])], None,
                             [True, True], completions)
    assert summary.loop_rate is None and "rollout/loop_rate" not in summary.metrics()


def test_group_statistics_count_groups_whose_rewards_are_all_equal(accelerator):
    rollouts = [_rollout(FINE, False) for _ in range(8)]
    completions = [list(r.completion_ids) for r in rollouts]
    # groups of 4: [1, 1, 1, 1] (no advantage), [1, 0, 0, 0] (std sqrt(3)/4)
    correct = [True] * 4 + [True, False, False, False]
    summary = summarize_step(accelerator, torch.tensor(0.1), [_stats([len(c) for c in completions])], rollouts,
                             correct, completions, group_size=4)
    assert summary.zero_advantage_groups == 0.5
    assert summary.group_reward_std == pytest.approx(3 ** 0.5 / 4 / 2)
    assert summary.metrics()["rollout/zero_advantage_groups"] == 0.5
    one_rollout_each = summarize_step(accelerator, torch.tensor(0.1), [_stats([len(c) for c in completions])],
                                      rollouts, correct, completions)
    assert "rollout/zero_advantage_groups" not in one_rollout_each.metrics()
