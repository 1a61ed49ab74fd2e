"""The PTR part of GRPO-PTR on hand-made groups: the trust weight tau, the progressive
schedule and the weighted total with its ablations."""
import math

import numpy as np
import pytest
import torch

from components.config import PTRConfig
from components.rl.ptr import ProgressiveSchedule, combine, trust_weights
from components.rl.reasoning import GroundedScorer
from components.rl.rewards import REWARDS
from tests.test_rl_rewards import GOOD, rows

NAMES, WEIGHTS = ["format", "outcome", "reasoning"], [0.3, 1.0, 0.5]
TAU = math.exp(0.3 - 0.7)
# group 0: the right answers' rationales score lower than the wrong ones' (mu_c 0.3 < mu_w 0.7)
# group 1: garbage, every reward 0
REWARDS_2X4 = np.array([[1, 1, 0.2], [1, 1, 0.4], [1, 0, 0.8], [0, 0, 0.6]] + [[0, 0, 0]] * 4)


# ---------------------------------------------------------------- trust weight

@pytest.mark.parametrize("outcome, reasoning, tau", [
    ([1, 1, 1, 1], [0.1, 0.9, 0.5, 0.2], 1.0),  # all correct: no wrong subset
    ([0, 0, 0, 0], [0.1, 0.9, 0.5, 0.2], 1.0),  # all wrong: no right subset
    ([1, 1, 0, 0], [0.2, 0.4, 0.8, 0.6], TAU),  # mu_c 0.3 < mu_w 0.7
    ([1, 0, 1, 0], [0.9, 0.5, 0.7, 0.5], 1.0),  # mu_c 0.8 >= mu_w 0.5
    ([1, 0, 1, 0], [0.5, 0.5, 0.5, 0.5], 1.0),  # equal means
    ([1, 0.5, 0.5, 1], [0.1, 0.9, 0.9, 0.1], math.exp(-0.8)),  # partial credit is wrong
    ([1, 0, None, math.nan], [None, 0.5, 0.2, math.nan], math.exp(-0.7 / 3)),  # None/NaN = 0
])
def test_trust_weight_of_one_group(outcome, reasoning, tau):
    assert trust_weights(outcome, reasoning, 4) == pytest.approx([tau])


def test_trust_weights_are_per_group_of_adjacent_completions():
    tau = trust_weights(REWARDS_2X4[:, 1], REWARDS_2X4[:, 2], group_size=4)
    assert tau == pytest.approx([TAU, 1.0])
    assert trust_weights(torch.tensor([1.0, 0.0, 0.0, 1.0]), torch.tensor([0.2, 0.6, 0.1, 0.3]),
                         group_size=2) == pytest.approx([math.exp(0.2 - 0.6), 1.0])


def test_trust_weights_reject_ragged_input():
    with pytest.raises(ValueError, match="groups of 3"):
        trust_weights([1, 0, 1, 0], [0.1] * 4, 3)
    with pytest.raises(ValueError, match="differ in shape"):
        trust_weights([1, 0], [0.1] * 4, 2)


# ---------------------------------------------------------------- schedule

def test_schedule_switches_on_at_the_threshold_over_a_full_window_and_stays_on():
    s = ProgressiveSchedule(threshold=0.75, window=4)
    s.update([True, True])
    assert not s.on and s.accuracy == 1.0  # a lucky start: the window is not full yet
    s.update([False, False])
    assert not s.on and s.accuracy == 0.5
    s.update([True, True])
    assert not s.on and s.accuracy == 0.5  # the last 4: F F T T
    s.update([True])
    assert s.on and s.accuracy == 0.75  # F T T T: exactly the threshold
    s.update([False] * 4)
    assert s.on and s.accuracy == 0.0


def test_disabled_schedule_is_on_from_the_start_and_state_resumes():
    assert ProgressiveSchedule(enabled=False).on
    assert ProgressiveSchedule.from_config(PTRConfig(schedule=False)).on
    s = ProgressiveSchedule.from_config(PTRConfig(accuracy_threshold=0.5, accuracy_window=2))
    assert (s.threshold, s.window, s.on, s.accuracy) == (0.5, 2, False, 0.0)
    s.update([True, False, True])
    resumed = ProgressiveSchedule(0.5, 2)
    resumed.load_state_dict(s.state_dict())
    assert resumed.on and resumed.accuracy == 0.5
    with pytest.raises(ValueError, match="threshold"):
        ProgressiveSchedule(threshold=1.5)


# ---------------------------------------------------------------- combination

def test_total_is_the_weighted_sum_with_tau_on_the_reasoning_term():
    total, stats = combine(REWARDS_2X4, NAMES, WEIGHTS, 4, PTRConfig(), schedule_on=True)
    assert total == pytest.approx([1.3 + 0.1 * TAU, 1.3 + 0.2 * TAU, 0.3 + 0.4 * TAU,
                                   0.3 * TAU, 0, 0, 0, 0])
    assert stats == pytest.approx({"ptr/tau_mean": (TAU + 1) / 2, "ptr/tau_below_1_share": 0.5,
                                   "ptr/schedule_on": 1.0, "groups/all_equal_share": 0.5,
                                   "groups/outcome_all_equal_share": 0.5})


