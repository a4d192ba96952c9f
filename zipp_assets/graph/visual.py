"""Users' visual behaviour: embeddings of the images they post, and a visual profile per user.

`embed_images` is incremental and resumable: it embeds only images (by URL key) not yet embedded
by the same encoder and not already recorded as failed, in chunks that are each appended to the
table in one commit. A killed run loses at most the chunk in flight; a re-run carries on.

A visual profile is indexed by the graph's user_index, so `user_visual_profiles` is written under
the build id of the graph tables it was computed from; readers refuse profiles of another build.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from zipp_assets import lake
from zipp_assets.graph.images import ImageLoader, ImageLoadError
from zipp_assets.graph.tables import GRAPH_TABLES
from zipp_assets.graph.user_keys import canonical_key_sql, create_pseudonym_table, create_user_aliases
from zipp_assets.imaging.encoders import ImageEncoder, l2_normalize

EMBEDDINGS = "image_embeddings"
FAILURES = "image_failures"
PROFILES = "user_visual_profiles"
FAILURES_SCHEMA = pa.schema([("url_key", pa.string()), ("url", pa.string()), ("reason", pa.string()),
                             ("attempted_utc", pa.timestamp("us", tz="UTC"))])


def encoder_slug(name: str) -> str:
    """A folder-safe, unique name for an encoder (its name may hold a checkpoint path)."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:60]
    return f"{readable}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def embeddings_schema(dim: int) -> pa.Schema:
    return pa.schema([("url_key", pa.string()), ("embedding", pa.list_(pa.float32(), dim))])


@dataclass
class EmbedReport:
    encoder: str
    candidates: int = 0
    already_embedded: int = 0
    known_failures: int = 0
    embedded: int = 0
    failed: int = 0
    seconds: float = 0.0
    failure_reasons: dict[str, int] = field(default_factory=dict)


def embeddings_of(lake_dir: Path, encoder_name: str, required: bool = True):
    """The image embeddings of one encoder (an Arrow dataset of the current version), or None when
    that encoder has embedded nothing and `required` is False."""
    partition = {"encoder": encoder_slug(encoder_name)}
    if not required and not lake.partition_exists(lake_dir, EMBEDDINGS, partition):
        return None
    if not lake.partition_exists(lake_dir, EMBEDDINGS, partition):
        raise FileNotFoundError(f"no image embeddings for encoder {encoder_name!r} in the lake: materialize "
                                "image_embeddings first")
    return lake.open_table(lake_dir, EMBEDDINGS).to_dataset([partition])


def _pending_images(lake_dir: Path, encoder_name: str, retry_failed: bool) -> tuple[list[tuple[str, str]], int, int, int]:
    posts = lake.open_table(lake_dir, "reddit_image_posts").to_dataset()
    done = embeddings_of(lake_dir, encoder_name, required=False)
    failed = lake.open_table(lake_dir, FAILURES).to_dataset() if lake.table_exists(lake_dir, FAILURES) else None
    with duckdb.connect() as con:
        con.register("posts", posts)
        con.sql(
            "CREATE TEMP TABLE candidates AS SELECT url_key, any_value(image_url) AS url FROM posts "
            "WHERE NOT over_18 GROUP BY url_key"
        ).fetchall()
        total = con.sql("SELECT count(*) FROM candidates").fetchall()[0][0]
        exclude, embedded, known_failed = [], 0, 0
        if done is not None:
            con.register("done", done)
            embedded = con.sql("SELECT count(DISTINCT url_key) FROM done WHERE url_key IN (SELECT url_key FROM candidates)").fetchall()[0][0]
            exclude.append("SELECT url_key FROM done")
        if failed is not None and not retry_failed:
            con.register("failed", failed)
            known_failed = con.sql("SELECT count(DISTINCT url_key) FROM failed WHERE url_key IN (SELECT url_key FROM candidates)").fetchall()[0][0]
            exclude.append("SELECT url_key FROM failed")
        where = " AND ".join(f"url_key NOT IN ({q})" for q in exclude) or "true"
        pending = con.sql(f"SELECT url_key, url FROM candidates WHERE {where} ORDER BY url_key").fetchall()
    return pending, total, embedded, known_failed


