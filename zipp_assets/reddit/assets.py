"""Dagster wiring of the Reddit ingestion stage: monthly assets, their checks, the monthly job.

(No `from __future__ import annotations` here: Dagster reads the annotations at run time.)
"""


import warnings
from collections.abc import Iterator, Sequence

import dagster as dg

from zipp_assets.metadata import markdown_table, new_figure, png_markdown
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
        "files": dg.MetadataValue.md("\n".join(f"- `{f}`" for r in reports for f in r.files_written)),
    }


def _materialized_so_far(context: dg.AssetExecutionContext, keys: Sequence[dg.AssetKey], months: Sequence[str]) -> None:
    """Before failing a range run, record the months that were written, so the UI matches the lake."""
    for month in months:
        for key in keys:
            context.log_event(dg.AssetMaterialization(asset_key=key, partition=month, metadata={"note": "written before a later month failed"}))


def _per_month(check, files_by_month: dict[str, list[str]], *args) -> checks.CheckOutcome:
    """Run a check on each month's files on their own (keys are unique within a month)."""
    return checks.merge_by_partition({month: check(files, *args) for month, files in files_by_month.items()})


def _ingestion_asset(kind: str) -> dg.AssetsDefinition:
    main_key = dg.AssetKey(dataset_name(kind))
    quarantine_key = dg.AssetKey(quarantine_dataset_name(kind))

    @dg.multi_asset(
        name=f"ingest_{kind}",
        specs=[
            dg.AssetSpec(main_key, description=_DESCRIPTIONS[kind], group_name=GROUP, kinds={"parquet"}),
            dg.AssetSpec(
                quarantine_key,
                description=f"Every line of the {kind} dump that could not be used, with file, line, byte offset and reason.",
                group_name=GROUP,
                kinds={"parquet"},
            ),
        ],
        partitions_def=monthly_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        check_specs=[
            dg.AssetCheckSpec("columns_and_types", asset=main_key, description="columns and Arrow types as declared"),
            dg.AssetCheckSpec("unique_ids", asset=main_key, description="no id appears twice in the month"),
            dg.AssetCheckSpec(
                "quarantine_fraction",
                asset=main_key,
                blocking=True,
                description="quarantined lines stay under ZIPP_QUARANTINE_MAX_FRACTION (default 0.1%)",
            ),
        ],
    )
    def ingest(context: dg.AssetExecutionContext, lake: ZippLake) -> Iterator:
        settings = lake.settings
        reports: list[IngestReport] = []
        for month in sorted(context.partition_keys):
            try:
                reports.append(
                    ingest_month(settings.lake_dir, settings.reddit_raw_dir, kind, month, progress=context.log.info)
                )
            except (DumpNotFoundError, DumpReadError) as exc:
                _materialized_so_far(context, [main_key, quarantine_key], [r.month for r in reports])
                raise dg.Failure(description=str(exc), metadata={"month": month}) from None
            r = reports[-1]
            context.log.info(
                f"{r.file}: {r.lines_in:,} lines -> {r.rows_out:,} rows, {r.quarantined} quarantined, "
                f"{r.seconds:.1f}s ({r.rows_per_second:,.0f} lines/s)"
            )
        files = [f for r in reports for f in r.files_written]
        files_by_month = {r.month: r.files_written for r in reports}
        yield dg.MaterializeResult(asset_key=main_key, metadata=_ingest_metadata(reports))
        yield dg.MaterializeResult(
            asset_key=quarantine_key,
            metadata={"quarantined": sum(r.quarantined for r in reports), "months": ", ".join(r.month for r in reports)},
        )
        for name, outcome in (
            ("columns_and_types", checks.check_schema(files, SCHEMAS[dataset_name(kind)])),
            ("unique_ids", _per_month(checks.check_unique, files_by_month, ["id"])),
            (
                "quarantine_fraction",
                checks.check_quarantine_fraction(
                    sum(r.lines_in for r in reports), sum(r.quarantined for r in reports), settings.quarantine_max_fraction
                ),
            ),
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
        "files": dg.MetadataValue.md("\n".join(f"- `{f}`" for r in reports for f in r.files_written)),
    }


