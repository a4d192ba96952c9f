"""Privacy figures on a world generated with the demo's settings (2,000 users, 2019-01..2019-03,
seed 0; images not written): the audit (uniqueness, the linkage attack on the coarse columns and on
the subreddit set alone), the same attack on the old exact columns, and k-anonymous releases of the
graph's quasi-identifiers attacked with the dumps. The figures are in docs/privacy.md.

    .venv/bin/python bench/privacy_demo_world.py [--work /tmp/privacy_demo_world]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("DGLBACKEND", "pytorch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zipp_assets import lake  # noqa: E402
from zipp_assets.graph.tables import GRAPH_TABLES, build_graph_tables  # noqa: E402
from zipp_assets.privacy.audit import audit_lake  # noqa: E402
from zipp_assets.privacy.exact_reference import EXACT_COLUMNS, exact_graph_edges  # noqa: E402
from zipp_assets.privacy.kanonymity import (  # noqa: E402
    k_anonymize,
    quasi_identifiers_from_dumps,
    quasi_identifiers_from_lake,
    release_candidates,
)
from zipp_assets.privacy.linkage import measure_linkage, read_dump_knowledge  # noqa: E402
from zipp_assets.reddit.derived import build_image_posts, build_user_subreddit_edges  # noqa: E402
from zipp_assets.reddit.ingest import ingest_month  # noqa: E402
from zipp_assets.simworld.world import WorldConfig, generate_world  # noqa: E402

MONTHS = ("2019-01", "2019-02", "2019-03")
KEY = b"privacy-demo-world-bench"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/privacy_demo_world"))
    args = parser.parse_args()
    lake_dir, reddit_dir = args.work / "lake", args.work / "raw" / "reddit"
    if not lake.table_exists(lake_dir, "graph_edges"):
        generate_world(WorldConfig(users=2000, months=MONTHS, seed=0, write_images=False), args.work / "raw", args.work / "truth")
        for month in MONTHS:
            for kind in ("comments", "submissions"):
                ingest_month(lake_dir, reddit_dir, kind, month)
            build_image_posts(lake_dir, month)
            build_user_subreddit_edges(lake_dir, month)
        build_graph_tables(lake_dir, KEY)
    started = time.perf_counter()
    audit = audit_lake(lake_dir, reddit_dir, KEY, k=5)
    out = {"audit_seconds": round(time.perf_counter() - started, 1), "uniqueness": [u.as_row() for u in audit.uniqueness],
           "linkage": {"coarse columns": audit.linkage.as_dict(), "subreddit set": audit.linkage_by_subreddit_set.as_dict()}}
    users, subreddits, edges = (lake.read_table(lake_dir, name) for name in GRAPH_TABLES)
    knowledge = read_dump_knowledge(reddit_dir, MONTHS)
    exact = exact_graph_edges(lake_dir, KEY, users, subreddits)
    out["linkage"]["exact columns (before)"] = measure_linkage(exact, subreddits, users, knowledge, KEY,
                                                               published=EXACT_COLUMNS).as_dict()
    rows = quasi_identifiers_from_lake(users, subreddits, edges).to_pylist()
    authors = quasi_identifiers_from_dumps(knowledge, subreddits["subreddit"].to_pylist()).to_pylist()
    out["releases"] = []
    for k in (5, 10):
        release = k_anonymize(rows, k)
        candidates = release_candidates(release.rows, release.generaliser, authors)
        out["releases"].append({"k": k, "rows": len(release.rows), "suppressed": release.suppressed,
                                "smallest_group": release.smallest_group,
                                "fewest_dump_authors": min((c for c in candidates if c > 0), default=None),
                                "rows_matching_no_author": sum(c == 0 for c in candidates),
                                "by_generalisation": dict(Counter(r["generalisation"] for r in release.rows))})
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
