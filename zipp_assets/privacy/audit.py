"""The privacy audit: re-identification risk of what the lake holds, measured as docs/privacy.md's
attacker (who holds the public dumps) would exploit it.

- Uniqueness: the share of graph users unique, or in a group smaller than k, by each
  quasi-identifier (kanonymity.QUASI_IDENTIFIERS).
- The linkage attack (linkage.py) on graph_edges with the raw dumps as the attacker's knowledge:
  users named with the published columns, and with the subreddit set alone.
- The release candidates, when there are: the persona release and the ZIPBench release
  (zipbench_release.py): their smallest group, the fewest authors of the dumps a released row
  matches, and values that quote the evidence (or a user's own prompts). Over the limit, no release
  is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from zipp_assets import lake
from zipp_assets.graph.tables import GRAPH_TABLES, monthly_edges
from zipp_assets.privacy.export import ReleaseRisk, release_risk
from zipp_assets.privacy.kanonymity import (
    Uniqueness,
    quasi_identifiers_from_dumps,
    quasi_identifiers_from_lake,
    uniqueness,
)
from zipp_assets.privacy.linkage import LinkageResult, measure_linkage, read_dump_knowledge
from zipp_assets.privacy.zipbench_release import zipbench_release_risk

PERSONA_RELEASE_CANDIDATE = "persona_release_candidate"
ZIPBENCH_RELEASE_CANDIDATE = "zipbench_release_candidate"
# The candidate's tables, written together under one build id (users: the asset's own table).
ZIPBENCH_CANDIDATE_TABLES = {"users": ZIPBENCH_RELEASE_CANDIDATE, "prompts": f"{ZIPBENCH_RELEASE_CANDIDATE}_prompts",
                             "scores": f"{ZIPBENCH_RELEASE_CANDIDATE}_scores"}
ZIPBENCH_HISTORY = "zipbench_history"
EVIDENCE = "persona_evidence"


@dataclass
class LakeAudit:
    months: list[str]
    users: int
    uniqueness: list[Uniqueness]
    linkage: LinkageResult | None  # None: the attack was not asked for
    linkage_by_subreddit_set: LinkageResult | None
    release: ReleaseRisk | None  # None: no release candidate in the lake
    zipbench_release: ReleaseRisk | None = None  # None: no ZIPBench release candidate
    zipbench_candidate_version: int = -1  # the version of its users table measured (-1: none)

    @property
    def within_limit(self) -> bool:
        """Every candidate in the lake is within the limit (what blocks every export)."""
        return all(r is None or r.within_limit for r in (self.release, self.zipbench_release))


def evidence_texts(lake_dir: Path) -> dict[str, str]:
    if not lake.table_exists(lake_dir, EVIDENCE):
        return {}
    table = lake.read_table(lake_dir, EVIDENCE, columns=["user_id", "evidence_text"])
    return dict(zip(table["user_id"].to_pylist(), table["evidence_text"].to_pylist()))


def own_prompt_texts(lake_dir: Path) -> dict[str, list[str]]:
    """Per benchmark user, every prompt of its own (history and held-out): text published elsewhere."""
    if not lake.table_exists(lake_dir, ZIPBENCH_HISTORY):
        return {}
    out: dict[str, list[str]] = {}
    for row in lake.read_table(lake_dir, ZIPBENCH_HISTORY, columns=["user_id", "prompt", "short_prompt"]).to_pylist():
        out.setdefault(row["user_id"], []).extend(t for t in (row["prompt"], row["short_prompt"]) if t)
    return out


def read_zipbench_candidate(lake_dir: Path) -> tuple[dict[str, pa.Table], int] | None:
    """The ZIPBench release candidate's tables (one build: a half-written candidate is refused) and the
    version of its users table; None if there is none."""
    if not lake.table_exists(lake_dir, ZIPBENCH_RELEASE_CANDIDATE):
        return None
    snapshots = lake.open_tables(lake_dir, list(ZIPBENCH_CANDIDATE_TABLES.values()))
    tables = {part: snapshots[name].read() for part, name in ZIPBENCH_CANDIDATE_TABLES.items()}
    return tables, snapshots[ZIPBENCH_RELEASE_CANDIDATE].version


def audit_lake(lake_dir: Path, reddit_dir: Path, key: bytes, k: int, linkage_attack: bool = True) -> LakeAudit:
    """Measure the graph tables (one build) and the release candidate, if any. With `linkage_attack`,
    the dumps of every month in the graph are read, as the attacker would (as long as ingestion)."""
    graph = lake.open_tables(lake_dir, GRAPH_TABLES)
    users, subreddits, edges = (graph[name].read() for name in GRAPH_TABLES)
    quasi = quasi_identifiers_from_lake(users, subreddits, edges)
    _, months = monthly_edges(lake_dir)
    linkage = by_set = authors = None
    if linkage_attack:
        knowledge = read_dump_knowledge(reddit_dir, months)
        linkage = measure_linkage(edges, subreddits, users, knowledge, key)
        by_set = measure_linkage(edges, subreddits, users, knowledge, key, published={})
        authors = quasi_identifiers_from_dumps(knowledge, subreddits["subreddit"].to_pylist()).to_pylist()
    release = zipbench = None
    evidence = evidence_texts(lake_dir)
    if lake.table_exists(lake_dir, PERSONA_RELEASE_CANDIDATE):
        release = release_risk(lake.read_table(lake_dir, PERSONA_RELEASE_CANDIDATE), k, authors, evidence)
    candidate = read_zipbench_candidate(lake_dir)
    if candidate is not None:
        zipbench = zipbench_release_risk(candidate[0], k, authors, evidence, own_prompt_texts(lake_dir))
    return LakeAudit(months, quasi.num_rows, uniqueness(quasi, k), linkage, by_set, release, zipbench,
                     candidate[1] if candidate is not None else -1)
