"""ZIPBench's demographic reweighting: IPF raking of users to population margins, and reweighted scores.

- `load_demographic_targets(path)`: the target table (default `demographic_targets.json`, US adults by
  age band and sex from the 2020 Census, each margin with its source) -> `DemographicTargets`.
- `rake(frame, variables, target_marginals, ...) -> RakingResult`: raking (iterative proportional
  fitting) by Meta's `balance` (`Sample.from_frame`, `set_target`, `adjust(method="rake")`); this module
  checks the inputs, builds the target, and reads back weights, convergence, marginal error and Kish's
  effective sample size. Trimming is `balance.adjustment.trim_weights`.
- `reweighted_scores(scores, weights) -> ReweightedScores`: a per-user score's plain mean, its weighted
  mean and the shift in percent, each with a bootstrap interval over users (weights travel with users).

"unknown" (and any level the target table cannot speak for, such as minors in an adult population or
nonbinary in a census that records two sexes) is handled by one stated policy: such a level keeps its
design-weighted share of the sample on that variable's margin, and the levels the target covers share
the rest in the target's proportions. So users of unknown age are neither inflated nor deflated on the
age margin, and still take part in the other margins. Levels in the sample that the target neither
covers nor keeps, and target levels with no sample rows, are errors naming the variable and level.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from balance import Sample
from balance.adjustment import trim_weights
from balance.stats_and_plots.weights_stats import kish_ess

from zipp_assets.personas.schema import UNKNOWN
from zipp_assets.stats import Interval, bootstrap_mean, bootstrap_reweighting_shift, weighted_bootstrap_mean

DEFAULT_TARGETS = Path(__file__).with_name("demographic_targets.json")
SHARE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class DemographicTargets:
    population: str
    marginals: dict[str, dict[str, float]]  # variable -> level -> population share (sums to 1)
    sample_share_levels: dict[str, dict[str, str]]  # variable -> level -> why it keeps its sample share
    sources: dict[str, str]  # variable -> citation


def load_demographic_targets(path: str | Path = DEFAULT_TARGETS) -> DemographicTargets:
    """Read a target table: per variable, population `counts` by level (shares are count / total), a
    `source`, and the `keep_sample_share` levels with their reasons."""
    table = json.loads(Path(path).read_text())
    marginals, kept, sources = {}, {}, {}
    for variable, spec in table["variables"].items():
        counts = {str(level): float(count) for level, count in spec["counts"].items()}
        if not counts or any(not np.isfinite(c) or c <= 0 for c in counts.values()):
            raise ValueError(f"target table {path}: variable {variable!r} needs positive counts for its levels")
        if not spec.get("source"):
            raise ValueError(f"target table {path}: variable {variable!r} has no source")
        total = sum(counts.values())
        marginals[variable] = {level: count / total for level, count in counts.items()}
        kept[variable] = dict(spec.get("keep_sample_share", {}))
        sources[variable] = spec["source"]
    return DemographicTargets(population=table.get("population", ""), marginals=marginals,
                              sample_share_levels=kept, sources=sources)


@dataclass(frozen=True)
class RakingResult:
    weights: np.ndarray  # float64 [rows], in the frame's row order, mean 1
    effective_sample_size: float  # Kish: (sum w)^2 / sum w^2
    converged: bool  # every margin within `tolerance` (relative) before trimming
    iterations: int
    max_marginal_error: float  # max |weighted share - target share| over variables and levels, after trimming
    max_weight_ratio: float  # largest weight / mean weight
    target_shares: dict[str, dict[str, float]]  # what was raked to, kept levels at their sample share
    weighted_shares: dict[str, dict[str, float]]


def _check_frame(frame: pd.DataFrame, variables: Sequence[str]) -> dict[str, pd.Series]:
    if len(frame) == 0:
        raise ValueError("raking needs at least one row")
    if not variables or len(set(variables)) != len(variables):
        raise ValueError(f"raking needs distinct variables, got {list(variables)}")
    if {"id", "weight"} & set(variables):
        raise ValueError("'id' and 'weight' are balance's own column names; rename that variable")
    columns = {}
    for variable in variables:
        if variable not in frame.columns:
            raise ValueError(f"the frame has no column {variable!r} to rake on")
        column = frame[variable]
        if column.isna().any():
            raise ValueError(f"variable {variable!r} has {int(column.isna().sum())} missing value(s); "
                             f"write {UNKNOWN!r} for a demographic that is not known")
        columns[variable] = column.astype(str).reset_index(drop=True)
    return columns


def _effective_targets(columns: dict[str, pd.Series], design: np.ndarray,
                       target_marginals: Mapping[str, Mapping[str, float]],
                       sample_share_levels: Mapping[str, Collection[str]]) -> dict[str, dict[str, float]]:
    """Per variable, the margin raking aims at: kept levels at their design-weighted sample share, the
    target's levels at their share of the remainder. Every mismatch is an error naming variable and level."""
    targets = {}
    for variable, column in columns.items():
        if variable not in target_marginals:
            raise ValueError(f"no target margin for variable {variable!r}")
        shares = {str(level): float(share) for level, share in target_marginals[variable].items()}
        kept = {str(level) for level in sample_share_levels.get(variable, ())}
        for level, share in shares.items():
            if not np.isfinite(share) or share <= 0:
                raise ValueError(f"variable {variable!r}, level {level!r}: a target share must be > 0, got {share}")
        if abs(sum(shares.values()) - 1.0) > SHARE_TOLERANCE:
            raise ValueError(f"variable {variable!r}: target shares sum to {sum(shares.values()):.6f}, not 1")
        both = kept & shares.keys()
        if both:
            raise ValueError(f"variable {variable!r}, level(s) {sorted(both)}: both a target share and kept at "
                             "the sample share")
        present = set(column.unique())
        uncovered = sorted(present - shares.keys() - kept)
        if uncovered:
            raise ValueError(f"variable {variable!r}: level(s) {uncovered} occur in the sample but have no target "
                             f"share (target levels: {sorted(shares)}; kept at sample share: {sorted(kept)})")
        empty = sorted(shares.keys() - present)
        if empty:
            raise ValueError(f"variable {variable!r}: target level(s) {empty} have no rows in the sample; raking "
                             "cannot give weight to people it has not got (merge levels or drop them from the target)")
        weight_by_level = pd.Series(design).groupby(column.to_numpy()).sum()
        kept_shares = {level: float(weight_by_level.get(level, 0.0) / design.sum()) for level in kept & present}
        rest = 1.0 - sum(kept_shares.values())
        targets[variable] = {**{level: share * rest for level, share in shares.items()}, **kept_shares}
    return targets


