"""CLIPScore x100 and CMMD against values worked out by hand on a few 2-D points, and on bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from zipp_assets.zipbench.metrics import (
    clip_score_image_image,
    clip_score_image_text,
    cmmd,
    cmmd_per_user,
    mean_by_user,
)

SQRT_HALF = math.sqrt(0.5)


def test_image_image_clip_score_by_hand():
    refs = np.array([[1, 0], [0, 1], [0, 5]], dtype=np.float32)  # user 0: x and y axes; user 2: y axis (unnormalised)
    ref_user = np.array([0, 0, 2])
    gen = np.array([[3, 0], [-1, 0], [1, 1], [1, 0], [1, 1]], dtype=np.float32)
    gen_user = np.array([0, 0, 0, 1, 2])
    result = clip_score_image_image(gen, gen_user, refs, ref_user)
    # (3,0) is the x axis after normalising: cos 1 and 0 -> mean of 100 and 0
    # (-1,0): cos -1 (clamped to 0) and 0 -> 0;  (1,1)/sqrt2: cos sqrt(1/2) with both -> 70.71
    # user 1 has no references -> NaN;  user 2's (1,1) against the y axis -> 70.71
    expected = [50.0, 0.0, 100 * SQRT_HALF, np.nan, 100 * SQRT_HALF]
    np.testing.assert_allclose(result.scores, expected, rtol=1e-6)
    assert result.scores.dtype == np.float64
    assert (result.images_without_references, result.users_without_references) == (1, 1)


def test_image_image_clip_score_does_not_depend_on_blocks_and_matches_the_full_matrix():
    rng = np.random.default_rng(0)
    gen_user = rng.integers(0, 60, 900)
    ref_user = np.repeat(np.arange(5, 60), rng.integers(1, 8, 55))  # users 0-4 have no references
    gen = rng.normal(size=(900, 16)).astype(np.float32)
    refs = rng.normal(size=(len(ref_user), 16)).astype(np.float32)
    small = clip_score_image_image(gen, gen_user, refs, ref_user, block_values=1).scores  # one user per batch
    large = clip_score_image_image(gen, gen_user, refs, ref_user, block_values=10**9).scores  # one batch
    unit_gen = gen / np.linalg.norm(gen, axis=1, keepdims=True)
    unit_refs = refs / np.linalg.norm(refs, axis=1, keepdims=True)
    same_user = gen_user[:, None] == ref_user[None, :]
    with np.errstate(invalid="ignore"):
        full = (100 * np.maximum(unit_gen @ unit_refs.T, 0) * same_user).sum(1) / same_user.sum(1)
    np.testing.assert_allclose(small, full, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(large, full, rtol=1e-5, atol=1e-4)
    assert np.isnan(small[gen_user < 5]).all() and not np.isnan(small[gen_user >= 5]).any()


@pytest.mark.parametrize("gen, gen_user, refs, ref_user, message", [
    (np.ones((2, 3)), [0, 0], np.ones((1, 2)), [0], "dimension 3 but ref_emb has 2"),
    (np.array([[1.0, np.nan]]), [0], np.ones((1, 2)), [0], "non-finite"),
    (np.array([[0.0, 0.0]]), [0], np.ones((1, 2)), [0], "all-zero"),
    (np.ones((2, 2)), [0], np.ones((1, 2)), [0], "one entry per embedding row"),
    (np.ones((1, 2)), [0.5], np.ones((1, 2)), [0], "integer user indices"),
    (np.ones(2), [0], np.ones((1, 2)), [0], "2-D array"),
])
def test_image_image_clip_score_refuses_bad_input(gen, gen_user, refs, ref_user, message):
    with pytest.raises(ValueError, match=message):
        clip_score_image_image(np.asarray(gen), np.asarray(gen_user), np.asarray(refs), np.asarray(ref_user))


def test_image_text_clip_score_by_hand():
    texts = np.array([[1, 0], [0, 1], [-2, 0]], dtype=np.float32)
    images = np.array([[1, 0], [1, 0], [1, 0], [1, 1]], dtype=np.float32)
    scores = clip_score_image_text(images, texts, np.array([0, 1, 2, 0]))
    np.testing.assert_allclose(scores, [100.0, 0.0, 0.0, 100 * SQRT_HALF], rtol=1e-6)  # cos 1, 0, -1 -> 0, sqrt(1/2)
    with pytest.raises(ValueError, match="point into text_emb"):
        clip_score_image_text(images, texts, np.array([0, 1, 3, 0]))
    with pytest.raises(ValueError, match="dimension"):
        clip_score_image_text(images, np.ones((3, 4)), np.array([0, 1, 2, 0]))


def test_mean_by_user_skips_missing_scores():
    assert mean_by_user(np.array([1.0, 3.0, np.nan, np.nan, 4.0]), np.array([7, 7, 7, 8, 9])) == {7: 2.0, 9: 4.0}


# -- CMMD: k(x, y) = exp(-||x - y||^2 / (2 * 10^2)) = exp(-d2 / 200), times 1000 --


def test_cmmd_of_two_single_points_by_hand():
    # x = (1,0), y = (0,1): Kxx = Kyy = 1, Kxy = exp(-2/200); MMD^2 = 1 + 1 - 2 exp(-0.01)
    result = cmmd(np.array([[1.0, 0.0]]), np.array([[0.0, 3.0]]))  # (0,3) normalises to (0,1)
    assert result.value == pytest.approx(1000 * (2 - 2 * math.exp(-0.01)), rel=1e-12)
    assert result.estimator == "biased" and (result.n_reference, result.n_generated) == (1, 1)


def test_cmmd_biased_and_unbiased_by_hand():
    x = np.array([[1.0, 0.0], [0.0, 1.0]])
    y = np.array([[1.0, 0.0], [-1.0, 0.0]])
    # squared distances: within x, 2 (off the diagonal); within y, 4; across: 0, 4, 2, 2
    e1, e2 = math.exp(-2 / 200), math.exp(-4 / 200)
    k_xx, k_yy = (2 + 2 * e1) / 4, (2 + 2 * e2) / 4  # diagonals (k = 1) included
    k_xy = (1 + e2 + 2 * e1) / 4
    biased = 1000 * (k_xx + k_yy - 2 * k_xy)  # = 500 (1 - e^-0.01)
    unbiased = 1000 * (e1 + e2 - 2 * k_xy)  # off-diagonal means of Kxx, Kyy: e1 and e2; = 500 (e^-0.02 - 1)
    assert cmmd(x, y).value == pytest.approx(biased, rel=1e-12)
    assert biased == pytest.approx(500 * (1 - e1))
    result = cmmd(x, y, unbiased=True)
    assert result.value == pytest.approx(unbiased, rel=1e-12) and result.estimator == "unbiased"
    assert result.value < 0  # the unbiased estimator can go below zero


def test_cmmd_of_a_set_against_itself():
    x = np.random.default_rng(3).normal(size=(300, 8))
    assert cmmd(x, x.copy()).value == 0.0  # exactly
    # unbiased: 2 sum_{i != j}(K - 1) (1/(n(n-1)) - 1/n^2), so |value| <= 2 * 1000 * (1 - e^-0.02) / (n - 1)
    assert abs(cmmd(x, x, unbiased=True).value) <= 2000 * (1 - math.exp(-4 / 200)) / 299


def test_cmmd_does_not_depend_on_the_block_size_and_matches_the_full_matrices():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(150, 12)), rng.normal(size=(97, 12)) + 0.2
    for unbiased in (False, True):
        values = [cmmd(x, y, unbiased=unbiased, block_size=b).value for b in (1, 7, 64, 4096)]
        assert max(values) - min(values) < 1e-9
    ux, uy = x / np.linalg.norm(x, axis=1, keepdims=True), y / np.linalg.norm(y, axis=1, keepdims=True)

    def kernel(a, b):  # the paper's formula on full matrices
        return np.exp(-((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T) / 200)

    full = 1000 * (kernel(ux, ux).mean() + kernel(uy, uy).mean() - 2 * kernel(ux, uy).mean())
    assert cmmd(x, y, block_size=16).value == pytest.approx(full, abs=1e-9)


@pytest.mark.parametrize("x, y, unbiased, message", [
    (np.ones((2, 3)), np.ones((2, 2)), False, "dimension 3 but generated has 2"),
    (np.zeros((0, 2)), np.ones((2, 2)), False, "at least 1"),
    (np.ones((1, 2)), np.ones((2, 2)), True, "at least 2"),
    (np.array([[1.0, np.nan]]), np.ones((2, 2)), False, "non-finite"),
    (np.ones((2, 2)), np.zeros((2, 2)), False, "all-zero"),
    (np.ones(2), np.ones((2, 2)), False, "2-D"),
])
def test_cmmd_refuses_bad_input(x, y, unbiased, message):
    with pytest.raises(ValueError, match=message):
        cmmd(x, y, unbiased=unbiased)


def test_cmmd_per_user_is_the_unbiased_estimator_on_each_users_sets():
    rng = np.random.default_rng(5)
    gen, refs = rng.normal(size=(12, 4)), rng.normal(size=(9, 4))
    gen_user = np.array([0] * 5 + [1] * 4 + [2] * 2 + [3])
    ref_user = np.array([0] * 3 + [1] * 1 + [2] * 3 + [3] * 2)
    result = cmmd_per_user(gen, gen_user, refs, ref_user)
    assert set(result.values) == {0, 2} and result.users_skipped == 2  # user 1: one reference; user 3: one image
    assert result.values[0] == pytest.approx(cmmd(refs[:3], gen[:5], unbiased=True).value)
    assert result.values[2] == pytest.approx(cmmd(refs[4:7], gen[9:11], unbiased=True).value)
