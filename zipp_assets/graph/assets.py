"""Dagster wiring of the graph stage: global tables over every ingested month.

(No `from __future__ import annotations` here: Dagster reads the annotations at run time.)
"""

import dagster as dg
import duckdb

from zipp_assets import lake as lake_io
from zipp_assets.graph.images import ImageLoader, LoaderConfig
from zipp_assets.graph.pseudonyms import pseudonym_key
from zipp_assets.graph.tables import GraphConfig, build_graph_tables
from zipp_assets.graph.visual import PROFILES, build_visual_profiles, embed_images, encoder_slug
from zipp_assets.imaging.resources import ImageEncoderResource
from zipp_assets.k8s import pod_tags
from zipp_assets.metadata import lake_versions, markdown_table, new_figure, png_markdown
from zipp_assets.resources import ZippLake

GROUP = "graph"


class GraphTablesConfig(dg.Config):
    min_user_interactions: int = 3
    min_user_subreddits: int = 1
    min_subreddit_users: int = 3
    exclude_nsfw_only_users: bool = True
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    min_edges_for_holdout: int = 4
    memory_limit: str = "2GB"
    rows_per_bucket: int = 16_000_000  # users are built in buckets of about this many monthly rows


def _degree_histogram(edges) -> dg.MetadataValue:
    with duckdb.connect() as con:
        con.register("graph_edges", edges)
        rows = con.sql(
            "SELECT degree, count(*) FROM (SELECT count(*) AS degree FROM graph_edges GROUP BY user_index) "
            "GROUP BY degree ORDER BY degree"
        ).fetchall()
    figure, axes = new_figure(6, 3)
    axes.bar([r[0] for r in rows], [r[1] for r in rows], width=0.8)
    axes.set_xlabel("subreddits per user")
    axes.set_ylabel("users")
    axes.set_title("user degree in the graph")
    return png_markdown(figure)


@dg.multi_asset(
    name="graph_tables",
    op_tags=pod_tags("graph_tables"),  # its pod on Kubernetes (zipp_assets/k8s.py)
    specs=[
        dg.AssetSpec("users", group_name=GROUP, kinds={"deltalake"},
                     description="Users kept for the graph: integer index, keyed pseudonym (no username) and activity.",
                     deps=["reddit_user_subreddit_edges", "reddit_submissions"]),
        dg.AssetSpec("subreddits", group_name=GROUP, kinds={"deltalake"},
                     description="Subreddits kept for the graph with their integer index and activity.",
                     deps=["reddit_user_subreddit_edges"]),
        dg.AssetSpec("graph_edges", group_name=GROUP, kinds={"deltalake", "duckdb"},
                     description="One row per user-subreddit pair over all months: edge features and the stored "
                                 "train/val/test split every model and baseline is scored on.",
                     deps=["reddit_user_subreddit_edges"]),
    ],
    check_specs=[dg.AssetCheckSpec("every_user_keeps_a_training_edge", asset="graph_edges")],
)
def graph_tables(context: dg.AssetExecutionContext, config: GraphTablesConfig, lake: ZippLake):
    settings = lake.settings
    graph_config = GraphConfig(**config.model_dump())
    with lake_io.recording() as activity:
        report = build_graph_tables(settings.lake_dir, pseudonym_key(settings), graph_config)
    context.log.info(
        f"graph over {len(report.months)} months: {report.users:,} users, {report.subreddits:,} subreddits, "
        f"{report.edges:,} edges ({report.split_counts}); {report.users_dropped:,} users filtered out"
    )
    common = {"months": f"{report.months[0]}..{report.months[-1]} ({len(report.months)})", "seconds": round(report.seconds, 3),
              "build": report.build_id}
    written = {name: lake_io.open_table(settings.lake_dir, name, version) for name, version in report.versions.items()}
    top = written["subreddits"].read().sort_by([("user_count", "descending")]).slice(0, 10)
    yield dg.MaterializeResult(asset_key="users", metadata={
        **common, **lake_versions(activity, ["users"]), "rows": report.users, "users_filtered_out": report.users_dropped,
        "author_keys_merged_into_fullname": report.aliased_keys, "ambiguous_author_keys": report.ambiguous_keys})
    yield dg.MaterializeResult(
        asset_key="subreddits",
        metadata={**common, **lake_versions(activity, ["subreddits"]), "rows": report.subreddits,
                  "largest": dg.MetadataValue.md(markdown_table(top.to_pylist()))},
    )
    yield dg.MaterializeResult(
        asset_key="graph_edges",
        metadata={**common, **lake_versions(activity, ["graph_edges"]), "rows": report.edges,
                  **{f"{k}_edges": v for k, v in report.split_counts.items()},
                  "user_buckets": report.buckets,  # built one after another (GraphConfig.rows_per_bucket)
                  "step_seconds": dg.MetadataValue.json(report.step_seconds),
                  "degree_plot": _degree_histogram(written["graph_edges"].to_dataset())},
    )
    with duckdb.connect() as con:
        con.register("graph_edges", written["graph_edges"].to_dataset())
        orphans = con.sql(
            "SELECT count(*) FROM (SELECT user_index FROM graph_edges GROUP BY user_index "
            "HAVING count(*) FILTER (WHERE split = 'train') = 0)"
        ).fetchall()[0][0]
    yield dg.AssetCheckResult(
        asset_key="graph_edges", check_name="every_user_keeps_a_training_edge", passed=orphans == 0,
        metadata={"users_without_training_edge": orphans},
    )



