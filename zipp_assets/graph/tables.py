"""Global graph tables over every ingested month: users, subreddits and featured, split edges.

DuckDB does the aggregation out of core (spilling under a memory limit), so a graph of tens of
millions of edges is built within a few GB. Users are pseudonymised here; no username leaves.
Activity is published coarse (docs/privacy.md): counts and scores in powers of two, times in whole
months. Exact counts or times, matched against the public dumps, name the person behind a pseudonym.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from zipp_assets import lake
from zipp_assets.graph.user_keys import canonical_key_sql, create_pseudonym_table, create_user_aliases
from zipp_assets.reddit.ingest import dataset_name, open_ingested

USERS_SCHEMA = pa.schema(
    [
        ("user_index", pa.int64()),
        ("user_id", pa.string()),
        ("subreddit_count", pa.int64()),
        ("comments_bin", pa.int64()),
        ("submissions_bin", pa.int64()),
        ("score_bin", pa.int64()),
        ("first_utc", pa.timestamp("us", tz="UTC")),
        ("last_utc", pa.timestamp("us", tz="UTC")),
        ("active_months", pa.int64()),
    ]
)
SUBREDDITS_SCHEMA = pa.schema(
    [
        ("subreddit_index", pa.int64()),
        ("subreddit", pa.string()),
        ("user_count", pa.int64()),
        ("comment_count", pa.int64()),
        ("submission_count", pa.int64()),
    ]
)
GRAPH_EDGES_SCHEMA = pa.schema(
    [
        ("user_index", pa.int64()),
        ("subreddit_index", pa.int64()),
        ("comments_bin", pa.int64()),
        ("submissions_bin", pa.int64()),
        ("score_bin", pa.int64()),
        ("active_months", pa.int64()),
        ("recency_months", pa.int64()),
        ("span_months", pa.int64()),
        ("split", pa.string()),
    ]
)
EDGE_FEATURES = ["comments_bin", "submissions_bin", "score_bin", "recency_months", "span_months"]


def count_bin_sql(column: str) -> str:
    """Power-of-two bin of a count: 0 -> 0, 1-2 -> 1, 3-6 -> 2, 7-14 -> 3, ... (floor(log2(1 + n)))."""
    return f"floor(log2(1 + {column}))::BIGINT"


def score_bin_sql(column: str) -> str:
    """The signed power-of-two bin of a score sum: sign(s) * floor(log2(1 + |s|))."""
    return f"(sign({column}) * floor(log2(1 + abs({column}))))::BIGINT"


def bin_floor(bins):
    """The smallest count (or, signed, score) each bin holds: 2^|b| - 1, with the bin's sign."""
    bins = np.asarray(bins, dtype=np.float64)
    return np.sign(bins) * (np.exp2(np.abs(bins)) - 1)


def describe_count_bin(bin_number: int) -> str:
    """The range of counts a bin holds, for text: 0 -> '0', 1 -> '1-2', 3 -> '7-14'."""
    low, high = 2**bin_number - 1, 2 ** (bin_number + 1) - 2
    return str(low) if low == high else f"{low}-{high}"


def month_number_sql(column: str) -> str:
    """Months since year 0 of a UTC timestamp (the connection's TimeZone must be UTC)."""
    return f"(12 * year({column}) + month({column}) - 1)"


# Each published per-pair column, from the pair's aggregates (comment_count, submission_count,
# score_sum, first_utc, last_utc, active_months) and $newest_month (the graph's newest month, as
# month_number_sql). The linkage attack (privacy/linkage.py) computes them from the public dumps
# with these same expressions: it measures what the published columns give away.
EDGE_COLUMNS_SQL = {
    "comments_bin": count_bin_sql("comment_count"),
    "submissions_bin": count_bin_sql("submission_count"),
    "score_bin": score_bin_sql("score_sum"),
    "active_months": "active_months",
    "recency_months": f"($newest_month - {month_number_sql('last_utc')})::BIGINT",
    "span_months": f"({month_number_sql('last_utc')} - {month_number_sql('first_utc')})::BIGINT",
}
SPLITS = ("train", "val", "test")
GRAPH_TABLES = ["users", "subreddits", "graph_edges"]  # written together under one build id


