"""Dagster wiring of the Reddit ingestion stage: monthly assets, their checks, the monthly job.

(No `from __future__ import annotations` here: Dagster reads the annotations at run time.)
"""


import warnings
from collections.abc import Iterator, Sequence

import dagster as dg

from zipp_assets import lake as lake_io
from zipp_assets.k8s import pod_tags
from zipp_assets.metadata import lake_versions, markdown_table, new_figure, png_markdown
from zipp_assets.partitions import monthly_partitions
from zipp_assets.reddit import checks
from zipp_assets.reddit.derived import DerivedReport, build_image_posts, build_user_subreddit_edges
from zipp_assets.reddit.dumps import DumpNotFoundError, DumpReadError
from zipp_assets.reddit.ingest import IngestReport, dataset_name, ingest_month, quarantine_dataset_name
from zipp_assets.reddit.schemas import SCHEMAS
from zipp_assets.resources import ZippLake

# backfill_policy is marked beta; single-run range backfills are the documented way to use it.
warnings.filterwarnings("ignore", category=dg.BetaWarning)

GROUP = "reddit"
_DESCRIPTIONS = {
    "comments": "Comments of the month's RC_ dump, one row per comment (typed, ids without t1_).",
    "submissions": "Submissions of the month's RS_ dump with the normalised image URLs of each post.",
}


def _ingest_metadata(reports: Sequence[IngestReport]) -> dict:
    lines_in = sum(r.lines_in for r in reports)
    seconds = sum(r.seconds for r in reports)
    reasons: dict[str, int] = {}
    for r in reports:
        for reason, count in r.quarantine_reasons.items():
            reasons[reason] = reasons.get(reason, 0) + count
    per_month = [
        {
            "month": r.month,
            "file": r.file,
            "lines_in": r.lines_in,
            "rows_out": r.rows_out,
            "quarantined": r.quarantined,
            "MB_compressed": round(r.bytes_compressed / 1e6, 1),
            "seconds": round(r.seconds, 2),
            "rows_per_s": round(r.rows_per_second),
            "processes": r.workers,
            "worker_peak_MiB": round(r.worker_peak_rss / 2**20),
            "build": r.build_id,
        }
        for r in reports
    ]
    return {
        "months": ", ".join(r.month for r in reports),
        "rows_in": lines_in,
        "rows_out": sum(r.rows_out for r in reports),
        "quarantined": sum(r.quarantined for r in reports),
        "bytes_compressed": sum(r.bytes_compressed for r in reports),
        "bytes_decompressed": sum(r.bytes_decompressed for r in reports),
        "seconds": round(seconds, 3),
        "rows_per_second": round(lines_in / seconds, 1) if seconds else 0.0,
        "per_month": dg.MetadataValue.md(markdown_table(per_month, max_rows=60)),
        "quarantine_reasons": dg.MetadataValue.md(
            markdown_table([{"reason": k, "lines": v} for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])])
        ),
    }


def _materialized_so_far(context: dg.AssetExecutionContext, keys: Sequence[dg.AssetKey], months: Sequence[str]) -> None:
    """Before failing a range run, record the months that were written, so the UI matches the lake."""
    for month in months:
        for key in keys:
            context.log_event(dg.AssetMaterialization(asset_key=key, partition=month, metadata={"note": "written before a later month failed"}))


def _months_within_quarantine_limit(context: dg.AssetExecutionContext, lake: ZippLake, kinds: Sequence[str]
                                    ) -> tuple[list[str], dict[str, str]]:
    """The run's months whose `kinds` are within the quarantine limit (the rest are refused); if none is, fail now."""
    cleared, blocked = checks.months_within_quarantine_limit(
        lake.settings.lake_dir, kinds, sorted(context.partition_keys), lake.settings.quarantine_max_fraction)
    if blocked:
        context.log.warning(f"refusing {len(blocked)} month(s) over the quarantine limit: {_blocked_text(blocked)}")
    if not cleared:
        raise dg.Failure(description=f"every month is over the quarantine limit: {_blocked_text(blocked)}",
                         metadata={"blocked_months": ", ".join(blocked)})
    return cleared, blocked