def embed_images(
    lake_dir: Path,
    loader: ImageLoader,
    encoder: ImageEncoder,
    chunk_size: int = 1024,
    load_workers: int = 8,
    retry_failed: bool = False,
    progress: Callable[[str], None] | None = None,
) -> EmbedReport:
    """Embed every not-yet-embedded, non-NSFW image of `reddit_image_posts` with `encoder`."""
    started = time.perf_counter()
    partition = {"encoder": encoder_slug(encoder.name)}
    pending, total, embedded, known_failed = _pending_images(lake_dir, encoder.name, retry_failed)
    report = EmbedReport(encoder=encoder.name, candidates=total, already_embedded=embedded, known_failures=known_failed)
    say = progress or (lambda _msg: None)
    say(f"{len(pending):,} images to embed with {encoder.name} ({embedded:,} done before, {known_failed:,} known failures)")
    schema = embeddings_schema(encoder.dim)

    def load(item: tuple[str, str]):
        try:
            return item, loader.load(item[1]), None
        except ImageLoadError as exc:
            return item, None, str(exc)

    with concurrent.futures.ThreadPoolExecutor(max_workers=load_workers) as pool:
        for start in range(0, len(pending), chunk_size):
            chunk = pending[start : start + chunk_size]
            keys, images, failures = [], [], []
            for (url_key, url), image, reason in pool.map(load, chunk):
                if image is None:
                    failures.append((url_key, url, reason))
                else:
                    keys.append(url_key)
                    images.append(image)
            if images:
                vectors = encoder.encode(images)
                lake.append_rows(lake_dir, EMBEDDINGS, pa.table({"url_key": keys, "embedding": pa.FixedSizeListArray.from_arrays(
                    pa.array(vectors.reshape(-1), pa.float32()), encoder.dim)}, schema=schema), partition)
            if failures:
                now = datetime.now(timezone.utc)
                lake.append_rows(lake_dir, FAILURES, pa.table({
                    "url_key": [f[0] for f in failures], "url": [f[1] for f in failures],
                    "reason": [f[2] for f in failures], "attempted_utc": [now] * len(failures),
                }, schema=FAILURES_SCHEMA))
                for _, _, reason in failures:
                    head = reason.split(":")[0]
                    report.failure_reasons[head] = report.failure_reasons.get(head, 0) + 1
            report.embedded += len(images)
            report.failed += len(failures)
            say(f"embedded {report.embedded:,} / {len(pending):,} ({report.failed:,} failed)")
    report.seconds = time.perf_counter() - started
    return report


@dataclass
class ProfileReport:
    users: int
    users_with_heldout: int
    train_images: int
    heldout_images: int
    seconds: float


