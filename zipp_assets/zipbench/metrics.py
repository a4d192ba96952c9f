"""ZIPBench's embedding metrics: CLIPScore x100 (image-image and image-text) and CMMD, as plain functions.

- `clip_score_image_image(gen_emb, gen_user, ref_emb, ref_user)`: for each generated image, the mean
  over its user's reference images of 100 * max(cos, 0) -> float64 [n] (NaN where the user has none).
- `clip_score_image_text(image_emb, text_emb, prompt_index)`: 100 * max(cos, 0) between each image and
  its base prompt's text embedding -> float64 [n].
- `cmmd(reference, generated, unbiased=False)`: CMMD of Jayasumana et al. 2024, biased (the paper's)
  or unbiased estimator, blockwise in float64 -> `CMMD(value, estimator, ...)`.
- `cmmd_per_user(...)`: the unbiased estimator on each user's small sets.
- `mean_by_user(scores, users)`: per-user means, the unit every ZIPBench interval resamples.

The clamp at 0 is Hessel et al. 2021's CLIPScore, w * max(cos, 0) with w = 100 here (the paper's w = 2.5
rescales its range; ZIPBench reports x100). Embeddings arrive L2-normalised float32 from
`ImageEncoder.encode`; they are normalised again here, and a row that is not finite or has no length
(a broken image or encoder) is a ValueError, never a silent zero. Nothing here reads files or knows
of Dagster; the benchmark assets pass arrays in and record what comes back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CMMD_SIGMA = 10.0
CMMD_SCALE = 1000.0
# Embedding values one CLIPScore batch gathers: 16M float32 (64 MB), whatever the number of images.
DEFAULT_BLOCK_VALUES = 1 << 24
DEFAULT_CMMD_BLOCK = 2048


def row_norms(name: str, matrix: np.ndarray, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """(`matrix` in `dtype`, its row lengths); refuses non-2-D input, non-finite values and zero rows."""
    matrix = np.asarray(matrix)
    if matrix.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [rows, dim], got shape {matrix.shape}")
    if matrix.shape[1] == 0:
        raise ValueError(f"{name} has embeddings of dimension 0")
    matrix = matrix.astype(dtype, copy=False)
    squared = np.einsum("ij,ij->i", matrix, matrix)
    if not np.all(np.isfinite(squared)):  # a NaN or infinity anywhere in a row shows in its squared norm
        finite = np.isfinite(matrix).all(axis=1)
        bad = int(np.flatnonzero(~finite)[0]) if not finite.all() else int(np.flatnonzero(~np.isfinite(squared))[0])
        raise ValueError(f"{name} has a non-finite value or norm (row {bad})")
    if np.any(squared == 0):
        raise ValueError(f"{name} has an all-zero embedding (row {int(np.flatnonzero(squared == 0)[0])})")
    return matrix, np.sqrt(squared)


def unit_rows(name: str, matrix: np.ndarray, dtype=np.float32) -> np.ndarray:
    """Rows scaled to length 1 in `dtype`, with `row_norms`' checks."""
    matrix, norms = row_norms(name, matrix, dtype)
    return matrix / norms[:, None]


def _user_ids(name: str, users: np.ndarray, rows: int) -> np.ndarray:
    users = np.asarray(users)
    if users.ndim != 1 or len(users) != rows:
        raise ValueError(f"{name} must be 1-D with one entry per embedding row ({rows}), got shape {users.shape}")
    if len(users) and not np.issubdtype(users.dtype, np.integer):
        raise ValueError(f"{name} must hold integer user indices, got {users.dtype}")
    return users.astype(np.int64, copy=False)


def _same_dim(a_name: str, a: np.ndarray, b_name: str, b: np.ndarray) -> None:
    if np.ndim(a) == 2 and np.ndim(b) == 2 and np.shape(a)[1] != np.shape(b)[1]:
        raise ValueError(f"{a_name} has dimension {np.shape(a)[1]} but {b_name} has {np.shape(b)[1]}")


@dataclass(frozen=True)
class ImageImageScores:
    """Per generated image CLIPScore x100 against its user's references (NaN without references)."""

    scores: np.ndarray  # float64 [n]
    images_without_references: int
    users_without_references: int


