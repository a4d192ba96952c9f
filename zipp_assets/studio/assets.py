"""Dagster wiring of the human study: its vote tables (written by the studio, outside Dagster), the
`human_study_results` asset, and a sensor that materializes it as votes arrive.

(No `from __future__ import annotations` here: Dagster reads the annotations at run time.)
"""

import time

import dagster as dg
import numpy as np

from zipp_assets import lake as lake_io
from zipp_assets.k8s import pod_tags
from zipp_assets.metadata import lake_versions, markdown_table, new_figure, png_markdown
from zipp_assets.resources import ZippLake
from zipp_assets.studio.results import RESULTS_SCHEMA, results_table, study_results
from zipp_assets.studio.storage import SESSIONS, VOTES, read_study_table

GROUP = "studio"
RESULTS = "human_study_results"

study_tables = [
    dg.AssetSpec(SESSIONS, group_name=GROUP, kinds={"parquet"},
                 description="Written by the persona studio: one row per study participant (intake answers, the "
                             "persona verbalized from them, prompts and prepared comparisons), partitioned by session."),
    dg.AssetSpec(VOTES, group_name=GROUP, kinds={"parquet"},
                 description="Written by the persona studio: one row per vote (displayed order, choice, time taken), "
                             "durable when acknowledged (write-ahead log), partitioned by session."),
]


@dg.asset(
    name=RESULTS,
    op_tags=pod_tags("small"),  # its pod on Kubernetes (zipp_assets/k8s.py)
    deps=[SESSIONS, VOTES],
    group_name=GROUP,
    kinds={"parquet"},
    description="Human A/B study: the ZIPP image's win rate per comparison with an exact binomial test and a 95% "
                "Wilson interval, overall and by the participants' intake demographics; a sign test over "
                "participants beside it.",
)
def human_study_results(context: dg.AssetExecutionContext, lake: ZippLake):
    settings = lake.settings
    started = time.perf_counter()
    with lake_io.recording() as activity:
        votes = read_study_table(settings.lake_dir, VOTES)
        sessions = read_study_table(settings.lake_dir, SESSIONS)
        rows = study_results(votes, sessions)
        with lake_io.atomic_partition(settings.lake_dir, RESULTS) as folder:
            lake_io.write_table(folder, results_table(rows), RESULTS_SCHEMA)
    overall = [r for r in rows if r["breakdown"] == "all"]
    metadata = {
        "votes": sum(r["votes"] for r in overall),
        "participants": len({v["session_id"] for v in votes}),
        "sessions_started": len(sessions),
        "comparisons": dg.MetadataValue.md(markdown_table([
            {"comparison": r["comparison"], "votes": r["votes"],
             "win rate": f"{r['win_rate']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]", "p": f"{r['p_value']:.4g}",
             "participants ZIPP/baseline": f"{r['participants_preferring_zipp']}/{r['participants_preferring_baseline']}",
             "participant p": f"{r['participant_p_value']:.4g}"} for r in overall])),
        "by_demographics": dg.MetadataValue.md(markdown_table([
            {"comparison": r["comparison"], "breakdown": r["breakdown"], "level": r["level"], "votes": r["votes"],
             "win rate": f"{r['win_rate']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"}
            for r in rows if r["breakdown"] != "all"], 60)),
        "seconds": round(time.perf_counter() - started, 2),
        **lake_versions(activity),
    }
    if overall:
        headline = overall[0]
        metadata |= {"win_rate": round(headline["win_rate"], 4), "ci_low": round(headline["ci_low"], 4),
                     "ci_high": round(headline["ci_high"], 4), "p_value": headline["p_value"]}
        shown = [r for r in rows if r["comparison"] == headline["comparison"]][:20]
        figure, axes = new_figure(7, 0.6 + 0.28 * len(shown))
        y = np.arange(len(shown))[::-1]
        rates = np.array([r["win_rate"] for r in shown])
        errors = np.array([[r["win_rate"] - r["ci_low"], r["ci_high"] - r["win_rate"]] for r in shown]).T
        axes.errorbar(rates, y, xerr=errors, fmt="o", color="#2f6f9f", capsize=2)
        axes.axvline(0.5, color="black", linestyle="--", linewidth=0.8)
        axes.set_yticks(y, [f"{r['breakdown']}: {r['level']} (n={r['votes']})" for r in shown], fontsize=6)
        axes.set_xlim(0, 1)
        axes.set_xlabel(f"ZIPP win rate, {headline['comparison']}")
        metadata["win_rate_plot"] = png_markdown(figure)
    else:
        context.log.info("no votes yet: the results table is empty")
    return dg.MaterializeResult(metadata=metadata)


def votes_in_lake(lake_dir) -> int:
    try:
        return lake_io.read_table(lake_dir, VOTES, columns=["vote_id"]).num_rows
    except FileNotFoundError:
        return 0


@dg.sensor(asset_selection=[RESULTS], minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED,
           description="Materializes human_study_results when the lake holds votes it has not seen (the cursor is "
                       "the vote count; votes are only ever added).")
def human_study_votes_sensor(context: dg.SensorEvaluationContext, lake: ZippLake):
    count = votes_in_lake(lake.settings.lake_dir)
    if count == 0 or str(count) == context.cursor:
        return dg.SkipReason(f"{count} votes, none new")
    context.update_cursor(str(count))
    return dg.RunRequest(run_key=f"votes-{count}")


studio_assets = [*study_tables, human_study_results]
studio_sensors = [human_study_votes_sensor]
