"""Dagster wiring of privacy (docs/privacy.md): the release candidates (personas, ZIPBench), the audit
with the check that blocks a release over the risk limit, and the releases themselves.

(No `from __future__ import annotations` here: Dagster reads the annotations at run time.)
"""

import os
import shutil
from datetime import datetime, timezone

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from zipp_assets import lake as lake_io
from zipp_assets.graph.pseudonyms import pseudonym_key
from zipp_assets.graph.tables import GRAPH_TABLES
from zipp_assets.k8s import pod_tags
from zipp_assets.metadata import lake_versions, markdown_table
from zipp_assets.personas.overrides import effective_personas, overrides_by_user
from zipp_assets.personas.verbalize import PERSONAS
from zipp_assets.privacy import zipbench_release as zb
from zipp_assets.privacy.audit import (
    PERSONA_RELEASE_CANDIDATE,
    ZIPBENCH_CANDIDATE_TABLES,
    ZIPBENCH_RELEASE_CANDIDATE,
    audit_lake,
    evidence_texts,
    own_prompt_texts,
    read_zipbench_candidate,
)
from zipp_assets.privacy.export import EXPORTED_COLUMNS, build_persona_release, min_group_size, release_risk
from zipp_assets.privacy.kanonymity import quasi_identifiers_from_lake
from zipp_assets.resources import ZippLake
from zipp_assets.zipbench import assets as zipbench

GROUP = "privacy"
AUDIT_TABLE = "privacy_audit"
AUDIT_SCHEMA = pa.schema([
    ("audited_utc", pa.timestamp("us", tz="UTC")), ("candidate_version", pa.int64()), ("k", pa.int64()),
    ("release_rows", pa.int64()), ("worst_risk", pa.float64()), ("within_limit", pa.bool_()),
    ("subreddit_set_unique_share", pa.float64()), ("linked_share", pa.float64()),
    ("zipbench_candidate_version", pa.int64()),  # -1: no ZIPBench candidate; within_limit covers both
])


class PrivacyConfig(dg.Config):
    min_group_size: int = 0  # k of a release; 0: ZIPP_EXPORT_MIN_GROUP_SIZE (default 5)
    linkage_attack: bool = True  # the audit reads every month's raw dumps, as the attacker would


def _k(config: PrivacyConfig) -> int:
    if config.min_group_size:
        return min_group_size({"ZIPP_EXPORT_MIN_GROUP_SIZE": str(config.min_group_size)})
    return min_group_size()


def _quasi_identifiers(lake_dir) -> list[dict]:
    """Every graph user's quasi-identifiers, from one build of the graph tables."""
    graph = lake_io.open_tables(lake_dir, GRAPH_TABLES)
    return quasi_identifiers_from_lake(*(graph[name].read() for name in GRAPH_TABLES)).to_pylist()


@dg.asset(
    name=PERSONA_RELEASE_CANDIDATE,
    op_tags=pod_tags("small"),  # its pod on Kubernetes (zipp_assets/k8s.py)
    deps=[PERSONAS, "persona_evidence", *GRAPH_TABLES],
    group_name=GROUP,
    kinds={"deltalake"},
    description="Personas meant to leave the lake, inside it until privacy_audit passes: k-anonymous on the "
                "quasi-identifiers (subreddits, activity, years), a random release id, no summary and no value "
                "that quotes the evidence.",
)
def persona_release_candidate(context: dg.AssetExecutionContext, config: PrivacyConfig, lake: ZippLake):
    lake_dir = lake.settings.lake_dir
    k = _k(config)
    with lake_io.recording() as activity:
        personas = effective_personas(lake_io.read_table(lake_dir, PERSONAS).to_pylist(), overrides_by_user(lake_dir))
        release = build_persona_release(personas, _quasi_identifiers(lake_dir), evidence_texts(lake_dir), k)
        lake_io.write_partition(lake_dir, PERSONA_RELEASE_CANDIDATE, release.table)
    context.log.info(f"release candidate: {release.table.num_rows:,} of {release.candidates:,} personas (k={k})")
    return dg.MaterializeResult(metadata={
        "k": k, "personas_offered": release.candidates, "rows": release.table.num_rows, "suppressed": release.suppressed,
        "values_dropped_as_verbatim": release.dropped_verbatim_values,
        "by_generalisation": dg.MetadataValue.md(markdown_table(
            [{"generalisation": g, "rows": n} for g, n in release.by_generalisation.items()])),
        **lake_versions(activity),
    })


