"""Quasi-identifiers, how many users they single out, and k-anonymous generalisation for exports.

A user's quasi-identifiers are what someone holding the public dumps can compute for every
username: the set of subreddits, the activity (comments and posts in power-of-two bins, active
months) and the period (first and last month). `quasi_identifiers_from_lake` reads them from the
graph tables; `quasi_identifiers_from_dumps` computes the same columns per author from the
attacker's knowledge (privacy/linkage.py), so a release can be attacked exactly as it was made.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import duckdb
import pyarrow as pa

from zipp_assets.graph.tables import count_bin_sql, describe_count_bin

QUASI_IDENTIFIERS = {  # name -> the columns of a quasi-identifier table it groups by
    "subreddit set": ("subreddits",),
    "activity": ("comments_bin", "submissions_bin", "active_months", "first_month", "last_month"),
    "subreddit set and activity": ("subreddits", "comments_bin", "submissions_bin", "active_months",
                                   "first_month", "last_month"),
}
# Generalisation ladder of an export, finest first: each row is released at the finest level where
# at least k released rows share its value; a row no level hides is left out.
LEVELS = ("common subreddits, activity, years", "most common subreddit, activity, years", "activity, years",
          "years", "nothing")


def quasi_identifiers_from_lake(users: pa.Table, subreddits: pa.Table, graph_edges: pa.Table) -> pa.Table:
    """Per graph user: user_index, user_id and its quasi-identifiers (subreddits as a sorted list)."""
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        for name, table in (("users", users), ("subreddits", subreddits), ("graph_edges", graph_edges)):
            con.register(name, table)
        return con.sql(
            """
            SELECT u.user_index, u.user_id, list_sort(list(s.subreddit)) AS subreddits, u.comments_bin,
                   u.submissions_bin, u.active_months, strftime(u.first_utc, '%Y-%m') AS first_month,
                   strftime(u.last_utc, '%Y-%m') AS last_month
            FROM graph_edges e JOIN subreddits s USING (subreddit_index) JOIN users u USING (user_index)
            GROUP BY ALL ORDER BY u.user_index
            """
        ).to_arrow_table()


def quasi_identifiers_from_dumps(knowledge: pa.Table, subreddits: Sequence[str]) -> pa.Table:
    """Per author of the attacker's knowledge: the same quasi-identifiers, over the given subreddits
    (those the graph kept: the attacker reads them off a release or the lake)."""
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        con.register("knowledge", knowledge)
        con.register("kept", pa.table({"subreddit": pa.array(list(subreddits), pa.string())}))
        return con.sql(
            f"""
            WITH months AS (  -- active months count every subreddit, as the graph's users table does
                SELECT author, len(list_distinct(flatten(list(months)))) AS active_months FROM knowledge GROUP BY author
            )
            SELECT author, any_value(canonical_key) AS canonical_key, list_sort(list(subreddit)) AS subreddits,
                   {count_bin_sql('sum(comment_count)')} AS comments_bin,
                   {count_bin_sql('sum(submission_count)')} AS submissions_bin,
                   any_value(m.active_months)::BIGINT AS active_months,
                   strftime(min(first_utc), '%Y-%m') AS first_month, strftime(max(last_utc), '%Y-%m') AS last_month
            FROM knowledge JOIN kept USING (subreddit) JOIN months m USING (author) GROUP BY author ORDER BY author
            """
        ).to_arrow_table()


def group_sizes(rows: list[dict], columns: Sequence[str]) -> list[int]:
    """For each row, how many rows share its values of `columns`."""
    keys = [tuple(_hashable(r[c]) for c in columns) for r in rows]
    counts = Counter(keys)
    return [counts[key] for key in keys]


def _hashable(value):
    return tuple(value) if isinstance(value, list) else value


@dataclass
class Uniqueness:
    quasi_identifier: str
    users: int
    unique: int  # users no one else shares the value with
    below_k: int  # users in a group smaller than k
    k: int

    def as_row(self) -> dict:
        share = (lambda n: round(n / self.users, 4) if self.users else 0.0)
        return {"quasi-identifier": self.quasi_identifier, "users": self.users, "unique": self.unique,
                "unique share": share(self.unique), f"in groups < {self.k}": self.below_k,
                f"share in groups < {self.k}": share(self.below_k)}


def uniqueness(quasi_identifiers: pa.Table, k: int) -> list[Uniqueness]:
    """How many users of a quasi-identifier table each quasi-identifier singles out (in DuckDB, so a
    graph of millions of users is counted without Python rows)."""
    out = []
    with duckdb.connect() as con:
        con.register("quasi", quasi_identifiers)
        for name, columns in QUASI_IDENTIFIERS.items():
            unique, below_k = con.sql(
                f"""
                SELECT count(*) FILTER (WHERE n = 1), count(*) FILTER (WHERE n < $k)
                FROM (SELECT count(*) OVER (PARTITION BY {', '.join(columns)}) AS n FROM quasi)
                """,
                params={"k": k},
            ).fetchall()[0]
            out.append(Uniqueness(name, quasi_identifiers.num_rows, int(unique or 0), int(below_k or 0), k))
    return out


# --- generalisation for exports -------------------------------------------------------------------

@dataclass(frozen=True)
class Generaliser:
    """The public part of an export's generalisation: which subreddits are common enough to name and
    their order of popularity (most first). Fitted on the rows to release; the attacker is given it."""

    common: tuple[str, ...]

    @cached_property
    def _rank(self) -> dict[str, int]:
        return {s: i for i, s in enumerate(self.common)}

    @staticmethod
    def fit(rows: list[dict], k: int) -> Generaliser:
        counts = Counter(s for r in rows for s in set(r["subreddits"]))
        common = [s for s, n in counts.items() if n >= k]
        return Generaliser(tuple(sorted(common, key=lambda s: (-counts[s], s))))

    def value(self, row: dict, level: int) -> str:
        """The row's released quasi-identifier at `level` (an index into LEVELS), as one string."""
        rank = self._rank
        named = sorted((s for s in set(row["subreddits"]) if s in rank), key=rank.__getitem__)
        activity = (f"comments {describe_count_bin(row['comments_bin'])}, posts {describe_count_bin(row['submissions_bin'])}, "
                    f"{row['active_months']} active month(s)")
        years = f"{row['first_month'][:4]}..{row['last_month'][:4]}"
        parts = [
            ["r/" + "+r/".join(sorted(named)) if named else "no common subreddit", activity, years],
            ["r/" + named[0] if named else "no common subreddit", activity, years],
            [activity, years],
            [years],
            [],
        ][level]
        return "; ".join(parts)