@dataclass(frozen=True)
class GraphConfig:
    min_user_interactions: int = 3  # comments + submissions over all months
    min_user_subreddits: int = 1
    min_subreddit_users: int = 3
    exclude_nsfw_only_users: bool = True  # users all of whose submissions are NSFW
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    min_edges_for_holdout: int = 4  # users with fewer edges keep all of them for training
    memory_limit: str = "2GB"
    # Users are taken in buckets of about this many monthly rows, each aggregated, filtered and
    # sorted on its own (build_graph_tables): 16M rows fit the 2GB memory limit without spilling
    # much (one bucket up to about 10M edges). With more memory, larger buckets.
    rows_per_bucket: int = 16_000_000

    def __post_init__(self) -> None:
        if not (0 <= self.val_fraction < 1 and 0 <= self.test_fraction < 1 and self.val_fraction + self.test_fraction < 1):
            raise ValueError("val_fraction and test_fraction must be in [0, 1) and sum below 1")
        if self.rows_per_bucket < 1:
            raise ValueError("rows_per_bucket must be at least 1")
        if self.min_edges_for_holdout < 2:
            raise ValueError("min_edges_for_holdout must be at least 2 (a user keeps one training edge)")


@dataclass
class GraphReport:
    months: list[str]
    users: int
    subreddits: int
    edges: int
    split_counts: dict[str, int]
    users_dropped: int
    seconds: float
    aliased_keys: int = 0  # author-keyed users merged into their author_fullname
    ambiguous_keys: int = 0
    versions: dict[str, int] = field(default_factory=dict)  # table -> the Delta version written
    build_id: str = ""  # shared by the three tables
    buckets: int = 1  # of users, built one after another
    step_seconds: dict[str, float] = field(default_factory=dict)  # wall seconds of each step, in order

    def as_dict(self) -> dict:
        return asdict(self)


def monthly_edges(lake_dir: Path) -> tuple[lake.TableSnapshot, list[str]]:
    """The monthly edges at their current version and the months they cover. A month that is
    ingested (comments and submissions) but has no edges is an error: the graph would silently
    leave it out."""
    edges = lake.open_table(lake_dir, "reddit_user_subreddit_edges")
    months = sorted(p["month"] for p in edges.partitions())
    ingested = [open_ingested(lake_dir, kind) for kind in ("comments", "submissions")
                if lake.table_exists(lake_dir, dataset_name(kind))]
    candidates = {p["month"] for table in ingested for p in table.partitions()}
    missing = sorted(m for m in candidates if len(ingested) == 2 and all(t.has_partition({"month": m}) for t in ingested)
                     and not edges.has_partition({"month": m}))
    if missing:
        raise lake.PartitionNotFound(f"months {', '.join(missing)} are ingested but have no reddit_user_subreddit_edges "
                                     f"(version {edges.version}): materialize those edges first")
    if not months:
        raise FileNotFoundError(f"reddit_user_subreddit_edges (version {edges.version}) has no rows: ingest some months first")
    return edges, months