def _weighted_shares(columns: dict[str, pd.Series], weights: np.ndarray) -> dict[str, dict[str, float]]:
    total = weights.sum()
    return {variable: {str(level): float(w / total) for level, w in
                       pd.Series(weights).groupby(column.to_numpy()).sum().items()}
            for variable, column in columns.items()}


def _max_error(shares: dict[str, dict[str, float]], targets: dict[str, dict[str, float]], relative: bool) -> float:
    errors = [abs(shares[v].get(level, 0.0) - share) / (share if relative else 1.0)
              for v, levels in targets.items() for level, share in levels.items()]
    return max(errors)


def rake(frame: pd.DataFrame, variables: Sequence[str], target_marginals: Mapping[str, Mapping[str, float]], *,
         sample_share_levels: Mapping[str, Collection[str]] | None = None, design_weight: str | None = None,
         max_iter: int = 1000, tolerance: float = 1e-6, trim_percentile: float | tuple[float, float] | None = None,
         max_weight_ratio: float | None = None) -> RakingResult:
    """Weights for the rows of `frame` whose weighted margins on `variables` match `target_marginals`.

    `target_marginals`: variable -> level -> share (each variable's shares sum to 1).
    `sample_share_levels`: variable -> levels that keep their sample share (default: "unknown" for every
    variable). `design_weight`: a column of starting weights (default 1 for every row).
    `tolerance`: the largest relative margin error, |weighted share / target share - 1|, at which IPF stops
    and the result counts as converged; `max_iter` bounds the IPF sweeps.
    Trimming (at most one): `trim_percentile` winsorises weights at that percentile (balance's
    `weight_trimming_percentile`); `max_weight_ratio` caps weight / mean weight, clipping again after each
    renormalisation until the cap holds. Trimming moves the margins; `max_marginal_error` is measured
    after it, `converged` before it.
    """
    if trim_percentile is not None and max_weight_ratio is not None:
        raise ValueError("trim by percentile or by maximum weight ratio, not both")
    if max_weight_ratio is not None and max_weight_ratio <= 1:
        raise ValueError("max_weight_ratio must be > 1 (weights are capped at that multiple of their mean)")
    if max_iter < 1 or tolerance <= 0:
        raise ValueError("max_iter must be >= 1 and tolerance > 0")
    columns = _check_frame(frame, variables)
    design = np.ones(len(frame)) if design_weight is None else frame[design_weight].to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(design)) or np.any(design <= 0):
        raise ValueError(f"design weights ({design_weight!r}) must be finite and > 0")
    kept = sample_share_levels if sample_share_levels is not None else {v: (UNKNOWN,) for v in variables}
    targets = _effective_targets(columns, design, target_marginals, kept)

    # The target as a weighted frame: every combination of levels, weighted by the product of the margins
    # (only its margins matter to raking).
    names = list(variables)
    combos = list(itertools.product(*(list(targets[v].items()) for v in names)))
    target_frame = pd.DataFrame([[level for level, _ in combo] for combo in combos], columns=names)
    target_frame["weight"] = [float(np.prod([share for _, share in combo])) for combo in combos]
    target_frame["id"] = [f"t{i}" for i in range(len(target_frame))]
    sample_frame = pd.DataFrame({v: columns[v] for v in names})
    sample_frame["weight"] = design
    sample_frame["id"] = [str(i) for i in range(len(sample_frame))]

    sample = Sample.from_frame(sample_frame, id_column="id", weight_column="weight", covar_columns=names)
    target = Sample.from_frame(target_frame, id_column="id", weight_column="weight", covar_columns=names)
    adjusted = sample.set_target(target).adjust(method="rake", variables=names, transformations=None,
                                                max_iteration=max_iter, convergence_rate=tolerance)
    raked = adjusted.df.set_index("id")["weight"].reindex(sample_frame["id"]).to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(raked)):
        raise RuntimeError("balance returned weights that are not finite")
    model = adjusted.model or {}
    iterations = int(len(model["iterations"])) if "iterations" in model else 1
    converged = _max_error(_weighted_shares(columns, raked), targets, relative=True) <= tolerance + 1e-12

    weights = pd.Series(raked)
    if trim_percentile is not None:
        weights = trim_weights(weights, weight_trimming_percentile=trim_percentile, keep_sum_of_weights=True)
    elif max_weight_ratio is not None:
        for _ in range(1000):  # trim_weights renormalises after clipping, which can lift the top again
            if weights.max() <= max_weight_ratio * weights.mean() * (1 + 1e-9):
                break
            weights = trim_weights(weights, weight_trimming_mean_ratio=max_weight_ratio, keep_sum_of_weights=True)
    weights = weights.to_numpy(dtype=np.float64)
    weights = weights / weights.mean()
    shares = _weighted_shares(columns, weights)
    return RakingResult(weights=weights, effective_sample_size=float(kish_ess(pd.Series(weights))),
                        converged=bool(converged), iterations=iterations,
                        max_marginal_error=_max_error(shares, targets, relative=False),
                        max_weight_ratio=float(weights.max()), target_shares=targets, weighted_shares=shares)