def build_visual_profiles(
    lake_dir: Path, encoder_name: str, key: bytes, heldout_fraction: float = 0.2, min_images_for_heldout: int = 2
) -> ProfileReport:
    """Per graph user: the renormalised mean of its training images' embeddings, and held-out images.

    A profile is what ImageAlign trains on, so it may only use what training may see: images the
    user posted in subreddits whose (user, subreddit) link is in the training split. An image also
    posted in a held-out (validation or test) subreddit, or in one outside the graph, is never in
    the profile; it joins the held-out images that score visual retrieval. Of the rest, a stable
    hash bucket per user and image holds out `heldout_fraction` more, each user with enough images
    keeping at least one for its profile. A user whose images all lie outside its training links
    has no profile (n_train_images 0), only held-out images.
    """
    started = time.perf_counter()
    embedded = embeddings_of(lake_dir, encoder_name)
    graph = lake.open_tables(lake_dir, GRAPH_TABLES)
    users = graph["users"].read(columns=["user_index", "user_id"])
    subreddits = graph["subreddits"].read(columns=["subreddit_index", "subreddit"])
    with duckdb.connect() as con:
        create_user_aliases(con, lake_dir)
        canonical, join = canonical_key_sql("p.user_key")
        con.register("image_posts", lake.open_table(lake_dir, "reddit_image_posts").to_dataset())
        con.register("graph_edges", graph["graph_edges"].to_dataset())
        con.register("embedded", embedded)
        con.sql(
            f"CREATE TEMP TABLE posts AS SELECT DISTINCT {canonical} AS user_key, p.url_key, p.subreddit "
            f"FROM image_posts p {join} WHERE NOT p.over_18"
        ).fetchall()
        create_pseudonym_table(con, "SELECT DISTINCT user_key FROM posts", key, "pseudonyms")
        con.register("graph_users", users)
        con.register("graph_subreddits", subreddits)
        rows = con.sql(
            f"""
            WITH images AS (
                SELECT g.user_index, ps.user_id, p.url_key,
                       bool_and(coalesce(e.split = 'train', false)) AS trainable
                FROM posts p JOIN pseudonyms ps USING (user_key) JOIN graph_users g USING (user_id)
                LEFT JOIN graph_subreddits s ON s.subreddit = p.subreddit
                LEFT JOIN graph_edges e
                       ON e.user_index = g.user_index AND e.subreddit_index = s.subreddit_index
                GROUP BY g.user_index, ps.user_id, p.url_key
            ),
            joined AS (
                SELECT i.user_index, i.user_id, i.url_key, i.trainable, emb.embedding,
                       ('0x' || substr(md5(i.user_id || '/' || i.url_key), 1, 8))::BIGINT / 4294967296.0 AS bucket,
                       count(*) FILTER (WHERE i.trainable) OVER (PARTITION BY i.user_id) AS n,
                       row_number() OVER (PARTITION BY i.user_id, i.trainable
                                          ORDER BY md5(i.user_id || '/' || i.url_key) DESC) AS rank
                FROM images i JOIN embedded emb USING (url_key)
            )
            SELECT user_index, user_id, url_key, embedding,
                   (NOT trainable OR (n >= {min_images_for_heldout} AND rank > 1 AND bucket < {heldout_fraction})) AS heldout
            FROM joined ORDER BY user_index, url_key
            """
        ).to_arrow_table()
    user_index = rows["user_index"].to_numpy()
    heldout = rows["heldout"].to_numpy(zero_copy_only=False)
    vectors = lake.vector_matrix(rows["embedding"])
    dim = vectors.shape[1]
    url_keys = rows["url_key"].to_pylist()
    ids = dict(zip(users["user_index"].to_pylist(), users["user_id"].to_pylist()))
    out = {"user_index": [], "user_id": [], "n_train_images": [], "n_heldout_images": [], "profile": [], "heldout_url_keys": []}
    boundaries = np.flatnonzero(np.diff(user_index)) + 1
    for segment in np.split(np.arange(rows.num_rows), boundaries) if rows.num_rows else []:
        train = segment[~heldout[segment]]
        held = segment[heldout[segment]]
        u = int(user_index[segment[0]])
        out["user_index"].append(u)
        out["user_id"].append(ids[u])
        out["n_train_images"].append(len(train))
        out["n_heldout_images"].append(len(held))
        # No training image, no profile: a zero row that the encoder's loader treats as absent.
        out["profile"].append(l2_normalize(vectors[train].mean(axis=0, keepdims=True))[0] if len(train)
                              else np.zeros(dim, np.float32))
        out["heldout_url_keys"].append([url_keys[i] for i in held])
    schema = pa.schema([("user_index", pa.int64()), ("user_id", pa.string()), ("n_train_images", pa.int64()),
                        ("n_heldout_images", pa.int64()), ("profile", pa.list_(pa.float32(), dim or 1)),
                        ("heldout_url_keys", pa.list_(pa.string()))])
    profiles = np.stack(out["profile"]) if out["profile"] else np.zeros((0, dim or 1), np.float32)
    table = pa.table({**{k: v for k, v in out.items() if k != "profile"},
                      "profile": pa.FixedSizeListArray.from_arrays(pa.array(profiles.reshape(-1), pa.float32()), dim or 1)})
    with lake.atomic_partition(lake_dir, PROFILES, {"encoder": encoder_slug(encoder_name)},
                               build_id=graph["users"].build_id()) as folder:
        lake.write_table(folder, table.select(schema.names), schema)
    return ProfileReport(
        users=int(sum(1 for n in out["n_train_images"] if n)),
        users_with_heldout=int(sum(1 for n in out["n_heldout_images"] if n)),
        train_images=int(sum(out["n_train_images"])),
        heldout_images=int(sum(out["n_heldout_images"])),
        seconds=time.perf_counter() - started,
    )