@dg.asset(
    name=ZIPBENCH_RELEASE_CANDIDATE,
    op_tags=pod_tags("small"),  # its pod on Kubernetes (zipp_assets/k8s.py)
    deps=[zipbench.USERS, zipbench.PROMPTS, dg.AssetDep(zipbench.REWRITES, partition_mapping=dg.AllPartitionMapping()),
          zipbench.SCORES, zipbench.SUMMARY, PERSONAS, "persona_evidence", *GRAPH_TABLES],
    group_name=GROUP,
    kinds={"deltalake"},
    description="The ZIPBench tables meant to leave the lake, inside it until privacy_audit passes: benchmark users "
                "k-anonymous on the quasi-identifiers (and on having prompts of their own) under random release ids, "
                "personas without summary or quotes, prompts and rewrites without the users' own prompts or any text "
                "quoting their comments, scores; three tables written together.",
)
def zipbench_release_candidate(context: dg.AssetExecutionContext, config: PrivacyConfig, lake: ZippLake):
    lake_dir = lake.settings.lake_dir
    k = _k(config)
    with lake_io.recording() as activity:
        judgements = lake_io.read_table(lake_dir, zipbench.JUDGEMENTS).to_pylist()
        release = zb.build_zipbench_release(  # the personas the benchmark used (zipbench's own reader)
            lake_io.read_table(lake_dir, zipbench.USERS).to_pylist(), zipbench._effective_personas(lake_dir),
            _quasi_identifiers(lake_dir), evidence_texts(lake_dir),
            own_prompt_texts(lake_dir), lake_io.read_table(lake_dir, zipbench.PROMPTS).to_pylist(),
            lake_io.read_table(lake_dir, zipbench.REWRITES).to_pylist(),
            lake_io.read_table(lake_dir, zipbench.SCORES).to_pylist(), judgements, k)
        with lake_io.build(lake_dir) as together:  # the three tables or none: readers check the build id
            for part, name in ZIPBENCH_CANDIDATE_TABLES.items():
                lake_io.write_table(together.partition(name), release.tables[part], release.tables[part].schema)
    users = release.tables["users"].num_rows
    context.log.info(f"ZIPBench release candidate: {users:,} of {release.candidates:,} benchmark users (k={k})")
    return dg.MaterializeResult(metadata={
        "k": k, "users_offered": release.candidates, "users": users, "suppressed": release.suppressed,
        "prompt_rows": release.tables["prompts"].num_rows, "score_rows": release.tables["scores"].num_rows,
        "persona_values_dropped_as_verbatim": release.dropped_verbatim_values,
        "prompt_texts_withheld": dg.MetadataValue.json(release.withheld),
        **lake_versions(activity),
    })