def _blocked_text(blocked: dict[str, str]) -> str:
    return "; ".join(f"{month} ({why})" for month, why in blocked.items())


def _refuse_blocked_months(context: dg.AssetExecutionContext, key: str, built: Sequence[str], metadata: dict,
                           blocked: dict[str, str]) -> None:
    """With months refused, record the months built (a MaterializeResult would mark every month of the
    run) and fail the run, naming the refused months."""
    if not blocked:
        return
    for month in built:
        context.log_event(dg.AssetMaterialization(asset_key=key, partition=month, metadata=metadata))
    raise dg.Failure(description=f"built {', '.join(built)}; refused, over the quarantine limit: {_blocked_text(blocked)}",
                     metadata={"blocked_months": ", ".join(blocked), "built_months": ", ".join(built)})


def _written_month(lake_dir, dataset: str, month: str, version: int):
    """The month as its own commit wrote it (the table version that commit made)."""
    return lake_io.open_table(lake_dir, dataset, version).to_dataset([{"month": month}])


def _unique_per_month(lake_dir, dataset: str, versions: dict[str, int], key: list[str]) -> checks.CheckOutcome:
    """Keys are unique within a month: check each month as written, on its own."""
    return checks.merge_by_partition({month: checks.check_unique(_written_month(lake_dir, dataset, month, version), key)
                                      for month, version in versions.items()})


def _schema_check(lake_dir, dataset: str, version: int) -> checks.CheckOutcome:
    table = lake_io.open_table(lake_dir, dataset, version)
    return checks.check_schema(table.schema, SCHEMAS[dataset], f"{dataset} version {version}", table.partition_columns)


def _ingestion_asset(kind: str) -> dg.AssetsDefinition:
    main_key = dg.AssetKey(dataset_name(kind))
    quarantine_key = dg.AssetKey(quarantine_dataset_name(kind))

    @dg.multi_asset(
        name=f"ingest_{kind}",
        op_tags=pod_tags("ingestion"),  # its pod on Kubernetes (zipp_assets/k8s.py)
        specs=[
            dg.AssetSpec(main_key, description=_DESCRIPTIONS[kind], group_name=GROUP, kinds={"deltalake"}),
            dg.AssetSpec(
                quarantine_key,
                description=f"Every line of the {kind} dump that could not be used, with file, line, byte offset and reason.",
                group_name=GROUP,
                kinds={"deltalake"},
            ),
        ],
        partitions_def=monthly_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        check_specs=[
            dg.AssetCheckSpec("columns_and_types", asset=main_key, description="columns and Arrow types as declared"),
            dg.AssetCheckSpec("unique_ids", asset=main_key, description="no id appears twice in the month"),
            # Blocking per month, not per run: Dagster's blocking would stop the whole step downstream,
            # good months of a range too, so image posts and edges refuse each month over the limit.
            dg.AssetCheckSpec(
                "quarantine_fraction",
                asset=main_key,
                description="in every month, quarantined lines stay under ZIPP_QUARANTINE_MAX_FRACTION (default "
                            "0.1%); image posts and edges refuse a month over it",
            ),
        ],
    )
    def ingest(context: dg.AssetExecutionContext, lake: ZippLake) -> Iterator:
        settings = lake.settings
        reports: list[IngestReport] = []
        with lake_io.recording() as activity:
            for month in sorted(context.partition_keys):
                try:
                    reports.append(
                        ingest_month(settings.lake_dir, settings.reddit_raw_dir, kind, month, progress=context.log.info,
                                     workers=settings.ingest_workers)
                    )
                except (DumpNotFoundError, DumpReadError) as exc:
                    _materialized_so_far(context, [main_key, quarantine_key], [r.month for r in reports])
                    raise dg.Failure(description=str(exc), metadata={"month": month}) from None
                r = reports[-1]
                context.log.info(
                    f"{r.file}: {r.lines_in:,} lines -> {r.rows_out:,} rows, {r.quarantined} quarantined, "
                    f"{r.seconds:.1f}s ({r.rows_per_second:,.0f} lines/s)"
                )
        main, quarantine = dataset_name(kind), quarantine_dataset_name(kind)
        versions = {r.month: r.versions[main] for r in reports}
        yield dg.MaterializeResult(asset_key=main_key, metadata={**_ingest_metadata(reports),
                                                                 **lake_versions(activity, [main])})
        yield dg.MaterializeResult(
            asset_key=quarantine_key,
            metadata={"quarantined": sum(r.quarantined for r in reports), "months": ", ".join(r.month for r in reports),
                      **lake_versions(activity, [quarantine])},
        )
        for name, outcome in (
            ("columns_and_types", checks.merge_by_partition(
                {m: _schema_check(settings.lake_dir, main, v) for m, v in versions.items()})),
            ("unique_ids", _unique_per_month(settings.lake_dir, main, versions, ["id"])),
            ("quarantine_fraction", checks.check_quarantine_by_month(
                {r.month: (r.lines_in, r.quarantined) for r in reports}, settings.quarantine_max_fraction)),
        ):
            yield dg.AssetCheckResult(
                asset_key=main_key, check_name=name, passed=outcome.passed,
                description=outcome.description, metadata=outcome.metadata,
            )

    return ingest


