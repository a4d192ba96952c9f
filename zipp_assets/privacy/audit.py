"""The privacy audit: re-identification risk of what the lake holds, measured as docs/privacy.md's
attacker (who holds the public dumps) would exploit it.

- Uniqueness: the share of graph users unique, or in a group smaller than k, by each
  quasi-identifier (kanonymity.QUASI_IDENTIFIERS).
- The linkage attack (linkage.py) on graph_edges with the raw dumps as the attacker's knowledge:
  users named with the published columns, and with the subreddit set alone.
- The release candidate, when there is one: its smallest group, the fewest authors of the dumps a
  released row matches, and values that quote the evidence. Over the limit, no release is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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

PERSONA_RELEASE_CANDIDATE = "persona_release_candidate"
EVIDENCE = "persona_evidence"


@dataclass
class LakeAudit:
    months: list[str]
    users: int
    uniqueness: list[Uniqueness]
    linkage: LinkageResult | None  # None: the attack was not asked for
    linkage_by_subreddit_set: LinkageResult | None
    release: ReleaseRisk | None  # None: no release candidate in the lake


def evidence_texts(lake_dir: Path) -> dict[str, str]:
    if not lake.table_exists(lake_dir, EVIDENCE):
        return {}
    table = lake.read_table(lake_dir, EVIDENCE, columns=["user_id", "evidence_text"])
    return dict(zip(table["user_id"].to_pylist(), table["evidence_text"].to_pylist()))


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
    release = None
    if lake.table_exists(lake_dir, PERSONA_RELEASE_CANDIDATE):
        release = release_risk(lake.read_table(lake_dir, PERSONA_RELEASE_CANDIDATE), k, authors, evidence_texts(lake_dir))
    return LakeAudit(months, quasi.num_rows, uniqueness(quasi, k), linkage, by_set, release)
