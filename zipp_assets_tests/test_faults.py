"""Fault injection (issue 7, section 3): the pipeline is killed with SIGKILL at many points of
ingestion, the graph tables, image embedding, encoder training and inference (faults_driver.py),
each time over a lake in a known state: empty, as an uninterrupted run left it before the stage, or
complete (a re-materialization). After each kill a reader looks at the lake: every table version it
can open holds complete partitions equal to the uninterrupted run's, and tables written together
either agree on their build id or are refused (never read mixed). Then the stage runs again, and its
outputs equal the uninterrupted run's."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from zipp_assets import lake
from zipp_assets_tests.faults_driver import STAGES

# (stage, lake it starts from, kill spec): "empty" lake, "before" = the uninterrupted run's lake
# before this stage, "full" = its complete lake (the stage re-materializes over existing tables).
KILL_POINTS = [
    ("ingest", "empty", "scratch:2"),  # a month's rows half in scratch
    ("ingest", "empty", "commit:1"),  # the first commit about to start
    ("ingest", "empty", "delta:1"),  # inside delta-rs's first write
    ("ingest", "empty", "committed:1"),  # a month's rows committed, its quarantine not
    ("ingest", "full", "committed:5"),  # re-ingestion: 2018-01 rows new, quarantine of the old build
    ("ingest", "full", "delta:reddit_submissions:2"),
    ("derived", "before", "commit:1"),
    ("derived", "before", "committed:3"),  # 2017-12 done, 2018-01 image posts only
    ("derived", "full", "delta:reddit_user_subreddit_edges:1"),
    ("graph", "before", "scratch:1"),
    ("graph", "before", "delta:graph_edges:1"),
    ("graph", "before", "committed:1"),  # graph_edges without users and subreddits
    ("graph", "full", "committed:1"),  # a new graph_edges beside the old users and subreddits
    ("graph", "full", "committed:2"),  # new graph_edges and users, old subreddits
    ("images", "before", "encode:1"),
    ("images", "before", "encode:3"),  # two chunks appended
    ("images", "before", "committed:image_embeddings:2"),
    ("images", "before", "commit:user_visual_profiles:1"),
    ("images", "full", "delta:user_visual_profiles:1"),
    ("train", "before", "epoch:1"),
    ("train", "before", "epoch:3"),  # the last epoch finished, its state not saved
    ("train", "before", "save:1"),  # weights written, the checkpoint folder not renamed
    ("infer", "full", "chunk:2"),
    ("infer", "full", "committed:user_embeddings:1"),  # embeddings of a new run, attention of the old
    ("infer", "full", "delta:user_top_subreddits:1"),
]
# Tables whose ids must agree before they are read together, and append-only tables (a killed run
# leaves whole chunks of them, which the next run keeps and completes).
BUILT_TOGETHER = [["reddit_comments", "reddit_comments_quarantine"],
                  ["reddit_submissions", "reddit_submissions_quarantine"],
                  ["users", "subreddits", "graph_edges"], ["user_embeddings", "user_top_subreddits"]]
APPEND_ONLY = {"image_embeddings", "image_failures"}
VOLATILE = {"attempted_utc"}  # wall-clock times
FLOATS = {"embedding", "visual_embedding", "weight", "profile"}  # model outputs: compared to 1e-5


def _driver(lake_dir: Path, raw: Path, models: Path, scratch: Path, start: str, *, only: bool, kill: str | None = None):
    command = [sys.executable, "-m", "zipp_assets_tests.faults_driver", "--lake", str(lake_dir), "--raw", str(raw),
               "--models", str(models), "--from", start] + (["--only"] if only else []) + (["--kill", kill] if kill else [])
    env = {**os.environ, "DGLBACKEND": "pytorch", "OMP_NUM_THREADS": "1", "ZIPP_SCRATCH_DIR": str(scratch)}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[1])


def _rows(root, table: str, partition: dict | None = None) -> list[dict]:
    snapshot = lake.open_table(root, table)
    rows = [{k: v for k, v in r.items() if k not in VOLATILE} for r in snapshot.read([partition] if partition else None).to_pylist()]
    return sorted(rows, key=lambda r: json.dumps({k: v for k, v in r.items() if k not in FLOATS}, sort_keys=True, default=str))


def _same(a: list[dict], b: list[dict]) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if {k: v for k, v in x.items() if k not in FLOATS} != {k: v for k, v in y.items() if k not in FLOATS}:
            return False
        if not all(np.allclose(np.asarray(x[k], np.float64), np.asarray(y[k], np.float64), atol=1e-5) for k in FLOATS & x.keys()):
            return False
    return True


def _partitions(root, table: str) -> list[dict | None]:
    snapshot = lake.open_table(root, table)
    return snapshot.partitions() if snapshot.partition_columns else [None]


def _what_a_reader_sees(killed: Path, reference: Path) -> int:
    """Check every table a reader can open in the killed lake; return how many sets of tables that
    must agree were refused (not read mixed)."""
    for table in lake.list_tables(killed):
        for partition in _partitions(killed, table):
            seen, expected = _rows(killed, table, partition), _rows(reference, table, partition)
            if table in APPEND_ONLY:  # whole chunks, no duplicates
                keys = [r["url_key"] for r in seen]
                assert len(keys) == len(set(keys)) and all(r in expected for r in seen), table
            else:
                assert _same(seen, expected), f"{table} {partition} is partial or differs"
    refused = 0
    for tables in BUILT_TOGETHER:
        present = [t for t in tables if lake.table_exists(killed, t)]
        if present and len(present) < len(tables):
            refused += 1  # a reader of the set fails on the missing table
        elif present:
            try:
                lake.open_tables(killed, tables)
            except lake.BuildMismatch:
                refused += 1
    if lake.table_exists(killed, "user_visual_profiles") and lake.table_exists(killed, "users"):
        profiles = lake.open_table(killed, "user_visual_profiles")
        for partition in profiles.partitions():
            try:
                lake.check_built_from(profiles, partition, lake.open_table(killed, "users"))
            except lake.BuildMismatch:
                refused += 1
    return refused


def _checkpoint_weights(models: Path) -> dict:
    from zipp_assets.encoder.checkpoint import latest_checkpoint, load_encoder

    return load_encoder(latest_checkpoint(models)).model.state_dict()


@pytest.mark.slow
def test_killed_anywhere_the_pipeline_recovers_and_readers_never_see_partial_or_mixed_tables(tiny_world, tmp_path):
    assert len(KILL_POINTS) >= 20 and {s for s, _, _ in KILL_POINTS} == set(STAGES)
    raw, scratch = tiny_world / "raw", tmp_path / "scratch"
    reference, models = tmp_path / "reference" / "lake", tmp_path / "reference" / "models"
    before: dict[str, Path] = {}
    for stage in STAGES:  # the uninterrupted run, stage by stage, keeping the lake before each
        before[stage] = tmp_path / "before" / stage
        if reference.exists():
            shutil.copytree(reference, before[stage])
        done = _driver(reference, raw, models, scratch, stage, only=True)
        assert done.returncode == 0, done.stderr[-3000:]
    tables_after = {}
    for i, stage in enumerate(STAGES):
        tables_after[stage] = set(lake.list_tables(before[STAGES[i + 1]] if i + 1 < len(STAGES) else reference))

    refusals = {}
    for number, (stage, start, kill) in enumerate(KILL_POINTS):
        work = tmp_path / f"point{number:02d}"
        lake_dir, work_models = work / "lake", work / "models"
        if start == "full":
            shutil.copytree(reference, lake_dir)
        elif start == "before" and before[stage].exists():
            shutil.copytree(before[stage], lake_dir)
        work_models.mkdir(parents=True)
        if stage == "infer":
            shutil.copytree(models, work_models, dirs_exist_ok=True)
        killed = _driver(lake_dir, raw, work_models, scratch, stage, only=True, kill=kill)
        assert killed.returncode == -signal.SIGKILL, (stage, start, kill, killed.returncode, killed.stderr[-2000:])
        refusals[(stage, start, kill)] = _what_a_reader_sees(lake_dir, reference) if lake_dir.exists() else 0

        again = _driver(lake_dir, raw, work_models, scratch, stage, only=True)
        assert again.returncode == 0, (stage, start, kill, again.stderr[-3000:])
        expected = tables_after[stage] if start != "full" else set(lake.list_tables(reference))
        assert set(lake.list_tables(lake_dir)) == expected, (stage, kill)
        for table in expected:
            assert _same(_rows(lake_dir, table), _rows(reference, table)), (stage, start, kill, table)
        for tables in BUILT_TOGETHER:
            if set(tables) <= expected:
                lake.open_tables(lake_dir, tables)  # agree again
        if stage == "train":
            for (name, a), b in zip(_checkpoint_weights(models).items(), _checkpoint_weights(work_models).values()):
                assert np.allclose(a.numpy(), b.numpy(), atol=1e-5), (kill, name)
        assert not list(scratch.iterdir()), (stage, kill)  # the killed writer's scratch was swept
        shutil.rmtree(work)

    # Kills between the commits of tables written together were caught: readers refused the sets.
    assert refusals[("ingest", "empty", "committed:1")] >= 1
    assert refusals[("ingest", "full", "committed:5")] >= 1
    assert refusals[("graph", "full", "committed:2")] >= 1
    assert refusals[("infer", "full", "committed:user_embeddings:1")] >= 1
    print(f"\n{len(KILL_POINTS)} kill points; readers refused a mismatched set after "
          f"{sum(1 for r in refusals.values() if r)} of them")