@dataclass(frozen=True)
class ReweightedScores:
    raw: Interval  # plain mean over users
    reweighted: Interval  # weighted mean over the same users
    difference_percent: Interval  # 100 * (reweighted - raw) / raw, on the same resamples
    users: int
    users_without_weight: int  # scored but not in the weights: left out of both means


def reweighted_scores(scores: Mapping[int, float], weights: Mapping[int, float], seed: int = 0) -> ReweightedScores:
    """A per-user score before and after demographic weighting, over the users that have both a finite
    score and a weight (`weights`: user -> weight, e.g. `dict(zip(frame["user"], rake(frame, ...).weights))`);
    intervals resample users with replacement, each with its weight (weighted bootstrap)."""
    users = sorted(u for u, s in scores.items() if np.isfinite(s) and u in weights)
    missing = sum(1 for u, s in scores.items() if np.isfinite(s) and u not in weights)
    values = np.array([scores[u] for u in users], dtype=np.float64)
    user_weights = np.array([weights[u] for u in users], dtype=np.float64)
    return ReweightedScores(
        raw=bootstrap_mean(values, seed=seed),
        reweighted=weighted_bootstrap_mean(values, user_weights, seed=seed),
        difference_percent=bootstrap_reweighting_shift(values, user_weights, seed=seed),
        users=len(users), users_without_weight=missing)