@dg.asset(
    name=AUDIT_TABLE,
    op_tags=pod_tags("graph_tables"),  # the linkage attack reads every month of the dumps, like the graph tables
    deps=[*GRAPH_TABLES, PERSONA_RELEASE_CANDIDATE, ZIPBENCH_RELEASE_CANDIDATE],
    group_name=GROUP,
    kinds={"deltalake"},
    description="Re-identification risk of what the lake holds, as someone holding the public dumps would "
                "exploit it: users unique or in groups smaller than k by each quasi-identifier, the linkage "
                "attack on graph_edges, and the release candidate's risk.",
    check_specs=[dg.AssetCheckSpec(
        "release_within_risk_limit", asset=AUDIT_TABLE, blocking=True,
        description="every released row of every candidate (personas, ZIPBench) is among at least k people "
                    "(k: ZIPP_EXPORT_MIN_GROUP_SIZE) in the release and in the dumps, and no released value quotes "
                    "the evidence or a user's own prompts; blocks persona_release and zipbench_release")],
)
def privacy_audit(context: dg.AssetExecutionContext, config: PrivacyConfig, lake: ZippLake):
    settings = lake.settings
    k = _k(config)
    with lake_io.recording() as activity:
        audit = audit_lake(settings.lake_dir, settings.reddit_raw_dir, pseudonym_key(settings), k, config.linkage_attack)
        candidate_version = (lake_io.open_table(settings.lake_dir, PERSONA_RELEASE_CANDIDATE).version
                             if audit.release is not None else -1)
        by_set = next(u for u in audit.uniqueness if u.quasi_identifier == "subreddit set")
        within = audit.within_limit
        row = {"audited_utc": datetime.now(timezone.utc), "candidate_version": candidate_version, "k": k,
               "release_rows": audit.release.rows if audit.release else 0,
               "worst_risk": audit.release.worst_risk if audit.release and audit.release.rows else 0.0,
               "within_limit": within,
               "subreddit_set_unique_share": by_set.unique / by_set.users if by_set.users else 0.0,
               "linked_share": audit.linkage.linked_share if audit.linkage else float("nan"),
               "zipbench_candidate_version": audit.zipbench_candidate_version}
        # Appended: persona_release looks up the audit of the candidate version it is about to write.
        lake_io.append_rows(settings.lake_dir, AUDIT_TABLE, pa.Table.from_pylist([row], schema=AUDIT_SCHEMA))
    linkage_rows = [{"published": name, **result.as_dict(), "published_columns": ", ".join(result.published_columns) or "-"}
                    for name, result in (("graph_edges columns", audit.linkage), ("subreddit set only", audit.linkage_by_subreddit_set))
                    if result is not None]
    yield dg.MaterializeResult(metadata={
        "months": f"{audit.months[0]}..{audit.months[-1]} ({len(audit.months)})", "users": audit.users, "k": k,
        "uniqueness": dg.MetadataValue.md(markdown_table([u.as_row() for u in audit.uniqueness])),
        "subreddit_set_unique_share": round(row["subreddit_set_unique_share"], 4),
        "linkage_attack": dg.MetadataValue.md(markdown_table(linkage_rows)) if linkage_rows else "not run",
        "release": dg.MetadataValue.json(audit.release.as_dict() if audit.release else {"rows": 0}),
        "zipbench_release": dg.MetadataValue.json(audit.zipbench_release.as_dict() if audit.zipbench_release
                                                  else {"rows": 0}),
        **lake_versions(activity),
    })
    yield dg.AssetCheckResult(check_name="release_within_risk_limit", passed=within, metadata={
        "k": k, "candidate_version": candidate_version, **(audit.release.as_dict() if audit.release else {"rows": 0}),
        "zipbench_candidate_version": audit.zipbench_candidate_version,
        "zipbench_release": dg.MetadataValue.json(audit.zipbench_release.as_dict() if audit.zipbench_release
                                                  else {"rows": 0})})


def _require_passing_audit(lake_dir, column: str, candidate: str, version: int, k: int) -> None:
    """A release is written only after a privacy_audit that passed on this very version of its candidate
    (`column` of the audit table), with at least the same k; else Failure."""
    audits = lake_io.read_table(lake_dir, AUDIT_TABLE).to_pylist() if lake_io.table_exists(lake_dir, AUDIT_TABLE) else []
    if not [a for a in audits if a.get(column) == version and a["within_limit"] and a["k"] >= k]:
        raise dg.Failure(f"{candidate} version {version} has no passing privacy_audit with k >= {k}: materialize "
                         f"privacy_audit first (audits found: {audits})")


