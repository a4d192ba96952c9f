"""The bootstrap helpers added for ZIPBench: relative lift of a paired mean, weighted mean, reweighting shift."""

from __future__ import annotations

import numpy as np
import pytest

from zipp_assets.stats import (
    bootstrap_mean,
    bootstrap_relative_lift,
    bootstrap_reweighting_shift,
    weighted_bootstrap_mean,
)


def test_relative_lift_is_the_percent_change_of_the_paired_means():
    rng = np.random.default_rng(0)
    baseline = {u: float(v) for u, v in enumerate(rng.uniform(1, 3, 200))}
    method = {u: 1.1 * v for u, v in baseline.items()}
    lift = bootstrap_relative_lift(method, baseline)
    # every resample draws the same users on both sides, so mean(1.1 b) / mean(b) - 1 is 10% in each
    assert lift.estimate == pytest.approx(10.0) and lift.low == pytest.approx(10.0) and lift.high == pytest.approx(10.0)
    assert lift.n == 200 and lift.verdict() == "ahead"


def test_relative_lift_uses_only_users_scored_on_both_sides():
    a = {1: 3.0, 2: 1.0, 3: float("nan"), 4: 100.0}
    b = {1: 2.0, 2: 2.0, 3: 1.0}
    lift = bootstrap_relative_lift(a, b, resamples=200)
    assert lift.n == 2 and lift.estimate == pytest.approx(100 * (2.0 - 2.0) / 2.0)
    assert lift.low < 0 < lift.high and lift.verdict() == "tied"  # user 1 gains 50%, user 2 loses 50%
    assert np.isnan(bootstrap_relative_lift({1: 1.0}, {2: 1.0}).estimate)


def test_relative_lift_of_a_zero_baseline_is_an_error():
    with pytest.raises(ValueError, match="baseline's mean is 0"):
        bootstrap_relative_lift({1: 1.0, 2: 2.0}, {1: 0.0, 2: 0.0})


def test_weighted_mean_by_hand_and_equal_weights_give_the_plain_bootstrap():
    assert weighted_bootstrap_mean(np.array([0.0, 1.0]), np.array([1.0, 3.0])).estimate == pytest.approx(0.75)
    values = np.random.default_rng(1).normal(size=300)
    plain, weighted = bootstrap_mean(values), weighted_bootstrap_mean(values, np.full(300, 2.5))
    # the same seed draws the same users, and equal weights make every weighted mean a plain mean
    assert (weighted.estimate, weighted.low, weighted.high) == pytest.approx((plain.estimate, plain.low, plain.high))


def test_weighted_mean_drops_nan_values_with_their_weights():
    interval = weighted_bootstrap_mean(np.array([1.0, np.nan, 3.0]), np.array([1.0, 100.0, 1.0]))
    assert interval.estimate == pytest.approx(2.0) and interval.n == 2


@pytest.mark.parametrize("values, weights, message", [
    ([1.0, 2.0], [1.0], "one length"),
    ([1.0, 2.0], [1.0, -1.0], "non-negative"),
    ([1.0, 2.0], [1.0, np.nan], "finite"),
    ([1.0, 2.0], [0.0, 0.0], "sum to 0"),
])
def test_weighted_mean_refuses_bad_weights(values, weights, message):
    with pytest.raises(ValueError, match=message):
        weighted_bootstrap_mean(np.array(values), np.array(weights))


def test_reweighting_shift_in_percent():
    shift = bootstrap_reweighting_shift(np.array([1.0, 2.0]), np.array([1.0, 3.0]))
    assert shift.estimate == pytest.approx(100 * (1.75 - 1.5) / 1.5)  # weighted 1.75 against plain 1.5
    values = np.random.default_rng(2).uniform(1, 2, 100)
    none = bootstrap_reweighting_shift(values, np.ones(100))
    assert none.estimate == pytest.approx(0.0) and none.low == pytest.approx(0.0) and none.high == pytest.approx(0.0)
    with pytest.raises(ValueError, match="plain mean is 0"):
        bootstrap_reweighting_shift(np.array([1.0, -1.0]), np.array([1.0, 2.0]))
