"""Fault injection (issue 7, section 3): the pipeline is killed with SIGKILL at many points of
ingestion, the graph tables, image embedding, encoder training and inference (faults_driver.py),
each time over a lake in a known state: empty, as an uninterrupted run left it before the stage, or
complete (a re-materialization), at points inside Delta's commit itself too (publish_kill_shim.c);
and ingestion on a lake in S3 (moto's server on loopback), killed inside delta-rs's own requests,
its commits included, and likewise the graph tables and the user embeddings and attention there.
After each kill a reader looks at the lake:
every partition that the lake held before, that the uninterrupted run writes, or that the killed
lake shows reads whole, as it was before the run or as the uninterrupted run left it (a partition
missing or emptied fails), and tables written together either agree on their build id or are
refused (never read mixed), exactly where a kill fell between their commits. Then the stage runs
again, and its outputs equal the uninterrupted run's. Each kill point is its own test; the
uninterrupted run is made once per module.

A second test reads tables in a loop while a writer process rewrites them: every read is a whole
old or new version, never a mix."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from zipp_assets import lake
from zipp_assets_tests.faults_driver import STAGES
from zipp_assets_tests.moto_server import BUCKET, moto_s3, upload

# (stage, lake it starts from, kill spec, leaves a set of tables whose builds disagree): "empty"
# lake, "before" = the uninterrupted run's lake before this stage, "full" = its complete lake (the
# stage re-materializes over existing tables).
KILL_POINTS = [
    ("ingest", "empty", "scratch:2", False),  # a month's rows half in scratch
    ("ingest", "empty", "commit:1", False),  # the first commit about to start
    ("ingest", "empty", "delta:1", False),  # inside delta-rs's first write
    ("ingest", "empty", "committed:1", True),  # a month's rows committed, its quarantine not
    ("ingest", "full", "committed:5", True),  # re-ingestion: 2018-01 rows new, quarantine of the old build
    ("ingest", "full", "delta:reddit_submissions:2", False),
    # On an empty lake a table's commit 1 is its empty creation (lake.py), so commit 2 is its first rows.
    ("ingest", "empty", "publish:reddit_comments:2", False),  # inside the first rows' commit: its entry staged only
    ("ingest", "empty", "published:reddit_comments:2", True),  # inside it: published, delta-rs not returned
    ("derived", "before", "commit:1", False),
    ("derived", "before", "committed:3", False),  # 2017-12 done, 2018-01 image posts only
    ("derived", "full", "delta:reddit_user_subreddit_edges:1", False),
    ("graph", "before", "scratch:1", False),
    ("graph", "before", "delta:graph_edges:1", False),
    ("graph", "before", "committed:1", True),  # graph_edges without users and subreddits
    ("graph", "full", "committed:1", True),  # a new graph_edges beside the old users and subreddits
    ("graph", "full", "committed:2", True),  # new graph_edges and users, old subreddits
    ("graph", "full", "publish:users:1", True),  # inside users' commit: new graph_edges, old users
    ("images", "before", "encode:1", False),
    ("images", "before", "encode:3", False),  # two chunks appended
    ("images", "before", "committed:image_embeddings:2", False),
    ("images", "before", "commit:user_visual_profiles:1", False),
    ("images", "full", "delta:user_visual_profiles:1", False),
    ("train", "before", "batch:2", False),  # mid first epoch: nothing saved yet, training starts over
    ("train", "before", "epoch:1", False),
    ("train", "before", "batch:5", False),  # mid second epoch: resumes after the first
    ("train", "before", "state:2", False),  # second epoch's state written, not renamed over the first's
    ("train", "before", "epoch:3", False),  # the last epoch finished, its state not saved
    ("train", "before", "save:1", False),  # weights written, the checkpoint folder not renamed
    ("infer", "full", "chunk:2", False),
    # Embeddings and attention share a build id of their own (each commit records the graph build they came
    # from), so a kill between their commits leaves them disagreeing, and readers refuse the pair.
    ("infer", "full", "committed:user_embeddings:1", True),  # embeddings of a new run, attention of the old
    ("infer", "full", "delta:user_top_subreddits:1", True),  # the same, killed inside the second write
]
# Tables whose ids must agree before they are read together, and append-only tables (a killed run
# leaves whole chunks of them, which the next run keeps and completes).
BUILT_TOGETHER = [["reddit_comments", "reddit_comments_quarantine"],
                  ["reddit_submissions", "reddit_submissions_quarantine"],
                  ["users", "subreddits", "graph_edges"], ["user_embeddings", "user_top_subreddits"]]
BUILT_FROM_USERS = ["user_visual_profiles", "user_embeddings", "user_top_subreddits"]  # indexed by the graph's users
APPEND_ONLY = {"image_embeddings", "image_failures"}
VOLATILE = {"attempted_utc"}  # wall-clock times
FLOATS = {"embedding", "visual_embedding", "weight", "profile"}  # model outputs: compared to 1e-5


@dataclass
class Finished:
    returncode: int  # negative: killed by that signal
    stderr: str  # the run's output


class Driver:
    """faults_driver.py as a fork server: each run is its own process (SIGKILL ends only that run),
    forked from one that imported torch and DGL once."""

    def __init__(self, logs: Path):
        self.logs, self.runs = logs, 0
        # The kill points inside a local Delta commit need publish_kill_shim.c built and preloaded.
        self.publish_shim = logs / "publish_kill_shim.so"
        source = Path(__file__).with_name("publish_kill_shim.c")
        built = shutil.which("cc") and subprocess.run(["cc", "-shared", "-fPIC", "-O1", "-o", str(self.publish_shim),
                                                       str(source), "-ldl"], capture_output=True).returncode == 0
        preload = {"LD_PRELOAD": str(self.publish_shim)} if built else {}
        if not built:
            self.publish_shim = None
        self.server = subprocess.Popen(
            [sys.executable, "-m", "zipp_assets_tests.faults_driver", "--serve"],
            env={**os.environ, "DGLBACKEND": "pytorch", "OMP_NUM_THREADS": "1", **preload},
            cwd=Path(__file__).resolve().parents[1], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def run(self, lake_dir: Path | str, raw: Path, models: Path, scratch: Path, stage: str, kill: str | None = None,
            env: dict[str, str] | None = None) -> Finished:
        self.runs += 1
        log = self.logs / f"run{self.runs:03d}.log"
        argv = ["--lake", str(lake_dir), "--raw", str(raw), "--models", str(models), "--from", stage, "--only"]
        request = {"argv": argv + (["--kill", kill] if kill else []), "env": {"ZIPP_SCRATCH_DIR": str(scratch), **(env or {})},
                   "log": str(log), "timeout": 300}
        self.server.stdin.write(json.dumps(request) + "\n")
        self.server.stdin.flush()
        answer = self.server.stdout.readline()
        assert answer, f"the fork server died (exit {self.server.wait()})"
        return Finished(json.loads(answer)["returncode"], log.read_text(errors="replace"))

    def close(self) -> None:
        self.server.stdin.close()
        self.server.wait(timeout=30)


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    server = Driver(tmp_path_factory.mktemp("driver_logs"))
    yield server
    server.close()


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


def _partition_key(partition: dict | None) -> tuple:
    return tuple(sorted(partition.items())) if partition else ()


def _tables(root) -> set[str]:
    if root is None or (not lake.is_object_store(root) and not Path(root).exists()):
        return set()
    return set(lake.list_tables(root))


def _contents(root, table: str) -> dict[tuple, list[dict]]:
    """The rows of each partition of `table` that holds rows or was written empty (key () for a table
    without partitions); none where the table does not exist."""
    if table not in _tables(root):
        return {}
    snapshot = lake.open_table(root, table)
    if not snapshot.partition_columns:
        return {(): _rows(root, table)}
    return {_partition_key(p): _rows(root, table, p) for p in snapshot.partitions()}


_UNCHANGING: dict[tuple, dict] = {}  # contents of the uninterrupted run's lakes, which tests only copy


def _unchanging_contents(root, table: str) -> dict[tuple, list[dict]]:
    if root is None:
        return {}
    if (str(root), table) not in _UNCHANGING:
        _UNCHANGING[str(root), table] = _contents(root, table)
    return _UNCHANGING[str(root), table]


def _seen(root, table: str, key: tuple) -> list[dict] | None:
    """What a reader gets for one partition: its rows, or None where it was never written."""
    if table not in _tables(root):
        return None
    partition = dict(key) or None
    if partition is not None and not lake.open_table(root, table).has_partition(partition):
        return None
    return _rows(root, table, partition)


def _what_a_reader_sees(killed, reference, start=None) -> int:
    """Check every partition of every table that the lake the run started from (`start`, None when
    empty), the uninterrupted run's lake or the killed lake holds: each reads whole, as it was at the
    start or as the uninterrupted run left it (a partition missing or emptied where either holds rows
    fails). Return how many sets of tables that must agree were refused (not read mixed)."""
    for table in _tables(killed) | _tables(reference) | _tables(start):
        before, after = _unchanging_contents(start, table), _unchanging_contents(reference, table)
        killed_keys = set(_contents(killed, table)) if table in _tables(killed) else set()
        for key in set(before) | set(after) | killed_keys:
            seen = _seen(killed, table, key)
            allowed = [before.get(key), after.get(key)]
            if table in APPEND_ONLY:  # whole chunks, no duplicates, none lost
                rows = seen or []
                keys = [r["url_key"] for r in rows]
                assert len(keys) == len(set(keys)), table
                assert all(r in (after.get(key) or []) + (before.get(key) or []) for r in rows), table
                assert all(r in rows for r in before.get(key) or []), f"{table} {key} lost rows"
            else:
                assert any(seen is None and state is None or seen is not None and state is not None
                           and _same(seen, state) for state in allowed), \
                    f"{table} {dict(key)} is missing, emptied, partial or differs"
    refused = 0
    for tables in BUILT_TOGETHER:
        present = [t for t in tables if lake.table_exists(killed, t)] if _tables(killed) else []
        if present and len(present) < len(tables):
            refused += 1  # a reader of the set fails on the missing table
        elif present:
            try:
                lake.open_tables(killed, tables)
            except lake.BuildMismatch:
                refused += 1
    for derived in BUILT_FROM_USERS:  # computed from one build of the graph: that build, or refused
        if {derived, "users"} <= _tables(killed):
            snapshot = lake.open_table(killed, derived)
            for partition in snapshot.partitions() if snapshot.partition_columns else [None]:
                try:
                    lake.check_built_from(snapshot, partition, lake.open_table(killed, "users"))
                except lake.BuildMismatch:
                    refused += 1
    return refused


def _checkpoint_weights(models: Path) -> dict:
    from zipp_assets.encoder.checkpoint import latest_checkpoint, load_encoder

    return load_encoder(latest_checkpoint(models)).model.state_dict()


@dataclass
class Uninterrupted:
    raw: Path
    lake: Path  # the complete lake
    models: Path
    before: dict[str, Path]  # the lake before each stage
    tables_after: dict[str, set[str]]  # the tables there after each stage


@pytest.fixture(scope="module")
def uninterrupted(driver, tiny_world, tmp_path_factory) -> Uninterrupted:
    """The whole tiny pipeline run once without a kill, stage by stage, keeping the lake before each."""
    root = tmp_path_factory.mktemp("uninterrupted")
    run = Uninterrupted(tiny_world / "raw", root / "lake", root / "models", {}, {})
    for stage in STAGES:
        run.before[stage] = root / "before" / stage
        if run.lake.exists():
            shutil.copytree(run.lake, run.before[stage])
        done = driver.run(run.lake, run.raw, run.models, root / "scratch", stage)
        assert done.returncode == 0, done.stderr[-3000:]
    for i, stage in enumerate(STAGES):
        run.tables_after[stage] = set(lake.list_tables(run.before[STAGES[i + 1]] if i + 1 < len(STAGES) else run.lake))
    return run


def test_kill_points_cover_every_stage():
    assert len(KILL_POINTS) >= 20 and {point[0] for point in KILL_POINTS} == set(STAGES)
    assert len(set(KILL_POINTS)) == len(KILL_POINTS)


def test_the_reader_check_fails_on_a_month_emptied_or_lost_by_a_non_atomic_overwrite(tmp_path):
    """The check itself: a kill between the delete and the write of a non-atomic overwrite leaves a
    month empty; a reader check that looked only at partitions holding rows would pass it."""
    import pyarrow as pa
    from deltalake import DeltaTable

    reference = tmp_path / "reference"
    for month, xs in (("2019-01", [1, 2]), ("2019-02", [3])):
        lake.write_partition(reference, "t", pa.table({"x": xs}), {"month": month})
    lake.write_partition(reference, "u", pa.table({"y": [7]}))
    assert _what_a_reader_sees(reference, reference, reference) == 0
    killed = tmp_path / "killed"
    shutil.copytree(reference, killed)
    DeltaTable(str(killed / "t")).delete("month = '2019-01'")  # the delete of delete-then-write
    with pytest.raises(AssertionError, match="2019-01"):
        _what_a_reader_sees(killed, reference, reference)
    shutil.rmtree(killed / "u")  # a table the run started with, gone
    shutil.copytree(reference / "t", killed / "t", dirs_exist_ok=True)
    shutil.rmtree(killed / "t" / "_delta_log")
    shutil.copytree(reference / "t" / "_delta_log", killed / "t" / "_delta_log")
    with pytest.raises(AssertionError, match="u"):
        _what_a_reader_sees(killed, reference, reference)
    # From an empty lake, a run killed before it wrote a month leaves that month (or table) missing.
    fresh = tmp_path / "fresh"
    lake.write_partition(fresh, "t", pa.table({"x": [3]}), {"month": "2019-02"})
    assert _what_a_reader_sees(fresh, reference, None) == 0
    lake.write_partition(fresh, "t", pa.table({"x": [1]}), {"month": "2019-01"})  # half a month
    with pytest.raises(AssertionError, match="2019-01"):
        _what_a_reader_sees(fresh, reference, None)


def _start_lake(uninterrupted: Uninterrupted, stage: str, start: str) -> Path | None:
    """The lake a kill test starts from: "empty", "before" the stage, "after" it (the uninterrupted run's
    lake after this stage: the stage re-materializes over its own outputs) or "full" (the complete lake)."""
    after = uninterrupted.before[STAGES[STAGES.index(stage) + 1]] if stage != STAGES[-1] else uninterrupted.lake
    folder = {"full": uninterrupted.lake, "before": uninterrupted.before[stage], "after": after, "empty": None}[start]
    return folder if folder is not None and folder.exists() else None


def _killed_then_run_again(driver: Driver, uninterrupted: Uninterrupted, root, models: Path, scratch: Path, stage: str,
                           start: str, kill: str, leaves_mismatch: bool, env: dict[str, str] | None = None) -> None:
    """Kill the stage at `kill` over the lake at `root` (a folder or an s3:// URI, holding the start lake),
    check what a reader sees, run the stage again and compare every table with the uninterrupted run's."""
    reference = uninterrupted.lake
    killed = driver.run(root, uninterrupted.raw, models, scratch, stage, kill=kill, env=env)
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-2000:])
    # While the writer is dead: every partition reads whole, as before the run or as after it; sets
    # whose builds disagree are refused.
    refused = _what_a_reader_sees(root, reference, _start_lake(uninterrupted, stage, start))
    assert bool(refused) == leaves_mismatch, refused

    again = driver.run(root, uninterrupted.raw, models, scratch, stage, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    expected = set(lake.list_tables(reference)) if start == "full" else uninterrupted.tables_after[stage]
    assert set(lake.list_tables(root)) == expected
    for table in expected:
        assert _same(_rows(root, table), _rows(reference, table)), table
    for tables in BUILT_TOGETHER:
        if set(tables) <= expected:
            lake.open_tables(root, tables)  # agree again
    if stage == "infer":  # the pair again, of the graph build it was encoded from
        users = lake.open_table(root, "users")
        for table in ("user_embeddings", "user_top_subreddits"):
            lake.check_built_from(lake.open_table(root, table), None, users)


@pytest.mark.slow
@pytest.mark.parametrize(("stage", "start", "kill", "leaves_mismatch"), KILL_POINTS,
                         ids=[f"{stage}-{start}-{kill}" for stage, start, kill, _ in KILL_POINTS])
def test_killed_here_the_stage_recovers_and_readers_never_see_partial_or_mixed_tables(
        driver, uninterrupted, tmp_path, stage, start, kill, leaves_mismatch):
    if kill.split(":")[0] in ("publish", "published") and driver.publish_shim is None:
        pytest.skip("no C compiler to build publish_kill_shim.c")
    lake_dir, work_models, scratch = tmp_path / "lake", tmp_path / "models", tmp_path / "scratch"
    start_lake = _start_lake(uninterrupted, stage, start)
    if start_lake is not None:
        shutil.copytree(start_lake, lake_dir)
    work_models.mkdir()
    scratch.mkdir()
    if stage == "infer":
        shutil.copytree(uninterrupted.models, work_models, dirs_exist_ok=True)
    _killed_then_run_again(driver, uninterrupted, lake_dir, work_models, scratch, stage, start, kill, leaves_mismatch)
    if stage == "train":
        for (name, a), b in zip(_checkpoint_weights(uninterrupted.models).items(),
                                _checkpoint_weights(work_models).values()):
            assert np.allclose(a.numpy(), b.numpy(), atol=1e-5), name
        assert not list((work_models / "persona_encoder" / ".training").iterdir())  # resume state cleared
    assert not list(scratch.iterdir())  # the killed writer's scratch was swept


# --- A reader running beside a writer -----------------------------------------------------------

CONCURRENT_MONTH, STILL_MONTH = {"month": "2017-12"}, {"month": "2018-01"}
COMMENT_TABLES = ["reddit_comments", "reddit_comments_quarantine"]
GRAPH_TABLES = ["users", "subreddits", "graph_edges"]


def _rewrite_forever(lake_dir: str, dumps: list[str], keys: list[str]) -> None:
    """The writer: replace one month of comments (from one world's dumps, then the other's) and the
    graph tables (under one pseudonym key, then the other) over and over, until it is killed. It
    pauses after each commit, so a reader often lands between the commits of one set."""
    from zipp_assets.graph.tables import build_graph_tables
    from zipp_assets.reddit.ingest import ingest_month

    commit = lake._commit

    def slow_commit(*args, **kwargs):
        version = commit(*args, **kwargs)
        time.sleep(0.15)
        return version

    lake._commit = slow_commit

    for round_number in range(10**9):
        ingest_month(Path(lake_dir), Path(dumps[round_number % 2]), "comments", CONCURRENT_MONTH["month"])
        build_graph_tables(Path(lake_dir), keys[round_number % 2].encode())
        print(f"round {round_number}", flush=True)


def _fingerprint(table) -> str:
    rows = sorted(json.dumps(r, sort_keys=True, default=str) for r in table.to_pylist())
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def _read_comments(root, partition) -> tuple[str, str]:
    snapshots = lake.open_tables(root, COMMENT_TABLES, [partition])
    return tuple(_fingerprint(snapshots[t].read([partition])) for t in COMMENT_TABLES)


def _read_graph(root) -> tuple[str, str, str]:
    snapshots = lake.open_tables(root, GRAPH_TABLES)
    return tuple(_fingerprint(snapshots[t].read()) for t in GRAPH_TABLES)


@pytest.mark.slow
def test_a_reader_beside_a_writer_sees_whole_old_or_new_versions_never_a_mix(tiny_world, tmp_path, monkeypatch):
    """While a writer process replaces a month (predicate overwrite of rows and quarantine) and the
    three graph tables again and again, with contents that differ every other round, a reader reads
    them in a loop: each read is, whole, the old or the new version, and another month never moves."""
    from zipp_assets.graph.tables import build_graph_tables
    from zipp_assets.reddit.derived import build_user_subreddit_edges
    from zipp_assets.reddit.ingest import ingest_month
    from zipp_assets.simworld.world import WorldConfig, generate_world

    other_world = tmp_path / "other_world"  # another world's comments for the same month
    generate_world(WorldConfig(users=60, months=(CONCURRENT_MONTH["month"],), seed=11), other_world / "raw",
                   other_world / "truth")
    dumps, keys = [str(tiny_world / "raw" / "reddit"), str(other_world / "raw" / "reddit")], ["key-a", "key-b"]
    root = tmp_path / "lake"
    monkeypatch.setenv("ZIPP_SCRATCH_DIR", str(tmp_path / "scratch"))  # the writer's too
    # This reader does not wait for a set to agree: landing between a set's commits and being refused
    # there is what it looks for (the wait itself: test_lake's test_a_reader_between_a_writers_two_commits...).
    monkeypatch.setattr(lake, "MIXED_BUILD_WAIT_SECONDS", 0.0)
    for month in (STILL_MONTH["month"], CONCURRENT_MONTH["month"]):
        for kind in ("comments", "submissions"):
            ingest_month(root, Path(dumps[0]), kind, month)
        build_user_subreddit_edges(root, month)
    still = _read_comments(root, STILL_MONTH)
    versions = {"comments": [], "graph": []}  # what each of the writer's two rounds leaves
    for side in (0, 1):
        ingest_month(root, Path(dumps[side]), "comments", CONCURRENT_MONTH["month"])
        build_graph_tables(root, keys[side].encode())
        versions["comments"].append(_read_comments(root, CONCURRENT_MONTH))
        versions["graph"].append(_read_graph(root))
    assert versions["comments"][0] != versions["comments"][1] and versions["graph"][0] != versions["graph"][1]
    # Each table of a set on its own, too: a partial write would show as a third fingerprint.
    single = {t: {v[i] for v in versions["graph"]} for i, t in enumerate(GRAPH_TABLES)}

    writer = subprocess.Popen(
        [sys.executable, "-c", "import sys; from zipp_assets_tests.test_faults import _rewrite_forever; "
         "_rewrite_forever(sys.argv[1], sys.argv[2:4], sys.argv[4:6])", str(root), *dumps, *keys],
        env={**os.environ, "DGLBACKEND": "pytorch"},
        cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = {"comments": set(), "graph": set()}
    reads = refused = rewrites = 0
    first_version = lake.open_table(root, "users").version
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and writer.poll() is None:
            for name, read in (("comments", lambda: _read_comments(root, CONCURRENT_MONTH)),
                               ("graph", lambda: _read_graph(root))):
                try:
                    got = read()
                except lake.BuildMismatch:
                    refused += 1  # between the commits of one set: refused, never mixed
                    continue
                assert got in versions[name], f"{name}: a read mixed versions or saw a partial one"
                seen[name].add(got)
                reads += 1
            for i, table in enumerate(GRAPH_TABLES):
                assert _fingerprint(lake.read_table(root, table)) in single[table], table
            assert _read_comments(root, STILL_MONTH) == still  # replacing one month never moves another
            rewrites = lake.open_table(root, "users").version - first_version
            if rewrites >= 4 and all(len(s) == 2 for s in seen.values()):
                break
    finally:
        writer.kill()  # SIGKILL, wherever it is
        output, errors = writer.communicate()
    assert writer.returncode == -signal.SIGKILL, errors[-3000:]
    assert rewrites >= 4 and all(len(s) == 2 for s in seen.values()), (rewrites, seen, output, errors[-2000:])
    assert refused >= 1  # the reader did land between a set's commits, and was refused there
    # Killed mid-loop, it leaves each table whole too.
    assert all(_fingerprint(lake.read_table(root, t)) in single[t] for t in GRAPH_TABLES)
    print(f"\n{reads} consistent reads ({refused} refused between a set's commits) over {rewrites} rewrites")


# --- Killed inside delta-rs's requests to an S3 lake -------------------------------------------

# (stage, lake it starts from as in KILL_POINTS, or "after" = the uninterrupted run's lake after this
# stage, which it re-materializes; kill spec; leaves a set of tables whose builds disagree).
# s3put, s3commit and s3committed fall inside delta-rs's write and commit (see faults_driver.py); a
# table's first log entry in a lake without it is its empty creation.
S3_KILL_POINTS_ALL = [
    ("ingest", "empty", "s3put:reddit_comments:1", False),  # a data file's upload never reaches the store
    ("ingest", "empty", "s3commit:reddit_comments:2", False),  # the first rows' log entry never reaches it
    ("ingest", "empty", "s3committed:reddit_comments:2", True),  # stored, then killed: rows without their quarantine
    ("ingest", "after", "s3commit:reddit_submissions_quarantine:2", True),  # 2018-01's rows new, its quarantine old
    # The graph tables (graph_edges, users, subreddits, one commit each).
    ("graph", "before", "s3put:graph_edges:1", False),
    ("graph", "before", "s3committed:graph_edges:2", True),  # graph_edges stored, users and subreddits never made
    ("graph", "after", "s3commit:users:1", True),  # rebuilt: new graph_edges, users' entry never stored
    ("graph", "after", "s3committed:subreddits:1", False),  # all three stored, delta-rs never heard back
    # The user embeddings and attention pair (its own build id, of the graph's build).
    ("infer", "full", "s3committed:user_embeddings:1", True),  # new embeddings, old attention
    ("infer", "full", "s3put:user_top_subreddits:1", True),  # the same, killed uploading the attention
]
# About a minute each against moto: the suite runs one of each kind per stage (an upload lost, a commit stored
# unheard) on both sides of a set's commits; ZIPP_ALL_KILL_POINTS=1 runs every one.
S3_KILL_POINTS = S3_KILL_POINTS_ALL if os.environ.get("ZIPP_ALL_KILL_POINTS") == "1" else [
    point for point in S3_KILL_POINTS_ALL if point[2] in (
        "s3put:reddit_comments:1", "s3committed:reddit_comments:2", "s3committed:graph_edges:2",
        "s3committed:subreddits:1", "s3committed:user_embeddings:1")]


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    """A moto S3 server on loopback with one bucket; the AWS_* variables the lake reads point at it
    (in this process and in the driver's runs, which go through their own proxy)."""
    with pytest.MonkeyPatch.context() as patch, moto_s3(tmp_path_factory.mktemp("moto") / "moto.log", patch) as server:
        yield server


def test_s3_kill_points_cover_a_stage_after_ingestion_and_both_sides_of_each_sets_commits():
    assert {point[0] for point in S3_KILL_POINTS} >= {"ingest", "graph", "infer"}
    assert len(set(S3_KILL_POINTS)) == len(S3_KILL_POINTS)
    for stage in ("graph", "infer"):
        assert {mismatch for st, _, _, mismatch in S3_KILL_POINTS if st == stage} == ({True, False} if stage == "graph"
                                                                                     else {True})


@pytest.mark.slow
@pytest.mark.parametrize(("stage", "start", "kill", "leaves_mismatch"), S3_KILL_POINTS,
                         ids=[f"{stage}-{start}-{kill}" for stage, start, kill, _ in S3_KILL_POINTS])
def test_killed_inside_an_s3_request_the_stage_recovers_and_readers_never_see_partial_or_mixed_tables(
        driver, uninterrupted, s3_server, tmp_path, stage, start, kill, leaves_mismatch):
    prefix = f"killed-{tmp_path.name}/lake"
    start_lake = _start_lake(uninterrupted, stage, start)
    if start_lake is not None:
        upload(s3_server.client, start_lake, prefix)
    scratch, models = tmp_path / "scratch", tmp_path / "models"
    scratch.mkdir()
    models.mkdir()
    if stage == "infer":
        shutil.copytree(uninterrupted.models, models, dirs_exist_ok=True)
    driver_env = {**s3_server.env, "ZIPP_FAULTS_S3_UPSTREAM": s3_server.endpoint}
    _killed_then_run_again(driver, uninterrupted, f"s3://{BUCKET}/{prefix}", models, scratch, stage, start, kill,
                           leaves_mismatch, driver_env)
