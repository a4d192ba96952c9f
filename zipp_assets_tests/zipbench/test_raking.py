"""IPF raking through balance on small tables with known margins, the unknown policy, trimming,
non-convergence, the default target table, and reweighted scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from zipp_assets.personas.schema import AGE_BANDS, GENDERS
from zipp_assets.zipbench.raking import DEFAULT_TARGETS, load_demographic_targets, rake, reweighted_scores

TARGETS = {"gender": {"female": 0.5, "male": 0.5}, "age": {"young": 0.3, "old": 0.7}}


def table(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    """(gender, age, how many rows) -> a frame with one row per person."""
    return pd.DataFrame([(g, a) for g, a, count in rows for _ in range(count)], columns=["gender", "age"])


def shares(frame: pd.DataFrame, column: str, weights: np.ndarray) -> dict[str, float]:
    grouped = pd.Series(weights).groupby(frame[column].to_numpy()).sum()
    return (grouped / grouped.sum()).to_dict()


def test_weighted_margins_match_the_targets():
    # sample margins: female 30%, male 70%; young 60%, old 40%
    frame = table([("female", "young", 20), ("female", "old", 10), ("male", "young", 40), ("male", "old", 30)])
    result = rake(frame, ["gender", "age"], TARGETS, tolerance=1e-8)
    assert result.converged and result.iterations >= 2
    for variable, target in TARGETS.items():
        assert shares(frame, variable, result.weights) == pytest.approx(target, abs=1e-6)
    assert result.max_marginal_error < 1e-6
    assert result.weights.mean() == pytest.approx(1.0) and len(result.weights) == 100
    # one weight per cell: people alike are weighted alike
    assert frame.assign(w=result.weights).groupby(["gender", "age"])["w"].nunique().eq(1).all()


def test_effective_sample_size_by_hand():
    # one margin, 3 "a" and 1 "b" to be 50/50: each "a" gets 2/3, the "b" gets 2 (mean 1)
    frame = pd.DataFrame({"group": ["a", "a", "a", "b"]})
    result = rake(frame, ["group"], {"group": {"a": 0.5, "b": 0.5}})
    np.testing.assert_allclose(result.weights, [2 / 3, 2 / 3, 2 / 3, 2.0])
    # (sum w)^2 / sum w^2 = 4^2 / (3 * 4/9 + 4) = 16 / (16/3) = 3
    assert result.effective_sample_size == pytest.approx(3.0)
    assert result.max_weight_ratio == pytest.approx(2.0)


def test_unknown_keeps_its_sample_share_and_the_known_levels_follow_the_target():
    frame = table([("female", "young", 10), ("male", "young", 50), ("unknown", "young", 20),
                   ("female", "old", 10), ("male", "old", 10)])  # gender unknown for 20 of 100
    result = rake(frame, ["gender", "age"], TARGETS, tolerance=1e-8)
    gender = shares(frame, "gender", result.weights)
    assert gender["unknown"] == pytest.approx(0.2, abs=1e-6)  # its sample share, not inflated or deflated
    assert gender["female"] == pytest.approx(0.4, abs=1e-6) and gender["male"] == pytest.approx(0.4, abs=1e-6)
    assert shares(frame, "age", result.weights) == pytest.approx(TARGETS["age"], abs=1e-6)  # unknowns count here
    assert result.target_shares["gender"] == pytest.approx({"female": 0.4, "male": 0.4, "unknown": 0.2})


def test_trimming_caps_the_weight_ratio():
    frame = table([("female", "young", 1), ("female", "old", 4), ("male", "young", 60), ("male", "old", 35)])
    untrimmed = rake(frame, ["gender", "age"], TARGETS)
    assert untrimmed.max_weight_ratio > 3
    capped = rake(frame, ["gender", "age"], TARGETS, max_weight_ratio=3.0)
    assert capped.max_weight_ratio <= 3.0 * (1 + 1e-8) and capped.weights.mean() == pytest.approx(1.0)
    assert capped.effective_sample_size > untrimmed.effective_sample_size
    assert capped.max_marginal_error > untrimmed.max_marginal_error  # trimming gives up some of the fit
    winsorised = rake(frame, ["gender", "age"], TARGETS, trim_percentile=(0.0, 0.05))
    assert winsorised.max_weight_ratio < untrimmed.max_weight_ratio
    with pytest.raises(ValueError, match="not both"):
        rake(frame, ["gender", "age"], TARGETS, max_weight_ratio=3.0, trim_percentile=0.05)


def test_non_convergence_is_reported():
    frame = table([("female", "young", 20), ("female", "old", 10), ("male", "young", 40), ("male", "old", 30)])
    early = rake(frame, ["gender", "age"], TARGETS, max_iter=1, tolerance=1e-12)
    assert not early.converged
    # every woman is young and every man old: 50/50 gender and 30/70 age cannot both hold
    impossible = table([("female", "young", 50), ("male", "old", 50)])
    result = rake(impossible, ["gender", "age"], TARGETS, max_iter=50)
    assert not result.converged and result.max_marginal_error > 0.1


@pytest.mark.parametrize("frame, targets, message", [
    (table([("female", "young", 2), ("other", "old", 2)]), TARGETS,
     r"variable 'gender': level\(s\) \['other'\] occur in the sample but have no target share"),
    (table([("female", "young", 2), ("female", "old", 2)]), TARGETS,
     r"variable 'gender': target level\(s\) \['male'\] have no rows in the sample"),
    (table([("female", "young", 2), ("male", "old", 2)]), {**TARGETS, "age": {"young": 0.5, "old": 0.6}},
     "variable 'age': target shares sum to 1.1"),
    (table([("female", "young", 2), ("male", "old", 2)]), {"gender": TARGETS["gender"]},
     "no target margin for variable 'age'"),
    (table([("female", "young", 2), ("male", "old", 2)]), {**TARGETS, "age": {"young": 1.0, "old": 0.0}},
     "variable 'age', level 'old': a target share must be > 0"),
    (table([("female", "young", 2), ("male", "old", 2)]), {**TARGETS, "gender": {"female": 0.5, "unknown": 0.5}},
     r"both a target share and kept at the sample share"),
])
def test_mismatched_levels_are_errors_naming_variable_and_level(frame, targets, message):
    with pytest.raises(ValueError, match=message):
        rake(frame, ["gender", "age"], targets)


def test_missing_values_and_bad_arguments_are_errors():
    frame = table([("female", "young", 2), ("male", "old", 2)])
    with pytest.raises(ValueError, match="'age' has 1 missing value"):
        rake(frame.assign(age=["young", None, "old", "old"]), ["gender", "age"], TARGETS)
    with pytest.raises(ValueError, match="no column 'locale'"):
        rake(frame, ["gender", "locale"], TARGETS)
    with pytest.raises(ValueError, match="design weights"):
        rake(frame.assign(w=[1.0, 0.0, 1.0, 1.0]), ["gender", "age"], TARGETS, design_weight="w")
    with pytest.raises(ValueError, match="max_weight_ratio must be > 1"):
        rake(frame, ["gender", "age"], TARGETS, max_weight_ratio=1.0)


def test_default_targets_cover_the_persona_schema_with_sources():
    targets = load_demographic_targets()
    assert set(targets.marginals) == {"age_band", "gender"}
    schema_levels = {"age_band": set(AGE_BANDS), "gender": set(GENDERS)}
    for variable, margin in targets.marginals.items():
        assert sum(margin.values()) == pytest.approx(1.0)
        covered = set(margin) | set(targets.sample_share_levels[variable])
        assert covered == schema_levels[variable]  # every persona level has a policy, and nothing else does
        assert "Census" in targets.sources[variable] and "https://" in targets.sources[variable]
        assert all(reason for reason in targets.sample_share_levels[variable].values())
    # the age bands add up to the cited "18 years and over" total, and male + female to the same
    import json

    table_json = json.loads(DEFAULT_TARGETS.read_text())["variables"]
    assert sum(table_json["age_band"]["counts"].values()) == 258_343_281
    assert sum(table_json["gender"]["counts"].values()) == 258_343_281
    assert targets.marginals["gender"]["male"] == pytest.approx(125_305_465 / 258_343_281)


def test_default_targets_rake_a_persona_table():
    targets = load_demographic_targets()
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"age_band": rng.choice(AGE_BANDS, 400, p=[0.05, 0.3, 0.25, 0.1, 0.05, 0.03, 0.02, 0.2]),
                          "gender": rng.choice(GENDERS, 400, p=[0.25, 0.45, 0.05, 0.25])})
    result = rake(frame, ["age_band", "gender"], targets.marginals, sample_share_levels=targets.sample_share_levels)
    assert result.converged and result.max_marginal_error < 1e-4
    assert result.weighted_shares["age_band"]["13-17"] == pytest.approx((frame["age_band"] == "13-17").mean(), abs=1e-4)


def test_reweighted_scores():
    scores = {1: 1.0, 2: 2.0, 3: float("nan"), 4: 5.0}
    result = reweighted_scores(scores, {1: 1.0, 2: 3.0, 3: 1.0})
    assert (result.users, result.users_without_weight) == (2, 1)  # user 3 has no score, user 4 no weight
    assert result.raw.estimate == pytest.approx(1.5) and result.reweighted.estimate == pytest.approx(1.75)
    assert result.difference_percent.estimate == pytest.approx(100 * 0.25 / 1.5)
    assert result.reweighted.low >= 1.0 and result.reweighted.high <= 2.0