def test_reasoning_waits_for_the_schedule():
    total, stats = combine(REWARDS_2X4, NAMES, WEIGHTS, 4, PTRConfig(), schedule_on=False)
    assert total == pytest.approx([1.3, 1.3, 0.3, 0.0, 0, 0, 0, 0])
    assert stats["ptr/schedule_on"] == 0.0
    assert stats["ptr/tau_mean"] == pytest.approx((TAU + 1) / 2)  # still reported


def test_ablations_no_tau_no_schedule_outcome_only():
    no_tau, stats = combine(REWARDS_2X4, NAMES, WEIGHTS, 4, PTRConfig(tau=False), True)
    assert no_tau[:4] == pytest.approx([1.4, 1.5, 0.7, 0.3])
    assert stats["ptr/tau_below_1_share"] == 0.5  # what tau would have done
    no_schedule, stats = combine(REWARDS_2X4, NAMES, WEIGHTS, 4, PTRConfig(schedule=False),
                                 schedule_on=False)
    assert no_schedule[3] == pytest.approx(0.3 * TAU) and stats["ptr/schedule_on"] == 1.0
    only, stats = combine(REWARDS_2X4[:, 1:2], ["outcome"], [1.0], 4, PTRConfig(), False)
    assert only == pytest.approx([1, 1, 0, 0, 0, 0, 0, 0])
    assert stats == {"ptr/tau_mean": 1.0, "ptr/tau_below_1_share": 0.0,
                     "ptr/schedule_on": 0.0, "groups/all_equal_share": 0.5,
                     "groups/outcome_all_equal_share": 0.5}


def test_tau_splits_on_the_annotator_aware_outcome_or_is_one_without_an_outcome():
    r = np.array([[1.0, 0.1], [0.5, 0.9]])
    total, stats = combine(r, ["outcome_annotator_aware", "reasoning"], [1.0, 1.0], 2,
                           PTRConfig(), True)
    tau = math.exp(0.1 - 0.9)
    assert total == pytest.approx([1.0 + 0.1 * tau, 0.5 + 0.9 * tau])
    assert stats["groups/outcome_all_equal_share"] == 0.0  # 1.0 and 0.5 differ
    total, stats = combine(r[:, 1:], ["reasoning"], [1.0], 2, PTRConfig(), True)
    assert total == pytest.approx([0.1, 0.9]) and stats["ptr/tau_mean"] == 1.0
    assert "groups/outcome_all_equal_share" not in stats  # no outcome reward


def test_the_outcome_share_sees_equal_labels_where_reasoning_makes_totals_differ():
    """Groups whose outcomes agree while their rationales score differently: every total
    differs (all_equal 0), but the label gives no signal in either group."""
    r = np.array([[1, 1, 0.2], [1, 1, 0.9], [1, 0, 0.1], [1, 0, 0.7]], dtype=float)
    _, stats = combine(r, NAMES, WEIGHTS, 2, PTRConfig(), schedule_on=True)
    assert stats["groups/all_equal_share"] == 0.0
    assert stats["groups/outcome_all_equal_share"] == 1.0


def test_combine_takes_tensors_and_nan_and_rejects_mismatches():
    r = torch.tensor([[1.0, float("nan")], [1.0, 0.0]])
    total, stats = combine(r, ["outcome", "format"], [1.0, 0.3], 2, PTRConfig(), True)
    assert total == pytest.approx([1.0, 1.0]) and stats["groups/all_equal_share"] == 1.0
    with pytest.raises(ValueError, match="2 reward columns, 3 names"):
        combine(r, NAMES, WEIGHTS, 2, PTRConfig(), True)
    with pytest.raises(ValueError, match="groups of 3"):
        combine(r, ["outcome", "format"], [1.0, 0.3], 3, PTRConfig(), True)


def test_reward_functions_feed_the_combination():
    """A group where the wrong answers argue better than the right ones, and a group of
    garbage: the first gets tau < 1, the second no learning signal."""
    poor = "It is so."
    completions = [f"Emotion: angry\nRationale: {poor}", f"Emotion: angry\nRationale: {poor}",
                   f"Emotion: sad\nRationale: {GOOD}", f"Emotion: happy\nRationale: {GOOD}",
                   None, "", "<think>" * 1000, "Emotion:\u202e\x00"]
    cols = rows(len(completions))
    per_func = np.array([REWARDS[name](None, completions, scorer=GroundedScorer(), **cols)
                         if name == "reasoning" else REWARDS[name](None, completions, **cols)
                         for name in NAMES]).T
    assert per_func[:, 1].tolist() == [1, 1, 0, 0, 0, 0, 0, 0]
    assert per_func[0, 2] < per_func[2, 2]
    total, stats = combine(per_func, NAMES, WEIGHTS, 4, PTRConfig(), schedule_on=True)
    tau = trust_weights(per_func[:, 1], per_func[:, 2], 4)
    assert tau[0] < 1.0 and tau[1] == 1.0
    assert total[4:].tolist() == [0.0] * 4
    assert total[0] > total[2]  # the right answer still wins
    assert stats["groups/all_equal_share"] == 0.5 and stats["ptr/tau_below_1_share"] == 0.5
