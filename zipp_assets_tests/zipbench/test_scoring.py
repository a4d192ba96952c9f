"""Demographic reweighting of the benchmark's users when the sample lacks some target levels."""

import numpy as np
import pandas as pd
import pytest

from zipp_assets.zipbench.raking import DemographicTargets
from zipp_assets.zipbench.scoring import rake_users, targets_for_sample

TARGETS = DemographicTargets(
    population="test", sources={"age_band": "hand-made", "gender": "hand-made"},
    marginals={"age_band": {"18-24": 0.2, "25-34": 0.3, "35-44": 0.5}, "gender": {"female": 0.5, "male": 0.5}},
    sample_share_levels={"age_band": {"unknown": "not stated"}, "gender": {"unknown": "not stated"}})


def test_target_levels_without_users_are_dropped_and_the_rest_renormalised():
    frame = pd.DataFrame({"age_band": ["18-24", "25-34", "unknown"], "gender": ["female", "male", "male"]})
    margins, dropped = targets_for_sample(frame, ["age_band", "gender"], TARGETS)
    assert dropped == {"age_band": ["35-44"], "gender": []}
    assert margins["age_band"] == pytest.approx({"18-24": 0.4, "25-34": 0.6})
    with pytest.raises(ValueError, match="no benchmark user"):
        targets_for_sample(pd.DataFrame({"age_band": ["unknown"], "gender": ["male"]}), ["age_band"], TARGETS)


def test_rake_users_matches_the_reachable_margins_and_reports_what_it_dropped():
    users = ([{"age_band": "18-24", "gender": "female"}] * 30 + [{"age_band": "25-34", "gender": "male"}] * 60
             + [{"age_band": "25-34", "gender": "female"}] * 10 + [{"age_band": "unknown", "gender": "male"}] * 20)
    weights, fit = rake_users(users, TARGETS)
    w = np.array([weights[i] for i in range(len(users))])
    known = np.array([u["age_band"] != "unknown" for u in users])
    young = np.array([u["age_band"] == "18-24" for u in users])
    assert w[young].sum() / w[known].sum() == pytest.approx(0.4, abs=1e-3)  # 0.2 / (0.2 + 0.3)
    assert fit["target_levels_without_users"] == {"age_band": ["35-44"]} and fit["converged"]
    assert 0 < fit["effective_sample_size"] <= len(users)
