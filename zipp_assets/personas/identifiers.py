"""Finding identifiers in persona text: pseudonyms, user mentions and handles, and usernames.

Usernames stay inside the ingestion tables; a persona (model output, or a person's edit) must not
carry one, nor a pseudonym (which links it back to the graph). What is flagged:
- a pseudonym (u_ and 20 hex digits);
- a user mention or handle, whoever it names: u/Name, /user/Name, reddit.com/u/Name, @name;
- a word that is exactly some ingested author's name *and* is shaped like a username rather than a
  word: it holds a digit, an underscore or a hyphen, or a capital after its first letter
  (Throwaway_123, quiet-heron, MarkTheBirder). On real Reddit most common words are someone's name
  ("the", "nurse", "Lisbon"); matching those would flag every persona. The price: an author whose
  name is a plain word is not found by name alone (only through a mention or handle).
Words are looked up in the set of usernames with DuckDB, so the check scales with the number of
distinct authors.
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pyarrow as pa

from zipp_assets.graph.user_keys import ingested_authors

PSEUDONYM = re.compile(r"\bu_[0-9a-f]{20}\b")
MENTION = re.compile(r"(?<![\w/])/?(?:u|user)/[A-Za-z0-9_-]{3,20}|reddit\.com/(?:u|user)/"
                     r"|(?<![\w@])@[A-Za-z0-9_.]{2,30}", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z0-9_-]{3,20}")  # Reddit usernames: 3-20 of these characters


def username_shaped(word: str) -> bool:
    """A digit, an underscore or a hyphen, or a capital after the first letter: not a dictionary word."""
    return any(c.isdigit() or c in "_-" for c in word) or any(c.isupper() for c in word[1:])


def find_identifiers(lake_dir: Path, texts_by_user: dict[str, list[str]]) -> dict[str, str]:
    """user_id -> what was found ("pseudonym", "mention" or "username"), for personas that carry one."""
    found = {u: "pseudonym" for u, texts in texts_by_user.items() if any(PSEUDONYM.search(t) for t in texts)}
    for user, texts in texts_by_user.items():
        if user not in found and any(MENTION.search(t) for t in texts):
            found[user] = "mention"
    words = [(u, w) for u, texts in texts_by_user.items() for t in texts for w in set(_WORD.findall(t))
             if username_shaped(w)]
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