reddit_comments = _ingestion_asset("comments")
reddit_submissions = _ingestion_asset("submissions")


def _derived_metadata(reports: Sequence[DerivedReport]) -> dict:
    return {
        "months": ", ".join(r.month for r in reports),
        "rows_in": sum(r.rows_in for r in reports),
        "rows_out": sum(r.rows_out for r in reports),
        "seconds": round(sum(r.seconds for r in reports), 3),
        "per_month": dg.MetadataValue.md(
            markdown_table([{"month": r.month, "rows_in": r.rows_in, "rows_out": r.rows_out, "seconds": round(r.seconds, 2)} for r in reports], 60)
        ),
        "versions": dg.MetadataValue.json({r.month: r.version for r in reports}),
    }


@dg.asset(
    name="reddit_image_posts",
    op_tags=pod_tags("ingestion"),  # its pod on Kubernetes (zipp_assets/k8s.py)
    deps=[dg.AssetKey("reddit_submissions")],
    partitions_def=monthly_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name=GROUP,
    kinds={"deltalake"},
    description="One row per image that a person posted (direct, gallery, preview, crosspost), keyed for the image cache.",
    check_specs=[dg.AssetCheckSpec("columns_and_types", asset="reddit_image_posts")],
)
def reddit_image_posts(context: dg.AssetExecutionContext, lake: ZippLake) -> Iterator:
    lake_dir = lake.settings.lake_dir
    months, blocked = _months_within_quarantine_limit(context, lake, ["submissions"])
    with lake_io.recording() as activity:
        reports = [build_image_posts(lake_dir, month) for month in months]
        metadata = _derived_metadata(reports)
        written = lake_io.open_table(lake_dir, "reddit_image_posts", reports[-1].version).to_dataset(
            [{"month": r.month} for r in reports])
        metadata["by_source"] = dg.MetadataValue.md(markdown_table(_count_by(written, "image_source")))
        outcome = checks.merge_by_partition(
            {r.month: _schema_check(lake_dir, "reddit_image_posts", r.version) for r in reports})
    metadata = {**metadata, **lake_versions(activity)}
    _refuse_blocked_months(context, "reddit_image_posts", months, metadata, blocked)
    yield dg.MaterializeResult(metadata=metadata)
    yield dg.AssetCheckResult(check_name="columns_and_types", passed=outcome.passed, description=outcome.description, metadata=outcome.metadata)


