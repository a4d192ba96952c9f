"""The linkage attack of the threat model (docs/privacy.md): someone who holds the public dumps
names the person behind each pseudonym by matching what the graph publishes about them.

The attacker knows the pipeline (it is public). From the dumps it computes, for every author, the
very columns `graph_edges` publishes per subreddit (graph/tables.py's EDGE_COLUMNS_SQL, the same
SQL), then links a pseudonymous user to an author when exactly one author has the user's whole
signature: its set of subreddits and, in each, the published columns. It also matches one row at
a time, as the first attack on the exact columns did (a subreddit and a time to the second name the
comment, hence its author). The attack never needs the pseudonym key; only whoever measures it (the
audit, a test) checks a guess against the pseudonym.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from zipp_assets.graph.pseudonyms import pseudonymize
from zipp_assets.graph.tables import EDGE_COLUMNS_SQL, month_number_sql
from zipp_assets.reddit.authors import person_filter_sql
from zipp_assets.reddit.dumps import find_dump, iter_line_blocks
from zipp_assets.reddit.parse import TABLE_BUILDERS, Quarantine, RecordDecoder, decode_block

KNOWLEDGE_SCHEMA = pa.schema([
    ("author", pa.string()), ("canonical_key", pa.string()), ("subreddit", pa.string()),
    ("comment_count", pa.int64()), ("submission_count", pa.int64()), ("score_sum", pa.int64()),
    ("first_utc", pa.timestamp("us", tz="UTC")), ("last_utc", pa.timestamp("us", tz="UTC")),
    ("active_months", pa.int64()), ("months", pa.list_(pa.string())),
])
_PARTIAL_COLUMNS = ["author", "author_fullname", "subreddit", "score", "created_utc"]


def read_dump_knowledge(reddit_dir: Path, months: Sequence[str]) -> pa.Table:
    """What the attacker computes from the public dumps of `months`: per (author, subreddit) of every
    person, the comments, submissions, score sum, first and last time and active months, and the
    author's canonical key (its fullname where the dumps carry exactly one, as the pipeline keys it).

    Read with the project's own dump reader and decoders; each block is reduced to per-(author,
    subreddit, month) sums before the next is read, so memory grows with pairs, not with lines."""
    partials = []
    for month in months:
        for kind, is_comment in (("comments", 1), ("submissions", 0)):
            path = find_dump(reddit_dir, kind, month)
            record_type, build_table = TABLE_BUILDERS[kind]
            decoder = RecordDecoder(record_type)
            for block in iter_line_blocks(path):
                quarantine = Quarantine()  # lines the pipeline quarantines, the attacker skips too
                rows = build_table(decode_block(block, decoder, path.name, quarantine), path.name, quarantine)
                partials.append(_reduce_block(rows.select(_PARTIAL_COLUMNS), month, is_comment))
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        con.register("partials", pa.concat_tables(partials) if partials else _reduce_block(None, "", 0))
        return con.sql(
            f"""
            WITH fullnames AS (
                SELECT author, CASE WHEN count(DISTINCT author_fullname) = 1 THEN min(author_fullname) END AS fullname
                FROM partials GROUP BY author
            )
            SELECT p.author, coalesce(f.fullname, p.author) AS canonical_key, p.subreddit,
                   sum(p.comments)::BIGINT AS comment_count, sum(p.submissions)::BIGINT AS submission_count,
                   sum(p.score_sum)::BIGINT AS score_sum, min(p.first_utc) AS first_utc, max(p.last_utc) AS last_utc,
                   count(DISTINCT p.month)::BIGINT AS active_months, list_sort(list(DISTINCT p.month)) AS months
            FROM partials p JOIN fullnames f USING (author)
            WHERE {person_filter_sql('p.author')}
            GROUP BY p.author, f.fullname, p.subreddit
            ORDER BY p.author, p.subreddit
            """
        ).to_arrow_table().cast(KNOWLEDGE_SCHEMA)


def _reduce_block(rows: pa.Table | None, month: str, is_comment: int) -> pa.Table:
    with duckdb.connect() as con:
        if rows is None:
            rows = pa.table({"author": pa.array([], pa.string()), "author_fullname": pa.array([], pa.string()),
                             "subreddit": pa.array([], pa.string()), "score": pa.array([], pa.int64()),
                             "created_utc": pa.array([], pa.timestamp("us", tz="UTC"))})
        con.register("block_rows", rows)
        return con.sql(
            """
            SELECT author, author_fullname, subreddit, $month AS month, count(*) * $is_comment AS comments,
                   count(*) * (1 - $is_comment) AS submissions, sum(coalesce(score, 0))::BIGINT AS score_sum,
                   min(created_utc) AS first_utc, max(created_utc) AS last_utc
            FROM block_rows WHERE author IS NOT NULL GROUP BY author, author_fullname, subreddit
            """,
            params={"month": month, "is_comment": is_comment},
        ).to_arrow_table()


@dataclass
class LinkageResult:
    users: int  # pseudonymous users in the published graph
    linked: int  # users the attack names: exactly one author has their signature
    correct: int | None  # of those, named rightly (None without the key to check)
    median_candidates: float  # authors per user's signature, the middle user
    published_columns: list[str]
    rows: int = 0  # published rows (user-subreddit pairs)
    rows_matching_one_author: int = 0  # rows that alone single out one author's pair
    users_named_by_one_row: int = 0

    @property
    def linked_share(self) -> float:
        return self.linked / self.users if self.users else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "linked_share": round(self.linked_share, 4)}


def _signature_tables(con: duckdb.DuckDBPyConnection, graph_edges: pa.Table, subreddits: pa.Table,
                      knowledge: pa.Table, published: Mapping[str, str]) -> None:
    """Temp tables `attacker_pairs` (author, canonical_key, pair) and `published_pairs` (user_index,
    pair): one text per (subreddit, published columns), computed alike on both sides."""
    columns = list(published)
    con.execute("SET TimeZone = 'UTC'")
    con.register("graph_edges", graph_edges.select(["user_index", "subreddit_index", *columns]))
    con.register("subreddits", subreddits.select(["subreddit_index", "subreddit"]))
    con.register("knowledge", knowledge)
    con.sql("CREATE TEMP TABLE seen AS SELECT k.* FROM knowledge k JOIN subreddits USING (subreddit)").fetchall()
    newest = con.sql(f"SELECT max(last_utc), {month_number_sql('max(last_utc)')} FROM seen").fetchall()[0]
    attacker_row = " || '|' || ".join(["subreddit", *[f"({sql})::VARCHAR" for sql in published.values()]])
    published_row = " || '|' || ".join(["s.subreddit", *[f"e.{c}::VARCHAR" for c in columns]])
    attacker_sql, params = _bind(f"SELECT author, canonical_key, {attacker_row} AS pair FROM seen",
                                 {"newest": newest[0], "newest_month": newest[1]})
    con.sql(f"CREATE TEMP TABLE attacker_pairs AS {attacker_sql}", params=params).fetchall()
    con.sql(f"CREATE TEMP TABLE published_pairs AS SELECT e.user_index, {published_row} AS pair "
            "FROM graph_edges e JOIN subreddits s USING (subreddit_index)").fetchall()


def link_users(graph_edges: pa.Table, subreddits: pa.Table, knowledge: pa.Table,
               published: Mapping[str, str] = EDGE_COLUMNS_SQL) -> pa.Table:
    """Per published user (`user_index`): how many authors of `knowledge` share its signature and,
    when exactly one does, that author's name and canonical key (else null).

    `published` maps each published per-pair column of `graph_edges` to its SQL over the pair's
    aggregates: the attacker computes it from the dumps and matches it exactly. `subreddits`
    (index -> name) says which subreddits the graph kept; the attacker's pairs elsewhere are not
    part of anyone's signature. `{}` matches on the set of subreddits alone."""
    with duckdb.connect() as con:
        _signature_tables(con, graph_edges, subreddits, knowledge, published)
        return con.sql(
            """
            WITH authors AS (
                SELECT author, any_value(canonical_key) AS canonical_key, md5(string_agg(pair, '\n' ORDER BY pair)) AS signature
                FROM attacker_pairs GROUP BY author
            ),
            by_signature AS (
                SELECT signature, count(*) AS candidates, min(author) AS author, min(canonical_key) AS canonical_key
                FROM authors GROUP BY signature
            ),
            users AS (
                SELECT user_index, md5(string_agg(pair, '\n' ORDER BY pair)) AS signature FROM published_pairs GROUP BY user_index
            )
            SELECT u.user_index, coalesce(b.candidates, 0)::BIGINT AS candidates,
                   CASE WHEN b.candidates = 1 THEN b.author END AS author,
                   CASE WHEN b.candidates = 1 THEN b.canonical_key END AS canonical_key
            FROM users u LEFT JOIN by_signature b USING (signature)
            ORDER BY u.user_index
            """
        ).to_arrow_table()


