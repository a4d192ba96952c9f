"""The graph's edge features, read a column at a time in float32, standardise as the float64 matrix did."""

import numpy as np
import pyarrow.compute as pc
import pytest

from zipp_assets import lake
from zipp_assets.encoder.data import FeatureNormalization
from zipp_assets.graph.tables import EDGE_FEATURES


def test_edge_features_are_the_float64_standardisation_within_float32_precision(graph_data, encoder_lake):
    edges = lake.read_table(encoder_lake, "graph_edges")
    raw = np.stack([edges[c].to_numpy() for c in EDGE_FEATURES], axis=1).astype(np.float64)
    split = edges["split"]
    train = pc.equal(split, "train").to_numpy(zero_copy_only=False)
    reference = FeatureNormalization.fit(np.zeros((1, 5)), raw[train])
    np.testing.assert_allclose(graph_data.normalization.edge_mean, reference.edge_mean, rtol=1e-12)
    np.testing.assert_allclose(graph_data.normalization.edge_std, reference.edge_std, rtol=1e-12)
    expected = FeatureNormalization.apply(raw[train], reference.edge_mean, reference.edge_std)
    assert graph_data.edge_features["train"].dtype.is_floating_point and graph_data.edge_features["train"].dtype.itemsize == 4
    np.testing.assert_allclose(graph_data.edge_features["train"].numpy(), expected, rtol=1e-6, atol=1e-6)


def test_column_wise_fit_and_apply_match_the_matrix_ones_and_check_the_width():
    rng = np.random.default_rng(0)
    matrix = rng.integers(0, 40, size=(1_000, 4)).astype(np.float32)
    matrix[:, 2] = 7  # a constant column: its spread is taken as 1, not 0
    rows = rng.random(1_000) < 0.8
    users = rng.random((50, 3))
    fitted = FeatureNormalization.fit_rows(users, matrix, rows)
    reference = FeatureNormalization.fit(users, matrix[rows].astype(np.float64))
    assert fitted.user_mean == reference.user_mean and fitted.user_std == reference.user_std
    np.testing.assert_allclose(fitted.edge_mean, reference.edge_mean, rtol=1e-12)
    np.testing.assert_allclose(fitted.edge_std, reference.edge_std, rtol=1e-12)
    assert fitted.edge_std[2] == 1.0
    expected = FeatureNormalization.apply(matrix.astype(np.float64), reference.edge_mean, reference.edge_std)
    got = FeatureNormalization.apply_in_place(matrix.copy(), fitted.edge_mean, fitted.edge_std)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    empty = FeatureNormalization.fit_rows(users, matrix, np.zeros(1_000, bool))
    assert empty.edge_mean == [0.0] * 4 and empty.edge_std == [1.0] * 4
    with pytest.raises(ValueError, match="4 features but normalisation statistics for 3"):
        FeatureNormalization.apply_in_place(matrix, [0.0] * 3, [1.0] * 3)
