"""Bootstrap intervals over users, and the verdict they support ("ahead", "tied", "behind").

Every headline number of the evaluation tables is a mean over users; its interval resamples users
with replacement (percentile bootstrap). A difference between two models is resampled in pairs, on
the users both were scored on, so the shared per-user difficulty cancels out.
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
