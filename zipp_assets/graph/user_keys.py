"""One person, one user: the canonical key of every ingested user key, and its pseudonym.

Ingestion keys a user by `author_fullname` where a month's dump carries it and by `author` before
(Reddit dumps gained `author_fullname` in 2018). The same person therefore appears under two keys
across that boundary. Months that carry both fields give the mapping author -> fullname; every
graph-side table maps its keys through it before grouping, so the person is one user everywhere.

The canonical key is the fullname, so a person's pseudonym is stable from the first month that
carries their fullname on; months backfilled later map onto it. (The one change is at that first
month: a graph built only from older months keyed the person by name.)

Reddit usernames are never reused, so one author has at most one fullname; an author seen with
several (which would mean corrupt dumps) is left unmapped and counted rather than merged wrongly.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa

from zipp_assets import lake
from zipp_assets.graph.pseudonyms import pseudonymize
from zipp_assets.reddit.ingest import dataset_name, open_ingested

ALIASES = "user_aliases"  # temp table: user_key (an author name) -> canonical_key (its fullname)


def ingested_authors(con: duckdb.DuckDBPyConnection, lake_dir: Path) -> str | None:
    """Register the ingested comments and submissions (those in the lake, each at its current
    version) on `con`; return a query of their (author, author_fullname, user_key) rows, or None
    when nothing is ingested."""
    parts = []
    for kind in ("comments", "submissions"):
        if lake.table_exists(lake_dir, dataset_name(kind)):
            con.register(f"ingested_{kind}", open_ingested(lake_dir, kind).to_dataset())
            parts.append(f"SELECT author, author_fullname, user_key FROM ingested_{kind}")
    return " UNION ALL ".join(parts) or None


def create_user_aliases(con: duckdb.DuckDBPyConnection, lake_dir: Path) -> dict[str, int]:
    """Create the temp table `user_aliases` on `con`; return how many keys it maps and how many it
    could not (authors seen with more than one fullname)."""
    authors = ingested_authors(con, lake_dir)
    if authors is None:
        con.sql(f"CREATE OR REPLACE TEMP TABLE {ALIASES} (user_key VARCHAR, canonical_key VARCHAR)")
        return {"aliased_keys": 0, "ambiguous_keys": 0}
    con.sql(
        f"""
        CREATE OR REPLACE TEMP TABLE alias_candidates AS
        WITH keys AS (SELECT * FROM ({authors}) WHERE author IS NOT NULL),
        named AS (SELECT DISTINCT author FROM keys WHERE author_fullname IS NULL AND user_key = author),
        both_keys AS (SELECT DISTINCT author, author_fullname FROM keys WHERE author_fullname IS NOT NULL)
        SELECT n.author AS user_key, min(b.author_fullname) AS canonical_key,
               count(DISTINCT b.author_fullname) AS fullnames
        FROM named n JOIN both_keys b USING (author)
        GROUP BY n.author
        """
    ).fetchall()
    con.sql(
        f"CREATE OR REPLACE TEMP TABLE {ALIASES} AS "
        "SELECT user_key, canonical_key FROM alias_candidates WHERE fullnames = 1"
    ).fetchall()
    ambiguous = con.sql("SELECT count(*) FROM alias_candidates WHERE fullnames > 1").fetchall()[0][0]
    aliased = con.sql(f"SELECT count(*) FROM {ALIASES}").fetchall()[0][0]
    con.sql("DROP TABLE alias_candidates")
    return {"aliased_keys": int(aliased), "ambiguous_keys": int(ambiguous)}


def canonical_key_sql(column: str, alias: str = "ua") -> tuple[str, str]:
    """(expression, join clause) mapping `column` to its canonical key through `user_aliases`."""
    return (f"coalesce({alias}.canonical_key, {column})",
            f"LEFT JOIN {ALIASES} {alias} ON {alias}.user_key = {column}")


def create_pseudonym_table(con: duckdb.DuckDBPyConnection, keys_query: str, key: bytes, table: str,
                           batch_rows: int = 1_000_000, params: dict | None = None) -> int:
    """Temp table `table`(user_key, user_id) for the distinct keys `keys_query` returns.

    Keys stream through Python one batch at a time and the pseudonyms collect as Arrow columns, so
    at the paper's 22M users this holds about 1 GB of Arrow strings, never 22M Python objects.
    """
    parts = []
    for batch in con.sql(keys_query, params=params or {}).to_arrow_reader(batch_rows):
        keys = batch.column(0)
        parts.append(pa.table({"user_key": keys, "user_id": pa.array(pseudonymize(keys.to_pylist(), key), pa.string())}))
    schema = pa.schema([("user_key", pa.string()), ("user_id", pa.string())])
    pseudonyms = pa.Table.from_batches([b for t in parts for b in t.cast(schema).to_batches()], schema=schema)
    con.register("_pseudonyms", pseudonyms)
    con.sql(f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT user_key, user_id FROM _pseudonyms").fetchall()
    con.unregister("_pseudonyms")
    return pseudonyms.num_rows


def user_ids_for_usernames(lake_dir: Path, usernames: list[str], key: bytes) -> dict[str, str]:
    """Reddit username -> the graph's pseudonym for that person, for usernames an outside file names
    (a benchmark's `reddit_username`). The canonical key is the author's fullname where any ingested
    month carries exactly one, else the name itself; usernames never seen in the dumps map to the
    pseudonym of the name, which simply matches no graph user."""
    wanted = sorted({u for u in usernames if u})
    if not wanted:
        return {}
    fullname: dict[str, str] = {}
    with duckdb.connect() as con:
        authors = ingested_authors(con, lake_dir)
        if authors is not None:
            con.register("wanted", pa.table({"author": wanted}))
            rows = con.sql(
                "SELECT author, min(author_fullname), count(DISTINCT author_fullname) "
                f"FROM ({authors}) JOIN wanted USING (author) "
                "WHERE author_fullname IS NOT NULL GROUP BY author"
            ).fetchall()
            fullname = {author: full for author, full, n in rows if n == 1}
    canonical = [fullname.get(u, u) for u in wanted]
    return dict(zip(wanted, pseudonymize(canonical, key)))