def clip_score_image_image(gen_emb: np.ndarray, gen_user: np.ndarray, ref_emb: np.ndarray, ref_user: np.ndarray,
                           block_values: int = DEFAULT_BLOCK_VALUES) -> ImageImageScores:
    """Image-image CLIPScore x100: for generated image i of user u,
    score_i = mean over u's reference images r of 100 * max(cos(g_i, r), 0).

    Blockwise over users: images and references are sorted by user; users are taken in batches of
    similar size (fewest images first), each batch padded to its largest user and scored by one batched
    matrix product of every user's images with that user's own references only, so no work is spent on
    pairs of different users and no Python loop runs per user. A batch gathers at most about
    `block_values` embedding values (a user larger than that is a batch alone).
    """
    _same_dim("gen_emb", gen_emb, "ref_emb", ref_emb)
    # Normalised by dividing the similarities, not the embeddings: one pass over the images less.
    gen, gen_norm = row_norms("gen_emb", gen_emb)
    gen_user = _user_ids("gen_user", gen_user, len(gen))
    ref, ref_norm = row_norms("ref_emb", ref_emb)
    ref_user = _user_ids("ref_user", ref_user, len(ref))
    if block_values < 1:
        raise ValueError("block_values must be >= 1")

    gen_order = np.argsort(gen_user, kind="stable")
    ref_order = np.argsort(ref_user, kind="stable")
    ref_sorted_users = ref_user[ref_order]
    users, gen_start, gen_count = np.unique(gen_user[gen_order], return_index=True, return_counts=True)
    ref_start = np.searchsorted(ref_sorted_users, users, side="left")
    ref_count = np.searchsorted(ref_sorted_users, users, side="right") - ref_start
    has_refs = ref_count > 0

    scored = np.flatnonzero(has_refs)
    size = gen_count + ref_count
    by_size = scored[np.argsort(size[scored], kind="stable")]
    rows_per_batch = max(1, block_values // max(1, gen.shape[1]))
    scores = np.full(len(gen), np.nan)
    start = 0
    while start < len(by_size):
        # the longest run of users from `start` whose padded batch stays within the budget
        stop = min(len(by_size), start + max(1, rows_per_batch // int(size[by_size[start]])))
        while stop > start + 1 and (stop - start) * int(size[by_size[stop - 1]]) > rows_per_batch:
            stop = max(start + 1, start + rows_per_batch // int(size[by_size[stop - 1]]))
        batch = by_size[start:stop]
        image_slot = np.arange(gen_count[batch].max())
        image_valid = image_slot[None, :] < gen_count[batch][:, None]
        image_rows = gen_order[np.where(image_valid, gen_start[batch][:, None] + image_slot, 0)]
        ref_slot = np.arange(ref_count[batch].max())
        ref_valid = ref_slot[None, :] < ref_count[batch][:, None]
        ref_rows = ref_order[np.where(ref_valid, ref_start[batch][:, None] + ref_slot, 0)]
        # [users, images, references]: each user's images against that user's references
        similarity = np.matmul(gen[image_rows], ref[ref_rows].transpose(0, 2, 1))
        similarity /= gen_norm[image_rows][:, :, None]
        similarity /= ref_norm[ref_rows][:, None, :]
        np.maximum(similarity, 0.0, out=similarity)
        similarity *= ref_valid[:, None, :]  # padding references count nothing
        means = 100.0 * similarity.sum(axis=2, dtype=np.float64) / ref_count[batch][:, None]
        scores[image_rows[image_valid]] = means[image_valid]
        start = stop
    missing = ~has_refs
    return ImageImageScores(scores=scores, images_without_references=int(gen_count[missing].sum()),
                            users_without_references=int(missing.sum()))


def clip_score_image_text(image_emb: np.ndarray, text_emb: np.ndarray, prompt_index: np.ndarray,
                          block_rows: int = 8192) -> np.ndarray:
    """Image-text CLIPScore x100: 100 * max(cos(image_i, text[prompt_index[i]]), 0) -> float64 [n].
    `text_emb` holds each base prompt's text embedding once; `prompt_index` points each image at its prompt."""
    _same_dim("image_emb", image_emb, "text_emb", text_emb)
    images = unit_rows("image_emb", image_emb)
    texts = unit_rows("text_emb", text_emb)
    prompt_index = _user_ids("prompt_index", prompt_index, len(images))
    if len(prompt_index) and (prompt_index.min() < 0 or prompt_index.max() >= len(texts)):
        raise ValueError(f"prompt_index must point into text_emb (0..{len(texts) - 1})")
    scores = np.empty(len(images))
    for start in range(0, len(images), block_rows):
        stop = start + block_rows
        cos = np.einsum("nd,nd->n", images[start:stop], texts[prompt_index[start:stop]], dtype=np.float64)
        scores[start:stop] = 100.0 * np.maximum(cos, 0.0)
    return scores


def mean_by_user(scores: np.ndarray, users: np.ndarray) -> dict[int, float]:
    """Mean of the finite per-image scores of each user; users with none are left out."""
    scores = np.asarray(scores, dtype=np.float64)
    users = _user_ids("users", users, len(scores))
    keep = np.isfinite(scores)
    unique, inverse = np.unique(users[keep], return_inverse=True)
    sums = np.bincount(inverse, weights=scores[keep], minlength=len(unique))
    counts = np.bincount(inverse, minlength=len(unique))
    return {int(u): float(s / c) for u, s, c in zip(unique, sums, counts)}


# -- CMMD --


@dataclass(frozen=True)
class CMMD:
    """A CMMD value and what it is: `estimator` is "biased" (the paper's) or "unbiased"."""

    value: float
    estimator: str
    n_reference: int
    n_generated: int
    sigma: float = CMMD_SIGMA
    scale: float = CMMD_SCALE

    def __float__(self) -> float:
        return self.value


def _cmmd_inputs(name: str, matrix: np.ndarray, minimum: int) -> np.ndarray:
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or len(matrix) < minimum:
        raise ValueError(f"{name} needs at least {minimum} embedding(s) as a 2-D array, got shape {matrix.shape}")
    return unit_rows(name, matrix, dtype=np.float64)


def _kernel_minus_one_sum(a: np.ndarray, b: np.ndarray | None, gamma: float, block: int) -> float:
    """sum over pairs (i, j) of k(a_i, b_j) - 1, k = exp(-gamma * ||a_i - b_j||^2), for rows that are unit
    vectors already multiplied by sqrt(2 gamma).

    For unit vectors ||a - b||^2 = 2 - 2 a.b, so k = exp(-2 gamma) * exp(2 gamma a.b): one matrix product of
    the scaled rows, one exp, one sum per block. Each block's sum has its count subtracted (the sum of
    k - 1), so the running total stays small against kernel values near 1 (sigma = 10 on the unit sphere
    puts them within 2% of 1) that a plain mean would add up in the billions.
    With `b` None the pairs are those of `a` with itself: blocks above the diagonal count twice, diagonal
    blocks are products of a block with itself (numpy computes those as a symmetric product, half the
    work), and each point's pair with itself is exactly k = 1 (contributes 0), so the same sum serves
    both estimators.
    """
    symmetric = b is None
    right = a if symmetric else b
    shift = np.exp(-2.0 * gamma)
    total = 0.0
    for i in range(0, len(a), block):
        for j in range(i if symmetric else 0, len(right), block):
            values = a[i : i + block] @ right[j : j + block].T
            np.exp(values, out=values)
            if symmetric and i == j:
                np.fill_diagonal(values, 0.0)  # then counted as exactly 1 each, below
                total += shift * float(values.sum()) + len(values) - values.size
            else:
                total += (shift * float(values.sum()) - values.size) * (2.0 if symmetric else 1.0)
    return total


def cmmd(reference: np.ndarray, generated: np.ndarray, *, unbiased: bool = False, sigma: float = CMMD_SIGMA,
         scale: float = CMMD_SCALE, block_size: int = DEFAULT_CMMD_BLOCK) -> CMMD:
    """CMMD (Jayasumana et al. 2024, "Rethinking FID"): MMD^2 between CLIP embeddings with the Gaussian RBF
    kernel k(x, y) = exp(-||x - y||^2 / (2 sigma^2)), sigma = 10, embeddings L2-normalised, times 1000.

    `unbiased=False` (the paper's estimator, for the full sets): mean(Kxx) + mean(Kyy) - 2 mean(Kxy) over
    all pairs, diagonals included; 0 exactly for a set against itself, never negative.
    `unbiased=True` (for small per-user sets): Kxx and Kyy averaged without their diagonals; it may come
    out slightly negative when the sets are alike, and needs at least 2 embeddings on each side.

    Computed in float64, blockwise (`block_size` rows of each side at a time), so 40,000 x 40,000 pairs
    never hold more than one block x block matrix; the block size changes only rounding.
    """
    if sigma <= 0 or block_size < 1:
        raise ValueError("sigma must be > 0 and block_size >= 1")
    _same_dim("reference", reference, "generated", generated)
    minimum = 2 if unbiased else 1
    x = _cmmd_inputs("reference", reference, minimum)
    y = _cmmd_inputs("generated", generated, minimum)
    gamma = 1.0 / (2.0 * sigma**2)
    n, m = len(x), len(y)
    same_set = x.shape == y.shape and np.array_equal(x, y)
    x *= np.sqrt(2.0 * gamma)  # in place: the kernel sums take unit rows scaled by sqrt(2 gamma)
    y *= np.sqrt(2.0 * gamma)
    sum_xx = _kernel_minus_one_sum(x, None, gamma, block_size)
    # A set against itself: Kxy is Kxx, so it is not computed again (and the biased value is exactly 0).
    sum_yy = sum_xx if same_set else _kernel_minus_one_sum(y, None, gamma, block_size)
    sum_xy = sum_xx if same_set else _kernel_minus_one_sum(x, y, gamma, block_size)
    # mean(K) = 1 + mean(K - 1); the three 1s cancel (1 + 1 - 2), in both estimators.
    if unbiased:
        mmd2 = sum_xx / (n * (n - 1)) + sum_yy / (m * (m - 1)) - 2.0 * sum_xy / (n * m)
    else:
        mmd2 = sum_xx / n**2 + sum_yy / m**2 - 2.0 * sum_xy / (n * m)
    return CMMD(value=scale * mmd2, estimator="unbiased" if unbiased else "biased", n_reference=n, n_generated=m,
                sigma=sigma, scale=scale)


@dataclass(frozen=True)
class PerUserCMMD:
    values: dict[int, float]  # user -> unbiased CMMD of that user's generated images against their references
    users_skipped: int  # fewer than 2 generated images or 2 references


def cmmd_per_user(gen_emb: np.ndarray, gen_user: np.ndarray, ref_emb: np.ndarray, ref_user: np.ndarray,
                  sigma: float = CMMD_SIGMA, scale: float = CMMD_SCALE) -> PerUserCMMD:
    """The unbiased CMMD of each user's generated images against that user's reference images (small sets,
    where the biased estimator's diagonal terms would dominate). Users with fewer than 2 on a side are
    skipped and counted."""
    _same_dim("gen_emb", gen_emb, "ref_emb", ref_emb)
    gen = unit_rows("gen_emb", gen_emb, dtype=np.float64)
    ref = unit_rows("ref_emb", ref_emb, dtype=np.float64)
    gen_user = _user_ids("gen_user", gen_user, len(gen))
    ref_user = _user_ids("ref_user", ref_user, len(ref))
    gen_order, ref_order = np.argsort(gen_user, kind="stable"), np.argsort(ref_user, kind="stable")
    gen_users, gen_start, gen_count = np.unique(gen_user[gen_order], return_index=True, return_counts=True)
    ref_sorted = ref_user[ref_order]
    values, skipped = {}, 0
    for user, start, count in zip(gen_users, gen_start, gen_count):
        lo, hi = np.searchsorted(ref_sorted, user, "left"), np.searchsorted(ref_sorted, user, "right")
        if count < 2 or hi - lo < 2:
            skipped += 1
            continue
        result = cmmd(ref[ref_order[lo:hi]], gen[gen_order[start : start + count]], unbiased=True, sigma=sigma,
                      scale=scale)
        values[int(user)] = result.value
    return PerUserCMMD(values=values, users_skipped=skipped)