def single_row_matches(graph_edges: pa.Table, subreddits: pa.Table, knowledge: pa.Table,
                       published: Mapping[str, str] = EDGE_COLUMNS_SQL) -> tuple[int, int, int]:
    """The attack one published row at a time (the attacker knows one of a user's subreddits, or
    matches rows without assembling signatures): (rows, rows that exactly one author's pair
    matches, users with at least one such row)."""
    with duckdb.connect() as con:
        _signature_tables(con, graph_edges, subreddits, knowledge, published)
        rows, unique_rows, users = con.sql(
            """
            WITH counts AS (SELECT pair, count(*) AS authors FROM attacker_pairs GROUP BY pair)
            SELECT count(*), count(*) FILTER (WHERE authors = 1), count(DISTINCT user_index) FILTER (WHERE authors = 1)
            FROM published_pairs LEFT JOIN counts USING (pair)
            """
        ).fetchall()[0]
    return int(rows), int(unique_rows), int(users)


def _bind(sql: str, values: Mapping[str, object]) -> tuple[str, dict]:
    """DuckDB refuses named parameters a query does not use: pass only those it names."""
    used = {name for name in re.findall(r"\$(\w+)", sql)}
    return sql, {name: value for name, value in values.items() if name in used}


def measure_linkage(graph_edges: pa.Table, subreddits: pa.Table, users: pa.Table, knowledge: pa.Table,
                    key: bytes | None = None, published: Mapping[str, str] = EDGE_COLUMNS_SQL) -> LinkageResult:
    """Run the attack and, given the pseudonym key, check each name it finds against the user's
    pseudonym (`users`: user_index -> user_id)."""
    links = link_users(graph_edges, subreddits, knowledge, published)
    linked = [r for r in links.to_pylist() if r["author"] is not None]
    correct = None
    if key is not None:
        user_ids = dict(zip(users["user_index"].to_pylist(), users["user_id"].to_pylist()))
        guesses = pseudonymize([r["canonical_key"] for r in linked], key)
        correct = sum(user_ids.get(r["user_index"]) == guess for r, guess in zip(linked, guesses))
    candidates = sorted(links["candidates"].to_pylist())
    rows, unique_rows, named_by_row = single_row_matches(graph_edges, subreddits, knowledge, published)
    return LinkageResult(users=links.num_rows, linked=len(linked), correct=correct,
                         median_candidates=float(candidates[len(candidates) // 2]) if candidates else 0.0,
                         published_columns=list(published), rows=rows, rows_matching_one_author=unique_rows,
                         users_named_by_one_row=named_by_row)
