"""Bootstrap intervals over users, and the verdict they support ("ahead", "tied", "behind").

Every headline number of the evaluation tables is a mean over users; its interval resamples users
with replacement (percentile bootstrap). A difference between two models is resampled in pairs, on
the users both were scored on, so the shared per-user difficulty cancels out. A relative lift (percent
of a baseline's mean) is resampled the same way; a weighted mean (demographic reweighting) resamples
users together with their weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

RESAMPLES = 1000
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float
    n: int

    def as_dict(self, prefix: str) -> dict[str, float]:
        return {prefix: self.estimate, f"{prefix}_low": self.low, f"{prefix}_high": self.high}

    def verdict(self) -> str:
        """For a difference (model minus reference): where the interval lies against zero."""
        if self.low > 0:
            return "ahead"
        if self.high < 0:
            return "behind"
        return "tied"

    def __str__(self) -> str:
        return f"{self.estimate:.3f} [{self.low:.3f}, {self.high:.3f}]"


NAN_INTERVAL = Interval(float("nan"), float("nan"), float("nan"), 0)


def _resample_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def bootstrap_mean(values: np.ndarray, resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL) -> Interval:
    """The mean of per-user values with a percentile-bootstrap interval; NaN entries are dropped."""
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return NAN_INTERVAL
    means = np.empty(resamples)
    for start in range(0, resamples, 100):  # 100 resamples at a time keeps memory at 100 x n
        index = _resample_indices(len(values), min(100, resamples - start), seed + start)
        means[start : start + len(index)] = values[index].mean(axis=1)
    tail = (1 - level) / 2 * 100
    return Interval(float(values.mean()), float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail)),
                    len(values))


def paired_difference(a: dict[int, float], b: dict[int, float], resamples: int = RESAMPLES, seed: int = 0,
                      level: float = LEVEL) -> Interval:
    """mean(a - b) over the users both score, with a paired bootstrap interval."""
    common = sorted(u for u in a.keys() & b.keys() if not (np.isnan(a[u]) or np.isnan(b[u])))
    return bootstrap_mean(np.array([a[u] - b[u] for u in common]), resamples, seed, level)


def bootstrap_statistic(n: int, statistic: Callable[[np.ndarray], float], resamples: int = 200, seed: int = 0,
                        level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of a statistic that is not a mean (NMI): `statistic(indices)` on resampled users."""
    if n == 0:
        return float("nan"), float("nan")
    values = [statistic(index) for index in _resample_indices(n, resamples, seed)]
    tail = (1 - level) / 2 * 100
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def _percentile_interval(estimate: float, samples: np.ndarray, n: int, level: float) -> Interval:
    samples = samples[np.isfinite(samples)]
    if len(samples) == 0:
        return Interval(estimate, float("nan"), float("nan"), n)
    tail = (1 - level) / 2 * 100
    return Interval(estimate, float(np.percentile(samples, tail)), float(np.percentile(samples, 100 - tail)), n)


def _bootstrap_rows(n: int, statistic: Callable[[np.ndarray], np.ndarray], resamples: int, seed: int) -> np.ndarray:
    """`statistic(index)` on resampled users, vectorised: `index` is [k, n] and gives k values at once."""
    out = np.empty(resamples)
    for start in range(0, resamples, 100):  # 100 resamples at a time, as bootstrap_mean
        index = _resample_indices(n, min(100, resamples - start), seed + start)
        out[start : start + len(index)] = statistic(index)
    return out


