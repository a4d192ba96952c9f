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


@pytest.mark.parametrize("batch_rows", [7, 1 << 22])
def test_batched_load_equals_the_whole_table_read_at_once(encoder_lake, graph_data, batch_rows):
    """The record-batch reader fills the same arrays as masking the whole table: links per split in
    the table's order, training features, users' activity and subreddits' degrees."""
    from zipp_assets.encoder.data import USER_FEATURES, load_graph_data, user_activity_features
    from zipp_assets.imaging.encoders import PixelStatsEncoder

    data = load_graph_data(encoder_lake, PixelStatsEncoder.name, batch_rows=batch_rows)
    edges = lake.read_table(encoder_lake, "graph_edges")
    split = edges["split"]
    masks = {s: pc.equal(split, s).to_numpy(zero_copy_only=False) for s in ("train", "val", "test")}
    users, subreddits = edges["user_index"].to_numpy(), edges["subreddit_index"].to_numpy()
    for s, mask in masks.items():
        assert mask.any()
        np.testing.assert_array_equal(data.edges[s].numpy(), np.stack([users[mask], subreddits[mask]], axis=1))
    assert set(data.edge_features) == {"train"}  # held-out links' features are never loaded
    train = masks["train"]
    torch_equal = np.testing.assert_array_equal
    torch_equal(data.edge_features["train"].numpy(), graph_data.edge_features["train"].numpy())
    columns = {c: edges[c].to_numpy()[train] for c in ("comments_bin", "submissions_bin", "score_bin", "active_months")}
    expected_users = user_activity_features(users[train], columns, data.num_users)
    assert expected_users.shape == (data.num_users, len(USER_FEATURES))
    norm = data.normalization
    np.testing.assert_array_equal(data.user_features.numpy(),
                                  FeatureNormalization.apply(expected_users, norm.user_mean, norm.user_std))
    torch_equal(data.subreddit_degree.numpy(), np.bincount(subreddits[train], minlength=data.num_subreddits))


def test_user_activity_sums_bins_counts_links_and_keeps_the_busiest_month():
    from zipp_assets.encoder.data import user_activity_features

    users = np.array([2, 0, 2, 2])
    columns = {"comments_bin": np.array([1, 0, 2, 3]), "submissions_bin": np.array([0, 1, 0, 0]),
               "score_bin": np.array([-2, 1, 1, 0]), "active_months": np.array([1, 4, 3, 2])}
    matrix = user_activity_features(users, columns, num_users=4)
    # bin b stands for 2^|b| - 1 (signed): user 2 has 1 + 3 + 7 comments, -3 + 1 + 0 score, 3 links
    np.testing.assert_allclose(matrix[2], [np.log1p(11), 0.0, np.log1p(3), 3.0, -np.log1p(2)])
    np.testing.assert_allclose(matrix[0], [0.0, np.log1p(1), np.log1p(1), 4.0, np.log1p(1)])
    assert not matrix[[1, 3]].any()  # users without training links


def test_a_split_other_than_train_val_or_test_is_refused():
    import types

    import pyarrow as pa
    import pyarrow.dataset as pads

    from zipp_assets.encoder.data import _split_codes

    def snapshot(splits):
        return types.SimpleNamespace(to_dataset=lambda: pads.dataset(pa.table({"split": splits})))

    np.testing.assert_array_equal(_split_codes(snapshot(["val", "train", "test", "train"]), 3), [1, 0, 2, 0])
    with pytest.raises(ValueError, match="split is not train, val or test"):
        _split_codes(snapshot(["train", "holdout", "test"]), 2)
    with pytest.raises(ValueError, match="split is not train, val or test"):
        _split_codes(snapshot(["train", None]), 2)


def test_a_second_read_that_disagrees_with_the_first_is_refused(encoder_lake, monkeypatch):
    """The links are placed by the splits of a first read; a second read of another length (a table
    changed underneath, a reader dropping rows) must not leave arrays half filled."""
    from zipp_assets.encoder import data as data_module
    from zipp_assets.imaging.encoders import PixelStatsEncoder

    original = data_module._batches

    def one_row_short(table, columns, batch_rows):
        batches = list(original(table, columns, batch_rows))
        if columns != ["split"]:
            batches[-1] = batches[-1].slice(0, batches[-1].num_rows - 1)
        return iter(batches)

    monkeypatch.setattr(data_module, "_batches", one_row_short)
    with pytest.raises(ValueError, match=r"graph_edges gave \d+ rows on the second read and \d+ on the first"):
        data_module.load_graph_data(encoder_lake, PixelStatsEncoder.name)
