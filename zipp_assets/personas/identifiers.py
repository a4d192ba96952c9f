"""Finding identifiers in persona text: any ingested username, or any pseudonym.

Usernames stay inside the ingestion tables; a persona (model output, or a person's edit) must not
carry one, nor a pseudonym (which links it back to the graph). Words of each text are looked up in
the set of usernames with DuckDB, so the check scales with the number of distinct authors.
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pyarrow as pa

from zipp_assets.graph.user_keys import ingested_authors

PSEUDONYM = re.compile(r"\bu_[0-9a-f]{20}\b")
_WORD = re.compile(r"[A-Za-z0-9_-]{3,20}")  # Reddit usernames: 3-20 of these characters


def find_identifiers(lake_dir: Path, texts_by_user: dict[str, list[str]]) -> dict[str, str]:
    """user_id -> what was found ("pseudonym" or "username"), for personas that carry an identifier."""
    found = {u: "pseudonym" for u, texts in texts_by_user.items() if any(PSEUDONYM.search(t) for t in texts)}
    words = [(u, w) for u, texts in texts_by_user.items() for t in texts for w in set(_WORD.findall(t))]
    if not words:
        return found
    with duckdb.connect() as con:
        authors = ingested_authors(con, lake_dir)
        if authors is None:
            return found
        con.register("words", pa.table({"user_id": [u for u, _ in words], "word": [w for _, w in words]}))
        hits = con.sql(
            f"SELECT DISTINCT w.user_id FROM words w JOIN (SELECT DISTINCT author FROM ({authors}) "
            "WHERE author IS NOT NULL AND author NOT IN ('[deleted]', 'AutoModerator')) a "
            "ON a.author = w.word"
        ).fetchall()
    for (user,) in hits:
        found.setdefault(user, "username")
    return found


def persona_texts(persona: dict) -> list[str]:
    """Every free-text value of a persona (what may not carry an identifier)."""
    texts = []
    for value in persona.values():
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, list):
            texts += [v for v in value if isinstance(v, str)]
        elif isinstance(value, dict):
            texts += persona_texts(value)
    return texts