@dataclass
class Release:
    rows: list[dict]  # each input row kept, with "generalisation" (a LEVELS name) and "quasi_identifier"
    group_sizes: list[int]
    suppressed: int  # rows no level could hide in a group of k
    generaliser: Generaliser
    k: int

    @property
    def smallest_group(self) -> int:
        return min(self.group_sizes, default=0)


def k_anonymize(rows: list[dict], k: int) -> Release:
    """Release each row at the finest generalisation level where at least k released rows share its
    value; rows that no level can hide (a release of fewer than k rows) are suppressed."""
    if k < 2:
        raise ValueError(f"k must be at least 2 (k=1 hides no one), got {k}")
    generaliser = Generaliser.fit(rows, k)
    pending = list(range(len(rows)))
    released: dict[int, tuple[int, str]] = {}
    for level in range(len(LEVELS)):
        values = {i: generaliser.value(rows[i], level) for i in pending}
        counts = Counter(values.values())
        for i in pending:
            if counts[values[i]] >= k:
                released[i] = (level, values[i])
        pending = [i for i in pending if i not in released]
    out = [{**rows[i], "generalisation": LEVELS[level], "quasi_identifier": value}
           for i, (level, value) in sorted(released.items())]
    sizes = group_sizes(out, ("generalisation", "quasi_identifier"))
    return Release(out, sizes, len(pending), generaliser, k)


def release_candidates(release_rows: list[dict], generaliser: Generaliser, author_rows: list[dict]) -> list[int]:
    """The linkage attack on a release: per released row, how many authors of the dumps have its
    released quasi-identifier at its level (one is a re-identification)."""
    by_level: dict[int, Counter] = {}
    out = []
    for row in release_rows:
        level = LEVELS.index(row["generalisation"])
        if level not in by_level:
            by_level[level] = Counter(generaliser.value(a, level) for a in author_rows)
        out.append(by_level[level][row["quasi_identifier"]])
    return out
