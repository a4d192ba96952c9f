"""Planted truth of a synthetic world, keyed by pseudonym: for evaluation only.

The pipeline never reads it; evaluation assets (encoder_evaluation, persona_fidelity) do, when the
data directory holds a synthetic world's truth.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from zipp_assets.graph.pseudonyms import pseudonymize


def planted_users(truth_dir: Path, key: bytes) -> dict[str, dict] | None:
    """pseudonym -> the truth row of that person, or None without truth. Older months key people by
    name and newer by author_fullname, so either pseudonym may be the graph's: both are mapped."""
    path = Path(truth_dir) / "users.parquet"
    if not path.is_file():
        return None
    truth = pq.read_table(path).to_pylist()
    out: dict[str, dict] = {}
    for column in ("author", "author_fullname"):
        out.update(zip(pseudonymize([t[column] for t in truth], key), truth))
    return out