def _relative_percent(numerator: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return 100.0 * numerator / baseline


def bootstrap_relative_lift(a: dict[int, float], b: dict[int, float], resamples: int = RESAMPLES, seed: int = 0,
                            level: float = LEVEL) -> Interval:
    """Relative lift of a paired mean in percent, 100 * (mean(a) - mean(b)) / mean(b), over the users both
    score (NaN dropped), with a paired percentile-bootstrap interval: each resample draws users, and both
    means are taken over the same drawn users. A baseline mean of 0 has no relative lift: ValueError."""
    common = sorted(u for u in a.keys() & b.keys() if not (np.isnan(a[u]) or np.isnan(b[u])))
    if not common:
        return NAN_INTERVAL
    values_a = np.array([a[u] for u in common], dtype=np.float64)
    values_b = np.array([b[u] for u in common], dtype=np.float64)
    if values_b.mean() == 0:
        raise ValueError("the relative lift is undefined: the baseline's mean is 0")
    estimate = float(_relative_percent(values_a.mean() - values_b.mean(), values_b.mean()))
    samples = _bootstrap_rows(len(common), lambda index: _relative_percent(
        values_a[index].mean(axis=1) - values_b[index].mean(axis=1), values_b[index].mean(axis=1)), resamples, seed)
    return _percentile_interval(estimate, samples, len(common), level)


def _checked_weights(values: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray(values, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    if values.shape != weights.shape or values.ndim != 1:
        raise ValueError(f"values and weights must be 1-D and of one length, got {values.shape} and {weights.shape}")
    if not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise ValueError("weights must be finite and non-negative")
    keep = ~np.isnan(values)
    values, weights = values[keep], weights[keep]
    if len(values) and weights.sum() <= 0:
        raise ValueError("the weights of the scored users sum to 0")
    return values, weights


def _weighted_means(values: np.ndarray, weights: np.ndarray, index: np.ndarray) -> np.ndarray:
    w = weights[index]
    with np.errstate(divide="ignore", invalid="ignore"):  # a resample of only zero weights gives NaN, dropped
        return (values[index] * w).sum(axis=1) / w.sum(axis=1)


def weighted_bootstrap_mean(values: np.ndarray, weights: np.ndarray, resamples: int = RESAMPLES, seed: int = 0,
                            level: float = LEVEL) -> Interval:
    """The weighted mean sum(w * v) / sum(w) of per-user values, with a percentile-bootstrap interval that
    resamples users with replacement (each keeps its weight). NaN values are dropped with their weights."""
    values, weights = _checked_weights(values, weights)
    if len(values) == 0:
        return NAN_INTERVAL
    estimate = float((values * weights).sum() / weights.sum())
    samples = _bootstrap_rows(len(values), lambda index: _weighted_means(values, weights, index), resamples, seed)
    return _percentile_interval(estimate, samples, len(values), level)


def bootstrap_reweighting_shift(values: np.ndarray, weights: np.ndarray, resamples: int = RESAMPLES, seed: int = 0,
                                level: float = LEVEL) -> Interval:
    """How much weighting moves a mean, in percent: 100 * (weighted mean - plain mean) / plain mean, with
    both means taken on the same resampled users (so the interval is that of the shift itself)."""
    values, weights = _checked_weights(values, weights)
    if len(values) == 0:
        return NAN_INTERVAL
    if values.mean() == 0:
        raise ValueError("the shift in percent is undefined: the plain mean is 0")
    estimate = float(_relative_percent((values * weights).sum() / weights.sum() - values.mean(), values.mean()))

    def shift(index: np.ndarray) -> np.ndarray:
        plain = values[index].mean(axis=1)
        return _relative_percent(_weighted_means(values, weights, index) - plain, plain)

    samples = _bootstrap_rows(len(values), shift, resamples, seed)
    return _percentile_interval(estimate, samples, len(values), level)


def wilson_interval(successes: int, trials: int, level: float = LEVEL) -> Interval:
    """A proportion k / n with its Wilson score interval (Wilson 1927), for independent yes/no trials; it
    stays inside [0, 1] and keeps its width near 0 and 1, where the normal approximation does not."""
    if trials < 0 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes} of {trials}")
    if trials == 0:
        return NAN_INTERVAL
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + level / 2)
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z / (1 + z * z / trials) * np.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    return Interval(p, float(max(0.0, centre - half)), float(min(1.0, centre + half)), trials)
