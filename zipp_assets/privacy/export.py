"""Releases: what leaves the lake, k-anonymous on the quasi-identifiers and without verbatim text.

A persona release holds, per released user, a random release id (no pseudonym), the generalised
quasi-identifier (kanonymity.py) and the persona without its free-text summary; any other value
that repeats a run of words from the user's evidence (its comment snippets, searchable on Reddit)
is dropped. The release's risk is measured the way the audit measures it and a release over the
limit is refused before anything is written outside the lake.
"""

from __future__ import annotations

import json
import os
import random
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from zipp_assets.personas.identifiers import persona_texts
from zipp_assets.privacy.kanonymity import Generaliser, group_sizes, k_anonymize, release_candidates

MIN_GROUP_ENV = "ZIPP_EXPORT_MIN_GROUP_SIZE"
DEFAULT_MIN_GROUP = 5
DROPPED_PERSONA_FIELDS = ("summary",)  # first-person free text: the field most likely to quote a comment
VERBATIM_WORDS = 6  # a run this long, shared with a snippet, is a quotation
RELEASE_SCHEMA = pa.schema([
    ("user_id", pa.string()),  # inside the lake only, for the audit: never exported (EXPORTED_COLUMNS)
    ("release_id", pa.string()), ("generalisation", pa.string()), ("quasi_identifier", pa.string()),
    ("named_subreddits", pa.list_(pa.string())),  # the generaliser's public list, the same on every row
    ("persona_json", pa.string()), ("dropped_verbatim_values", pa.int64()),
])
EXPORTED_COLUMNS = [name for name in RELEASE_SCHEMA.names if name != "user_id"]
_WORD = re.compile(r"\w+")


def min_group_size(environ: Mapping[str, str] | None = None) -> int:
    """k of every release: ZIPP_EXPORT_MIN_GROUP_SIZE (default 5), a whole number of at least 2."""
    env = os.environ if environ is None else environ
    text = env.get(MIN_GROUP_ENV, str(DEFAULT_MIN_GROUP)).strip()
    if not text.isdigit() or int(text) < 2:
        raise ValueError(f"{MIN_GROUP_ENV} must be a whole number of at least 2 (k=1 hides no one), got {text!r}")
    return int(text)


def word_runs(text: str, length: int = VERBATIM_WORDS) -> set[tuple[str, ...]]:
    words = [w.lower() for w in _WORD.findall(text)]
    return {tuple(words[i:i + length]) for i in range(len(words) - length + 1)}


def without_verbatim(persona: dict, source_runs: set[tuple[str, ...]]) -> tuple[dict, int]:
    """The persona without its dropped fields and without any value that shares a run of
    VERBATIM_WORDS words with the source; and how many values were dropped for that."""
    dropped = 0

    def keep(value):
        nonlocal dropped
        if isinstance(value, str):
            if word_runs(value) & source_runs:
                dropped += 1
                return None
            return value
        if isinstance(value, list):
            kept = [keep(v) for v in value]
            return [v for v in kept if v is not None]
        if isinstance(value, dict):
            return {k: keep(v) for k, v in value.items()}
        return value

    clean = {k: keep(v) for k, v in persona.items() if k not in DROPPED_PERSONA_FIELDS}
    return {k: ("unknown" if v is None else v) for k, v in clean.items()}, dropped


@dataclass
class PersonaRelease:
    table: pa.Table
    k: int
    candidates: int  # personas offered
    suppressed: int  # left out: no generalisation hid them among k
    dropped_verbatim_values: int
    by_generalisation: dict[str, int] = field(default_factory=dict)