class ImageEmbeddingsConfig(dg.Config):
    chunk_size: int = 1024
    load_workers: int = 8
    retry_failed: bool = False  # failed URLs are recorded once and not fetched again unless asked
    allow_http: bool = True
    timeout_seconds: float = 10.0  # connect and each read
    deadline_seconds: float = 30.0  # a whole download: a slow-drip server cannot hold a worker longer
    max_megabytes: float = 20.0


@dg.asset(
    name="image_embeddings",
    op_tags=pod_tags("image_gpu"),  # its pod on Kubernetes (zipp_assets/k8s.py)
    deps=["reddit_image_posts"],
    group_name=GROUP,
    kinds={"deltalake"},
    pool="gpu",  # open_clip on the GPU in production; the pool keeps it off the encoder's and the LLM's GPU
    description="Embedding of every non-NSFW image people posted, by the configured ImageEncoder (incremental: "
                "only images not yet embedded by the same encoder). Failed loads go to image_failures with a reason.",
)
def image_embeddings(context: dg.AssetExecutionContext, config: ImageEmbeddingsConfig, lake: ZippLake,
                     image_encoder: ImageEncoderResource):
    settings = lake.settings
    encoder = image_encoder.build()
    loader = ImageLoader(
        settings.image_cache_dir,
        [settings.image_cache_dir],
        LoaderConfig(timeout_seconds=config.timeout_seconds, deadline_seconds=config.deadline_seconds,
                     max_bytes=int(config.max_megabytes * 2**20), allow_http=config.allow_http),
    )
    with lake_io.recording() as activity:
        report = embed_images(settings.lake_dir, loader, encoder, config.chunk_size, config.load_workers,
                              config.retry_failed, progress=context.log.info)
    stand_in = "" if image_encoder.backend == "open_clip" else " (offline stand-in, not CLIP)"
    return dg.MaterializeResult(metadata={
        "encoder": encoder.name + stand_in,
        "dimension": encoder.dim,
        "candidates": report.candidates,
        "embedded_now": report.embedded,
        "embedded_before": report.already_embedded,
        "failed_now": report.failed,
        "known_failures_skipped": report.known_failures,
        "failure_reasons": dg.MetadataValue.md(markdown_table([{"reason": k, "images": v} for k, v in report.failure_reasons.items()])),
        "seconds": round(report.seconds, 2),
        "images_per_second": round(report.embedded / report.seconds, 1) if report.seconds else 0.0,
        **lake_versions(activity),
    })


@dg.asset(
    name="user_visual_profiles",
    op_tags=pod_tags("graph_tables"),  # its pod on Kubernetes (zipp_assets/k8s.py)
    deps=["image_embeddings", "users", "subreddits", "graph_edges"],
    group_name=GROUP,
    kinds={"deltalake"},
    description="Per graph user: the visual profile (renormalised mean embedding of its training images), the "
                "ImageAlign target; held-out images are kept apart for evaluating visual retrieval.",
)
def user_visual_profiles(context: dg.AssetExecutionContext, lake: ZippLake, image_encoder: ImageEncoderResource):
    settings = lake.settings
    encoder_name = image_encoder.encoder_name
    with lake_io.recording() as activity:
        report = build_visual_profiles(settings.lake_dir, encoder_name, pseudonym_key(settings))
    context.log.info(f"{report.users:,} visual profiles from {report.train_images:,} images, {report.heldout_images:,} held out")
    written = lake_io.open_table(settings.lake_dir, PROFILES, max(activity.written[PROFILES]))
    counts = written.read([{"encoder": encoder_slug(encoder_name)}], ["n_train_images"])["n_train_images"].to_numpy()
    figure, axes = new_figure(6, 3)
    axes.hist(counts, bins=range(1, int(counts.max(initial=1)) + 2), color="#4a7")
    axes.set_xlabel("training images per user")
    axes.set_ylabel("users")
    return dg.MaterializeResult(metadata={
        "users": report.users,
        "users_with_heldout_images": report.users_with_heldout,
        "train_images": report.train_images,
        "heldout_images": report.heldout_images,
        "encoder": encoder_name,
        "seconds": round(report.seconds, 3),
        "images_per_user": png_markdown(figure),
        **lake_versions(activity),
    })


graph_assets = [graph_tables, image_embeddings, user_visual_profiles]