@dg.asset(
    name="reddit_image_posts",
    deps=[dg.AssetKey("reddit_submissions")],
    partitions_def=monthly_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name=GROUP,
    kinds={"parquet"},
    description="One row per image that a person posted (direct, gallery, preview, crosspost), keyed for the image cache.",
    check_specs=[dg.AssetCheckSpec("columns_and_types", asset="reddit_image_posts")],
)
def reddit_image_posts(context: dg.AssetExecutionContext, lake: ZippLake) -> Iterator:
    reports = [build_image_posts(lake.settings.lake_dir, month) for month in sorted(context.partition_keys)]
    metadata = _derived_metadata(reports)
    files = [f for r in reports for f in r.files_written]
    metadata["by_source"] = dg.MetadataValue.md(markdown_table(_count_by(files, "image_source")))
    yield dg.MaterializeResult(metadata=metadata)
    outcome = checks.check_schema(files, SCHEMAS["reddit_image_posts"])
    yield dg.AssetCheckResult(check_name="columns_and_types", passed=outcome.passed, description=outcome.description, metadata=outcome.metadata)


def _count_by(files: Sequence[str], column: str) -> list[dict]:
    import duckdb

    with duckdb.connect() as con:
        rows = con.sql(
            f'SELECT "{column}", count(*) FROM read_parquet($f) GROUP BY 1 ORDER BY 2 DESC', params={"f": list(files)}
        ).fetchall()
    return [{column: value, "rows": count} for value, count in rows]


def _degree_plot(files: Sequence[str]) -> dg.MetadataValue:
    """Subreddits per user and users per subreddit, log-log: the heavy tails a graph should have."""
    import duckdb

    with duckdb.connect() as con:
        user_degrees = con.sql("SELECT count(*) d FROM read_parquet($f) GROUP BY user_key", params={"f": list(files)}).fetchnumpy()["d"]
        sub_degrees = con.sql("SELECT count(*) d FROM read_parquet($f) GROUP BY subreddit", params={"f": list(files)}).fetchnumpy()["d"]
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
    deps=[dg.AssetKey("reddit_comments"), dg.AssetKey("reddit_submissions")],
    partitions_def=monthly_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name=GROUP,
    kinds={"parquet", "duckdb"},
    description="Per user and subreddit in the month: comments, submissions, score sum, first and last time. People only: [deleted], AutoModerator and bots are dropped.",
    check_specs=[
        dg.AssetCheckSpec("columns_and_types", asset="reddit_user_subreddit_edges"),
        dg.AssetCheckSpec("unique_user_subreddit", asset="reddit_user_subreddit_edges"),
    ],
)
def reddit_user_subreddit_edges(context: dg.AssetExecutionContext, lake: ZippLake) -> Iterator:
    reports = [build_user_subreddit_edges(lake.settings.lake_dir, month) for month in sorted(context.partition_keys)]
    files = [f for r in reports for f in r.files_written]
    files_by_month = {r.month: r.files_written for r in reports}
    metadata = _derived_metadata(reports)
    metadata["degree_plot"] = _degree_plot(files)
    yield dg.MaterializeResult(metadata=metadata)
    for name, outcome in (
        ("columns_and_types", checks.check_schema(files, SCHEMAS["reddit_user_subreddit_edges"])),
        ("unique_user_subreddit", _per_month(checks.check_unique, files_by_month, ["user_key", "subreddit"])),
    ):
        yield dg.AssetCheckResult(check_name=name, passed=outcome.passed, description=outcome.description, metadata=outcome.metadata)


reddit_assets = [reddit_comments, reddit_submissions, reddit_image_posts, reddit_user_subreddit_edges]

reddit_monthly_job = dg.define_asset_job(
    "reddit_monthly_job",
    selection=dg.AssetSelection.groups(GROUP),
    partitions_def=monthly_partitions,
    description="Ingest one month (or a range) of Reddit dumps: comments, submissions, image posts, edges.",
)