@dg.asset(
    name="persona_release",
    op_tags=pod_tags("small"),  # its pod on Kubernetes (zipp_assets/k8s.py)
    deps=[AUDIT_TABLE, PERSONA_RELEASE_CANDIDATE],
    group_name=GROUP,
    kinds={"parquet"},
    description="The release candidate written outside the lake (ZIPP_DATA_DIR/exports/persona_release/), only "
                "when privacy_audit passed on this very version of it; without user ids.",
)
def persona_release(context: dg.AssetExecutionContext, config: PrivacyConfig, lake: ZippLake):
    settings = lake.settings
    k = _k(config)
    candidate = lake_io.open_table(settings.lake_dir, PERSONA_RELEASE_CANDIDATE)
    _require_passing_audit(settings.lake_dir, "candidate_version", PERSONA_RELEASE_CANDIDATE, candidate.version, k)
    table = candidate.read()
    risk = release_risk(table, k, None, evidence_texts(settings.lake_dir))  # again, on what is about to leave
    if not risk.within_limit:
        raise dg.Failure(f"refused: the release is over the risk limit: {risk.as_dict()}")
    folder = settings.data_dir / "exports" / "persona_release"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"persona_release_v{candidate.version}.parquet"
    partial = path.with_suffix(".parquet.partial")
    pq.write_table(table.select(EXPORTED_COLUMNS), partial)
    os.replace(partial, path)  # readers see the whole file or none
    return dg.MaterializeResult(metadata={"path": str(path), "rows": table.num_rows, "candidate_version": candidate.version,
                                          **risk.as_dict()})


@dg.asset(
    name="zipbench_release",
    op_tags=pod_tags("small"),  # its pod on Kubernetes (zipp_assets/k8s.py)
    deps=[AUDIT_TABLE, ZIPBENCH_RELEASE_CANDIDATE, zipbench.SUMMARY],
    group_name=GROUP,
    kinds={"parquet"},
    description="The ZIPBench release candidate and the benchmark summary (aggregates over users) written outside "
                "the lake (ZIPP_DATA_DIR/exports/zipbench_release/v<version>/), only when privacy_audit passed on "
                "this very version of the candidate; without user ids.",
)
def zipbench_release(context: dg.AssetExecutionContext, config: PrivacyConfig, lake: ZippLake):
    settings = lake.settings
    k = _k(config)
    with lake_io.recording() as activity:
        candidate = read_zipbench_candidate(settings.lake_dir)
        if candidate is None:
            raise dg.Failure(f"no {ZIPBENCH_RELEASE_CANDIDATE} in the lake: materialize it, then privacy_audit")
        tables, version = candidate
        _require_passing_audit(settings.lake_dir, "zipbench_candidate_version", ZIPBENCH_RELEASE_CANDIDATE, version, k)
        # Measured again on what is about to leave (the audit's dump attack aside).
        risk = zb.zipbench_release_risk(tables, k, None, evidence_texts(settings.lake_dir),
                                        own_prompt_texts(settings.lake_dir))
        if not risk.within_limit:
            raise dg.Failure(f"refused: the ZIPBench release is over the risk limit: {risk.as_dict()}")
        summary = lake_io.read_table(settings.lake_dir, zipbench.SUMMARY)
    folder = settings.data_dir / "exports" / "zipbench_release" / f"v{version}"
    partial = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for part in zb.TABLES:
        pq.write_table(tables[part].select(zb.EXPORTED_COLUMNS[part]), partial / f"{part}.parquet")
    pq.write_table(summary, partial / "summary.parquet")
    shutil.rmtree(folder, ignore_errors=True)  # the same version exported again: the same content
    os.replace(partial, folder)  # readers see the whole folder or none
    return dg.MaterializeResult(metadata={
        "path": str(folder), "candidate_version": version,
        **{f"{part}_rows": tables[part].num_rows for part in zb.TABLES}, **risk.as_dict(), **lake_versions(activity)})


privacy_assets = [persona_release_candidate, zipbench_release_candidate, privacy_audit, persona_release,
                  zipbench_release]