def build_persona_release(personas: list[dict], quasi_identifiers: list[dict], evidence_text: Mapping[str, str],
                          k: int, seed: int | None = None) -> PersonaRelease:
    """`personas`: effective personas (user_id, persona); `quasi_identifiers`: per user_id, from the lake;
    `evidence_text`: per user_id, the evidence its persona was written from (the verbatim source)."""
    qi = {r["user_id"]: r for r in quasi_identifiers}
    rows = [{**qi[p["user_id"]], "persona": p["persona"]} for p in personas if p["user_id"] in qi]
    release = k_anonymize(rows, k)
    rng = random.Random(seed)
    rng.shuffle(release.rows)  # release order says nothing about pseudonym or index order
    out, dropped_total, levels = [], 0, {}
    for row in release.rows:
        persona, dropped = without_verbatim(row["persona"], word_runs(evidence_text.get(row["user_id"], "")))
        dropped_total += dropped
        levels[row["generalisation"]] = levels.get(row["generalisation"], 0) + 1
        out.append({"user_id": row["user_id"], "release_id": secrets.token_hex(8) if seed is None else f"{rng.getrandbits(64):016x}",
                    "generalisation": row["generalisation"], "quasi_identifier": row["quasi_identifier"],
                    "named_subreddits": list(release.generaliser.common),
                    "persona_json": json.dumps(persona, sort_keys=True), "dropped_verbatim_values": dropped})
    return PersonaRelease(pa.Table.from_pylist(out, schema=RELEASE_SCHEMA), k, len(rows), release.suppressed,
                          dropped_total, levels)


@dataclass
class ReleaseRisk:
    rows: int
    smallest_group: int  # in the release itself
    fewest_dump_authors: int | None  # fewest authors of the dumps matching a released row (None: not measured)
    rows_below_k: int
    verbatim_values: int  # values of released personas that quote the evidence (must be 0)
    k: int

    @property
    def worst_risk(self) -> float:
        """Prosecutor risk: 1 / the smallest number of people a released row could be."""
        smallest = min(x for x in (self.smallest_group, self.fewest_dump_authors) if x is not None)
        return 1.0 / smallest if smallest else 1.0

    @property
    def within_limit(self) -> bool:
        return self.rows == 0 or (self.rows_below_k == 0 and self.worst_risk <= 1.0 / self.k and self.verbatim_values == 0)

    def as_dict(self) -> dict:
        return {"rows": self.rows, "smallest_group": self.smallest_group, "fewest_dump_authors": self.fewest_dump_authors,
                "rows_below_k": self.rows_below_k, "verbatim_values": self.verbatim_values, "k": self.k,
                "worst_risk": round(self.worst_risk, 4) if self.rows else 0.0, "within_limit": self.within_limit}


RELEASE_GROUP = ("generalisation", "quasi_identifier")  # what the rows of a released group share


def release_risk(release: pa.Table, k: int, author_quasi_identifiers: list[dict] | None = None,
                 evidence_text: Mapping[str, str] | None = None, group_by: Sequence[str] = RELEASE_GROUP) -> ReleaseRisk:
    """How exposed a release is: its smallest group (rows sharing `group_by`); with the attacker's
    quasi-identifiers from the dumps, the fewest authors a released row matches (with the generaliser
    each row was released under: a release made of several k-anonymous parts has one per part); with
    the evidence, the values that quote it."""
    rows = release.to_pylist()
    sizes = group_sizes(rows, group_by)
    fewest = None
    if author_quasi_identifiers is not None and rows:
        by_generaliser: dict[tuple[str, ...], list[dict]] = {}
        for row in rows:
            by_generaliser.setdefault(tuple(row["named_subreddits"]), []).append(row)
        # A row no author matches (a line the dumps and the lake disagree on) names no one.
        fewest = min((n for named, part in by_generaliser.items()
                      for n in release_candidates(part, Generaliser(named), author_quasi_identifiers) if n > 0),
                     default=None)
    verbatim = 0
    if evidence_text is not None:
        for row in rows:
            source = word_runs(evidence_text.get(row["user_id"], ""))
            verbatim += sum(bool(word_runs(t) & source) for t in persona_texts(json.loads(row["persona_json"])))
    return ReleaseRisk(len(rows), min(sizes, default=0), fewest, sum(s < k for s in sizes), verbatim, k)