def _count_by(rows, column: str) -> list[dict]:
    import duckdb

    with duckdb.connect() as con:
        con.register("counted", rows)
        rows = con.sql(f'SELECT "{column}", count(*) FROM counted GROUP BY 1 ORDER BY 2 DESC').fetchall()
    return [{column: value, "rows": count} for value, count in rows]


def _degree_plot(edges) -> dg.MetadataValue:
    """Subreddits per user and users per subreddit, log-log: the heavy tails a graph should have."""
    import duckdb

    with duckdb.connect() as con:
        con.register("edges", edges)
        user_degrees = con.sql("SELECT count(*) d FROM edges GROUP BY user_key").fetchnumpy()["d"]
        sub_degrees = con.sql("SELECT count(*) d FROM edges GROUP BY subreddit").fetchnumpy()["d"]
    figure, axes = new_figure(7, 3)
    for values, label in ((user_degrees, "subreddits per user"), (sub_degrees, "users per subreddit")):
        if len(values):
            counts = {}
            for v in values.tolist():
                counts[v] = counts.get(v, 0) + 1
            xs = sorted(counts)
            axes.loglog(xs, [counts[x] for x in xs], marker="o", linestyle="none", markersize=3, label=label)
    axes.set_xlabel("degree")
    axes.set_ylabel("count")
    axes.legend()
    axes.set_title("user-subreddit edge degrees")
    return png_markdown(figure)


@dg.asset(
    name="reddit_user_subreddit_edges",
    op_tags=pod_tags("ingestion"),  # its pod on Kubernetes (zipp_assets/k8s.py)
    deps=[dg.AssetKey("reddit_comments"), dg.AssetKey("reddit_submissions")],
    partitions_def=monthly_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name=GROUP,
    kinds={"deltalake", "duckdb"},
    description="Per user and subreddit in the month: comments, submissions, score sum, first and last time. People only: [deleted], AutoModerator and bots are dropped.",
    check_specs=[
        dg.AssetCheckSpec("columns_and_types", asset="reddit_user_subreddit_edges"),
        dg.AssetCheckSpec("unique_user_subreddit", asset="reddit_user_subreddit_edges"),
    ],
)
def reddit_user_subreddit_edges(context: dg.AssetExecutionContext, lake: ZippLake) -> Iterator:
    lake_dir, dataset = lake.settings.lake_dir, "reddit_user_subreddit_edges"
    months, blocked = _months_within_quarantine_limit(context, lake, ["comments", "submissions"])
    with lake_io.recording() as activity:
        reports = [build_user_subreddit_edges(lake_dir, month) for month in months]
        metadata = _derived_metadata(reports)
        metadata["degree_plot"] = _degree_plot(lake_io.open_table(lake_dir, dataset, reports[-1].version).to_dataset(
            [{"month": r.month} for r in reports]))
        outcomes = (
            ("columns_and_types", checks.merge_by_partition(
                {r.month: _schema_check(lake_dir, dataset, r.version) for r in reports})),
            ("unique_user_subreddit",
             _unique_per_month(lake_dir, dataset, {r.month: r.version for r in reports}, ["user_key", "subreddit"])),
        )
    metadata = {**metadata, **lake_versions(activity)}
    _refuse_blocked_months(context, dataset, months, metadata, blocked)
    yield dg.MaterializeResult(metadata=metadata)
    for name, outcome in outcomes:
        yield dg.AssetCheckResult(check_name=name, passed=outcome.passed, description=outcome.description, metadata=outcome.metadata)


reddit_assets = [reddit_comments, reddit_submissions, reddit_image_posts, reddit_user_subreddit_edges]

reddit_monthly_job = dg.define_asset_job(
    "reddit_monthly_job",
    selection=dg.AssetSelection.groups(GROUP),
    partitions_def=monthly_partitions,
    description="Ingest one month (or a range) of Reddit dumps: comments, submissions, image posts, edges.",
)