def build_graph_tables(lake_dir: Path, key: bytes, config: GraphConfig = GraphConfig()) -> GraphReport:
    """Write `users`, `subreddits` and `graph_edges`, under one build id, from every month of edges.

    Every step but the subreddit filter is per user, so the build runs over buckets of users of about
    `rows_per_bucket` monthly rows each: each bucket's aggregations fit DuckDB's memory limit, and the
    time grows with the edges rather than with how far one query over the whole graph spills (it grew
    1.5x per edge from 10M to 40M edges in one query). Two passes over the buckets, with scratch
    Parquet between them: the first buckets users by a hash of their key (pairs, active months, the
    user filters, pseudonyms); the second by ranges of their pseudonyms, which is `user_index` order
    (the subreddit filter's second round, the indexes, the edges and the users, written in order).
    """
    started = time.perf_counter()
    step_seconds: dict[str, float] = {}
    last_lap = [started]

    def lap(step: str) -> None:
        """Record the seconds since the previous step ended as `step`'s."""
        now = time.perf_counter()
        step_seconds[step] = step_seconds.get(step, 0.0) + now - last_lap[0]
        last_lap[0] = now

    edges_by_month, months = monthly_edges(lake_dir)
    monthly = edges_by_month.to_dataset()
    buckets = max(1, -(-monthly.count_rows() // config.rows_per_bucket))
    filters = {"min_inter": config.min_user_interactions, "min_subs": config.min_user_subreddits}
    # Scratch Parquet between the passes (about 14 GB at the full size) in a locked scratch folder:
    # one that a killed build leaves is removed by the next writer's sweep.
    with lake.spilling_duckdb(config.memory_limit) as con, lake.build(lake_dir) as together, lake.Scratch() as scratch:
        con.execute("SET preserve_insertion_order = false")
        con.execute("SET TimeZone = 'UTC'")  # months of UTC timestamps, whatever the machine's zone
        con.register("monthly_edges", monthly)
        con.register("all_submissions", open_ingested(lake_dir, "submissions").to_dataset())
        aliases = create_user_aliases(con, lake_dir)
        submitter, submitter_join = canonical_key_sql("sub.user_key")
        con.sql(
            f"CREATE TEMP TABLE nsfw_only AS SELECT {submitter} AS user_key FROM all_submissions sub {submitter_join} "
            "WHERE sub.user_key IS NOT NULL GROUP BY 1 HAVING bool_and(coalesce(sub.over_18, false))"
            if config.exclude_nsfw_only_users else "CREATE TEMP TABLE nsfw_only (user_key VARCHAR)"
        ).fetchall()
        lap("aliases")
        # One person, one user: author-keyed months are mapped onto the person's author_fullname first,
        # so a person is one user in one bucket and months are counted as months, not rows per key.
        canonical, join = canonical_key_sql("e.user_key")
        row_columns = "subreddit, month, comment_count, submission_count, score_sum, first_utc, last_utc"
        canonical_rows = (f"SELECT {canonical} AS user_key, {', '.join('e.' + c for c in row_columns.split(', '))} "
                          f"FROM monthly_edges e {join}" if aliases["aliased_keys"]
                          else f"SELECT user_key, {row_columns} FROM monthly_edges")
        if buckets > 1:
            con.sql(f"COPY (SELECT *, hash(user_key) % {buckets} AS bucket FROM ({canonical_rows})) "
                    f"TO {_sql_text(scratch / 'rows')} (FORMAT parquet, PARTITION_BY (bucket))")
        lap("partition")
        con.sql("CREATE TEMP TABLE subreddit_users (subreddit VARCHAR, users BIGINT)")
        all_users = 0
        for bucket in range(buckets):
            if buckets == 1:
                rows = f"({canonical_rows})"
            elif (scratch / "rows" / f"bucket={bucket}").is_dir():
                rows = (f"(SELECT user_key, {row_columns} FROM read_parquet("
                        f"{_sql_text(scratch / 'rows' / f'bucket={bucket}' / '*.parquet')}, hive_partitioning = false))")
            else:
                continue  # no user hashed here
            # A month holds one row per (key, subreddit), so without aliases a pair's rows are its months;
            # with aliases two keys can meet in one month, so their rows are merged per month first.
            # (count(DISTINCT month) per pair grew faster than the edges.)
            source = (f"(SELECT user_key, subreddit, month, sum(comment_count) AS comment_count, "
                      f"sum(submission_count) AS submission_count, sum(score_sum) AS score_sum, "
                      f"min(first_utc) AS first_utc, max(last_utc) AS last_utc FROM {rows} GROUP BY 1, 2, 3)"
                      if aliases["aliased_keys"] else rows)
            con.sql(
                f"""
                CREATE OR REPLACE TEMP TABLE pairs AS
                SELECT user_key, subreddit, sum(comment_count)::BIGINT AS comment_count,
                       sum(submission_count)::BIGINT AS submission_count, sum(score_sum)::BIGINT AS score_sum,
                       min(first_utc) AS first_utc, max(last_utc) AS last_utc, count(*)::BIGINT AS active_months
                FROM {source} GROUP BY user_key, subreddit
                """
            ).fetchall()
            con.sql(f"CREATE OR REPLACE TEMP TABLE user_months AS SELECT user_key, "
                    f"count(DISTINCT month)::BIGINT AS active_months FROM {rows} GROUP BY user_key").fetchall()
            all_users += con.sql("SELECT count(DISTINCT user_key) FROM pairs").fetchall()[0][0]
            lap("pairs")
            # The users' filter, then (below, over every bucket) subreddits by the users kept, then
            # users again by what is left.
            con.sql(
                """
                CREATE OR REPLACE TEMP TABLE step1 AS
                WITH users AS (
                    SELECT user_key FROM pairs GROUP BY user_key
                    HAVING sum(comment_count + submission_count) >= $min_inter AND count(*) >= $min_subs
                )
                SELECT p.* FROM pairs p JOIN users USING (user_key) WHERE user_key NOT IN (SELECT user_key FROM nsfw_only)
                """,
                params=filters,
            ).fetchall()
            con.sql("INSERT INTO subreddit_users SELECT subreddit, count(*) FROM step1 GROUP BY subreddit").fetchall()
            lap("filters")
            create_pseudonym_table(con, "SELECT DISTINCT user_key FROM step1", key, "pseudonyms")
            lap("pseudonyms")
            # Pseudonyms are uniform hex: ranges of their first 32 bits are ranges of user_id order.
            user_range = f"(('0x' || substr(ps.user_id, 3, 8))::BIGINT * {buckets}) // 4294967296"
            con.sql(
                f"""
                COPY (SELECT ps.user_id, p.subreddit, p.comment_count, p.submission_count, p.score_sum, p.first_utc,
                             p.last_utc, p.active_months, m.active_months AS user_active_months, {user_range} AS part
                      FROM step1 p JOIN pseudonyms ps USING (user_key) JOIN user_months m USING (user_key))
                TO {_sql_text(scratch / 'users')} (FORMAT parquet, PARTITION_BY (part), APPEND)
                """
            )
            lap("partition")
        for table in ("pairs", "user_months", "step1", "pseudonyms"):
            con.execute(f"DROP TABLE IF EXISTS {table}")
        con.sql("CREATE TEMP TABLE subs AS SELECT subreddit FROM subreddit_users GROUP BY subreddit "
                "HAVING sum(users) >= $min_sub_users", params={"min_sub_users": config.min_subreddit_users}).fetchall()
        parts = [part for part in range(buckets) if (scratch / "users" / f"part={part}").is_dir()]

        def kept_rows(part: int) -> str:
            """The pairs of one part that pass the subreddit filter and then the users' filter again."""
            return f"""
                WITH step2 AS (
                    SELECT s.* FROM read_parquet({_sql_text(scratch / 'users' / f'part={part}' / '*.parquet')},
                                                 hive_partitioning = false) s
                    JOIN subs USING (subreddit)
                ),
                users2 AS (
                    SELECT user_id FROM step2 GROUP BY user_id
                    HAVING sum(comment_count + submission_count) >= $min_inter AND count(*) >= $min_subs
                )
                SELECT s.* FROM step2 s JOIN users2 USING (user_id)
                """

        # The subreddits' indexes need every part's users filtered first: this pass keeps only which
        # subreddits still have a user (and the newest month); the next filters each part again and
        # builds its rows. Filtering twice costs less than keeping every pair in DuckDB, which spills.
        con.sql("CREATE TEMP TABLE kept_subreddits (subreddit VARCHAR, last_utc TIMESTAMPTZ)")
        for part in parts:
            con.sql(f"INSERT INTO kept_subreddits SELECT subreddit, max(last_utc) FROM ({kept_rows(part)}) "
                    "GROUP BY subreddit", params=filters).fetchall()
        lap("filters")
        con.sql(
            """
            CREATE TEMP TABLE subreddit_index AS
            SELECT subreddit, (row_number() OVER (ORDER BY subreddit) - 1)::BIGINT AS subreddit_index
            FROM (SELECT DISTINCT subreddit FROM kept_subreddits)
            """
        ).fetchall()
        newest_month = con.sql(f"SELECT {month_number_sql('max(last_utc)')} FROM kept_subreddits").fetchall()[0][0]
        con.sql("CREATE TEMP TABLE subreddit_totals (subreddit VARCHAR, users BIGINT, comments BIGINT, submissions BIGINT)")
        lap("indexes")
        published = ",\n                   ".join(f"{sql} AS {name}" for name, sql in EDGE_COLUMNS_SQL.items())
        # The held-out split is a property of each (user, subreddit) pair: a hash bucket, so the
        # same links stay held out when the graph is rebuilt with more months. Each user keeps at
        # least its highest-hash link (the least likely to be held out) for training.
        edge_query = f"""
            WITH hashed AS (
                SELECT u.user_index, s.subreddit_index, p.comment_count, p.submission_count, p.score_sum,
                       p.active_months, p.first_utc, p.last_utc, md5(u.user_id || '/' || p.subreddit) AS link_hash
                FROM kept p JOIN user_index u USING (user_id) JOIN subreddit_index s USING (subreddit)
            ),
            featured AS (
                -- the user's highest hash by max() over the partition, not a row_number() ordered by hash:
                -- the same partition for both windows saves a sort of every edge (pairs are distinct,
                -- so their hashes are too)
                SELECT *, ('0x' || substr(link_hash, 1, 8))::BIGINT / 4294967296.0 AS bucket,
                       count(*) OVER (PARTITION BY user_index) AS degree,
                       max(link_hash) OVER (PARTITION BY user_index) AS highest_hash
                FROM hashed
            )
            SELECT user_index, subreddit_index,
                   {published},
                   CASE
                       WHEN degree < {config.min_edges_for_holdout} OR link_hash = highest_hash THEN 'train'
                       WHEN bucket < {config.test_fraction} THEN 'test'
                       WHEN bucket < {config.test_fraction + config.val_fraction} THEN 'val'
                       ELSE 'train'
                   END AS split
            FROM featured
            ORDER BY user_index, subreddit_index
            """
        # First and last activity only to the month (its first day, UTC), totals in power-of-two
        # bins: exact times or totals, joined with the public dumps, would name the person.
        users_query = f"""
            SELECT u.user_index, u.user_id, count(*)::BIGINT AS subreddit_count,
                   {count_bin_sql('sum(p.comment_count)')} AS comments_bin,
                   {count_bin_sql('sum(p.submission_count)')} AS submissions_bin,
                   {score_bin_sql('sum(p.score_sum)')} AS score_bin, date_trunc('month', min(p.first_utc)) AS first_utc,
                   date_trunc('month', max(p.last_utc)) AS last_utc,
                   any_value(p.user_active_months) AS active_months
            FROM kept p JOIN user_index u USING (user_id)
            GROUP BY u.user_index, u.user_id ORDER BY u.user_index
            """
        # Parts are ranges of user_id in order and each part's rows are ordered by user, so the parts,
        # one after another, give the whole graph's rows in its order.
        split_counts = dict.fromkeys(SPLITS, 0)
        user_parts = []
        first_index = 0
        with lake.RotatingParquetWriter(together.partition("graph_edges"), GRAPH_EDGES_SCHEMA) as writer:
            for part in parts:
                con.sql(f"CREATE OR REPLACE TEMP TABLE kept AS {kept_rows(part)}", params=filters).fetchall()
                lap("filters")
                con.sql(
                    """
                    CREATE OR REPLACE TEMP TABLE user_index AS
                    SELECT user_id, (row_number() OVER (ORDER BY user_id) - 1 + $first_index)::BIGINT AS user_index
                    FROM (SELECT DISTINCT user_id FROM kept)
                    """,
                    params={"first_index": first_index},
                ).fetchall()
                lap("indexes")
                edges = con.sql(edge_query, params={"newest_month": newest_month})
                for batch in edges.to_arrow_reader(500_000):
                    writer.write(pa.Table.from_batches([batch]))
                    for value, count in zip(*_value_counts(batch.column("split"))):
                        split_counts[value] += count
                lap("edges")
                user_parts.append(con.sql(users_query).to_arrow_table().cast(USERS_SCHEMA))
                first_index += user_parts[-1].num_rows
                con.sql("INSERT INTO subreddit_totals SELECT subreddit, count(*), sum(comment_count), "
                        "sum(submission_count) FROM kept GROUP BY subreddit").fetchall()
                lap("users")
        users = pa.concat_tables(user_parts) if user_parts else USERS_SCHEMA.empty_table()
        subreddits = con.sql(
            """
            SELECT s.subreddit_index, s.subreddit, sum(t.users)::BIGINT AS user_count,
                   sum(t.comments)::BIGINT AS comment_count, sum(t.submissions)::BIGINT AS submission_count
            FROM subreddit_totals t JOIN subreddit_index s USING (subreddit)
            GROUP BY s.subreddit_index, s.subreddit ORDER BY s.subreddit_index
            """
        ).to_arrow_table()
        lap("subreddits")
        for dataset, table, schema in (("users", users, USERS_SCHEMA), ("subreddits", subreddits, SUBREDDITS_SCHEMA)):
            lake.write_table(together.partition(dataset), table.cast(schema), schema)
        lap("write")
    lap("commit")
    # Committed: three commits under one build id (readers refuse a set whose ids differ).
    return GraphReport(
        months=months,
        users=users.num_rows,
        subreddits=subreddits.num_rows,
        edges=writer.rows_written,
        split_counts=split_counts,
        users_dropped=all_users - users.num_rows,
        seconds=time.perf_counter() - started,
        aliased_keys=aliases["aliased_keys"],
        ambiguous_keys=aliases["ambiguous_keys"],
        versions=together.versions,
        build_id=lake.format_build(together.build_id),
        buckets=buckets,
        step_seconds={name: round(seconds, 3) for name, seconds in step_seconds.items()},
    )


def _sql_text(path: Path) -> str:
    """A path as an SQL string literal."""
    return "'" + str(path).replace("'", "''") + "'"


def _value_counts(column: pa.ChunkedArray) -> tuple[list, list]:
    counts = column.value_counts()
    return counts.field("values").to_pylist(), counts.field("counts").to_pylist()
