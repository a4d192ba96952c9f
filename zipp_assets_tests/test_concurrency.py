"""Writers at once: two processes writing one lake table, and two Dagster runs of one month on an
instance stored in a real PostgreSQL server (what production runs; `dagster.yaml` admits two runs)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
import yaml

from zipp_assets import lake
from zipp_assets_tests.postgres_server import find_bin_dir, running_postgres

ROOT = Path(__file__).resolve().parents[1]


def _start_together(tmp_path: Path, argvs: list[list[str]], env: dict | None = None) -> list[dict]:
    """Run the driver once per argv, all at once, meeting at one barrier before their first write."""
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    processes = [subprocess.Popen([sys.executable, "-m", "zipp_assets_tests.concurrency_driver", argv[0], argv[1],
                                   str(barrier), str(len(argvs)), *argv[2:]],
                                  cwd=ROOT, env=env or os.environ.copy(), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for argv in argvs]
    outcomes = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-3000:]
        outcomes.append(json.loads(out.strip().splitlines()[-1]))
    return outcomes


@pytest.mark.slow
@pytest.mark.parametrize("where", ["2019-01", "table"])
def test_two_first_writers_of_a_new_table_leave_one_writers_rows_and_the_other_fails_clearly(tmp_path, where):
    """Both find no table and write at once. delta-rs used to commit both (4 rows under one build id).
    For a month, a third writer of another month commits beside them."""
    root = tmp_path / "lake"
    writers = [["lake", str(root), "1", where], ["lake", str(root), "2", where]]
    if where != "table":
        writers.append(["lake", str(root), "3", "2019-02"])
    outcomes = _start_together(tmp_path, writers)
    winners = [o for o in outcomes[:2] if "version" in o]
    losers = [o for o in outcomes[:2] if "error" in o]
    assert len(winners) == 1 and len(losers) == 1, outcomes
    dataset, partition = ("w", None) if where == "table" else ("d", {"month": where})
    table = lake.open_table(root, dataset)
    tag = winners[0]["tag"]
    assert sorted(table.read([partition] if partition else None)["x"].to_pylist()) == [10 * tag, 10 * tag + 1]
    assert table.build_id(partition) == winners[0]["build_id"]
    assert "another writer committed it" in losers[0]["error"] and "were not committed" in losers[0]["error"]
    if where != "table":
        assert "version" in outcomes[2], outcomes[2]
        assert sorted(table.read([{"month": "2019-02"}])["x"].to_pylist()) == [30, 31]
        assert table.build_id({"month": "2019-02"}) == 1003


def test_a_build_that_began_before_another_writer_committed_its_month_fails_and_commits_nothing(tmp_path):
    lake.write_partition(tmp_path, "rows", pa.table({"x": [0]}), {"month": "2019-01"}, build_id=1)
    with pytest.raises(lake.ConcurrentWrite, match=r"rows month=2019-01: another writer committed it .* build "
                                                  r"0000000000000002"):
        with lake.build(tmp_path, build_id=3) as late:
            lake.write_table(late.partition("rows", {"month": "2019-01"}), pa.table({"x": [3]}))
            lake.write_table(late.partition("rows_quarantine", {"month": "2019-01"}), pa.table({"x": [3]}))
            # another run commits the month while this build is still being written
            lake.write_partition(tmp_path, "rows", pa.table({"x": [2]}), {"month": "2019-01"}, build_id=2)
    table = lake.open_table(tmp_path, "rows")
    assert table.read()["x"].to_pylist() == [2] and table.build_id({"month": "2019-01"}) == 2
    assert not lake.table_exists(tmp_path, "rows_quarantine")  # the build stopped at its first table
    # a build of another month beside it commits
    with lake.build(tmp_path, build_id=4) as other:
        lake.write_table(other.partition("rows", {"month": "2019-02"}), pa.table({"x": [4]}))
        lake.write_partition(tmp_path, "rows", pa.table({"x": [5]}), {"month": "2019-03"}, build_id=5)
    assert lake.open_table(tmp_path, "rows").build_id({"month": "2019-02"}) == 4


def _interleave_two_builds(root: Path, monkeypatch, commit_on_top=None) -> tuple[str, str]:
    """Build A (id 1) and build B (id 2) write the set (edges, users) in this order: A commits edges;
    B begins (so it finds A's edges and the old users); B commits edges; A commits users; B's users
    then lose to A's. `commit_on_top(root)` runs right after B's edges commit. Returns each build's
    outcome ("ok" or its error)."""
    import threading

    real_commit = lake._commit
    done = {(1, "edges"): threading.Event(), (2, "edges"): threading.Event(), (1, "users"): threading.Event()}
    waits = {(1, "users"): (2, "edges"), (2, "users"): (1, "users")}

    def commit(root_, dataset, data, partition, mode, build_id, base, built_from=None):
        if (build_id, dataset) in waits:
            assert done[waits[build_id, dataset]].wait(60)
        try:
            return real_commit(root_, dataset, data, partition, mode, build_id, base, built_from)
        finally:
            if (build_id, dataset) == (2, "edges") and commit_on_top is not None:
                commit_on_top(root_)
            if (build_id, dataset) in done:
                done[build_id, dataset].set()

    monkeypatch.setattr(lake, "_commit", commit)
    outcomes = {}

    def run(build: lake.Build, name: str) -> None:
        try:
            build.commit()
            outcomes[name] = "ok"
        except Exception as error:  # noqa: BLE001 - the outcome is what the test reads
            outcomes[name] = f"{type(error).__name__}: {error}"
        finally:
            build.discard()

    a = lake.Build(root, build_id=1)
    for dataset in ("edges", "users"):
        lake.write_table(a.partition(dataset), pa.table({"x": [1]}))
    first = threading.Thread(target=run, args=(a, "A"))
    first.start()
    assert done[1, "edges"].wait(60)
    b = lake.Build(root, build_id=2)  # begins inside A's commits: it finds A's edges, the old users
    for dataset in ("edges", "users"):
        lake.write_table(b.partition(dataset), pa.table({"x": [2]}))
    second = threading.Thread(target=run, args=(b, "B"))
    second.start()
    first.join(120)
    second.join(120)
    return outcomes["A"], outcomes["B"]


def test_a_build_that_loses_a_later_table_undoes_its_earlier_commits_so_the_set_stays_whole(tmp_path, monkeypatch):
    """B began between A's commits, committed its edges, then lost the users to A. Without the undo
    the lake kept B's edges with A's users, refused by every reader until someone rebuilt it."""
    root = tmp_path / "lake"
    with lake.build(root, build_id=9) as old:
        for dataset in ("edges", "users"):
            lake.write_table(old.partition(dataset), pa.table({"x": [9]}))
    a, b = _interleave_two_builds(root, monkeypatch)
    assert a == "ok"
    assert b.startswith("ConcurrentWrite: users (whole table): another writer committed it") and "Undone, restored" in b, b
    tables = lake.open_tables(root, ["edges", "users"], wait_seconds=0)  # no BuildMismatch: the set is A's
    assert tables["edges"].build_id() == tables["users"].build_id() == 1
    assert tables["edges"].read()["x"].to_pylist() == tables["users"].read()["x"].to_pylist() == [1]
    history = [entry.get("zipp.undone_build") for entry in lake.open_table(root, "edges")._table.history(1)]
    assert history == [lake.format_build(2)]  # the restore says whose commit it undid


def test_a_commit_that_another_writer_built_on_is_not_undone_and_the_set_is_refused(tmp_path, monkeypatch):
    root = tmp_path / "lake"
    with lake.build(root, build_id=9) as old:
        for dataset in ("edges", "users"):
            lake.write_table(old.partition(dataset), pa.table({"x": [9]}))

    def third_writer(root_):  # commits the edges again right after B's
        lake.write_partition(root_, "edges", pa.table({"x": [3]}), build_id=3)

    a, b = _interleave_two_builds(root, monkeypatch, commit_on_top=third_writer)
    assert a == "ok" and "Not undone: edges (version" in b and "committed on top of it" in b, b
    assert lake.open_table(root, "edges").build_id() == 3  # the third writer's commit stays
    with pytest.raises(lake.BuildMismatch):
        lake.open_tables(root, ["edges", "users"], wait_seconds=0)


def test_a_table_only_created_is_not_a_table_yet(tmp_path):
    """The empty commit that creates a table is never read as an empty table (a writer killed after it)."""
    lake._create_if_absent(tmp_path, "made", pa.schema([("x", pa.int64())]), [])
    assert not lake.table_exists(tmp_path, "made") and lake.list_tables(tmp_path) == []
    assert "made" in lake.vacuum(tmp_path, retention_hours=1, longest_run_hours=0)  # a killed first writer's files still go
    with pytest.raises(lake.TableNotFound, match="materialize it first"):
        lake.read_table(tmp_path, "made")
    lake.write_partition(tmp_path, "made", pa.table({"x": [1]}))
    assert lake.read_table(tmp_path, "made")["x"].to_pylist() == [1]


# ---------------------------------------------------------------------------------------------
# Dagster runs on a PostgreSQL instance


@pytest.fixture(scope="module")
def postgres():
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL's server binaries (initdb, pg_ctl) are missing: install Debian's `postgresql` "
                    "package (.ci/run does) to run the Dagster concurrency tests on a real PostgreSQL")
    with running_postgres(bin_dir) as server:
        yield server


def postgres_instance_home(folder: Path, server, database: str) -> tuple[Path, dict[str, str]]:
    """A DAGSTER_HOME whose dagster.yaml is the project's with its storage in PostgreSQL (credentials
    from the environment, as in production), and the environment that fills them in."""
    import psycopg2

    admin = psycopg2.connect(host=server.host, port=server.port, user=server.username, password=server.password,
                             dbname=server.db_name)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {database}")
    admin.close()
    config = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    config["storage"] = {"postgres": {"postgres_db": {
        "hostname": {"env": "DAGSTER_PG_HOST"}, "port": {"env": "DAGSTER_PG_PORT"},
        "username": {"env": "DAGSTER_PG_USERNAME"}, "password": {"env": "DAGSTER_PG_PASSWORD"},
        "db_name": {"env": "DAGSTER_PG_DB"},
        # SQLAlchemy 2.1 defaults to psycopg 3; the lock installs psycopg2 (with dagster-postgres)
        "scheme": "postgresql+psycopg2"}}}
    home = folder / "dagster_home"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    env = {"DAGSTER_HOME": str(home), "DAGSTER_PG_HOST": server.host, "DAGSTER_PG_PORT": str(server.port),
           "DAGSTER_PG_USERNAME": server.username, "DAGSTER_PG_PASSWORD": server.password,
           "DAGSTER_PG_DB": database}
    return home, env


@pytest.mark.slow
def test_two_runs_of_one_month_on_a_postgres_instance_leave_one_runs_rows(postgres, tiny_world, tmp_path,
                                                                          monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    (data / "raw").symlink_to(tiny_world / "raw")
    home, instance_env = postgres_instance_home(tmp_path, postgres, "two_runs")
    env = {**os.environ, **instance_env, "ZIPP_DATA_DIR": str(data), "PYTHONPATH": str(ROOT)}
    outcomes = _start_together(tmp_path, [["run", str(home), "2018-01"], ["run", str(home), "2018-01"]], env)

    comments = lake.open_table(data / "lake", "reddit_comments")
    ids = comments.read([{"month": "2018-01"}], columns=["id"])["id"].to_pylist()
    assert ids and len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} rows twice"
    lake.open_tables(data / "lake", ["reddit_comments", "reddit_comments_quarantine"])  # one build
    winners = [o for o in outcomes if o["success"]]
    losers = [o for o in outcomes if not o["success"]]
    assert len(winners) == 1 and len(losers) == 1, outcomes
    assert "another writer committed it" in losers[0]["error"]

    for key, value in instance_env.items():
        monkeypatch.setenv(key, value)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        statuses = {r.run_id: r.status for r in instance.get_runs()}
        assert statuses == {winners[0]["run_id"]: dg.DagsterRunStatus.SUCCESS,
                            losers[0]["run_id"]: dg.DagsterRunStatus.FAILURE}
        event = instance.get_latest_materialization_event(dg.AssetKey("reddit_comments"))
        assert event.run_id == winners[0]["run_id"]
        assert event.asset_materialization.metadata["rows_out"].value == len(ids)


@pytest.mark.slow
def test_a_backfill_while_the_raw_dump_sensor_fires_on_a_postgres_instance(postgres, tiny_world, tmp_path,
                                                                          monkeypatch):
    """A backfill of both months and the runs the raw-dump sensor requests for them write the same
    months at once: every month keeps one run's rows, tables built together agree, and a run that
    lost fails naming the conflict. All runs are recorded in PostgreSQL."""
    data = tmp_path / "data"
    (data / "raw").mkdir(parents=True)
    shutil.copytree(tiny_world / "raw" / "reddit", data / "raw" / "reddit")
    (data / "raw" / "images").symlink_to(tiny_world / "raw" / "images")
    settled = time.time() - 3600  # copied in an hour ago: the sensor does not wait for them to settle
    for dump in (data / "raw" / "reddit").rglob("*.zst"):
        os.utime(dump, (settled, settled))
    home, instance_env = postgres_instance_home(tmp_path, postgres, "backfill_and_sensor")
    env = {**os.environ, **instance_env, "ZIPP_DATA_DIR": str(data), "PYTHONPATH": str(ROOT),
           "ZIPP_QUARANTINE_MAX_FRACTION": "0.01"}
    backfill, sensor = _start_together(tmp_path, [["backfill", str(home), "2017-12", "2018-01"],
                                                  ["sensor", str(home)]], env)
    runs = backfill + sensor
    assert len(sensor) == 2 and any(r["success"] for r in runs), runs
    for run in runs:
        assert run["success"] or "another writer committed it" in run["error"], run
    assert not all(r["success"] for r in runs), "the two sides never wrote one month at once"

    root = data / "lake"
    for dataset, key in (("reddit_comments", "id"), ("reddit_submissions", "id")):
        if lake.table_exists(root, dataset):
            table = lake.open_table(root, dataset)
            for partition in table.partitions():
                ids = table.read([partition], columns=[key])[key].to_pylist()
                assert len(ids) == len(set(ids)), f"{dataset} {partition}: {len(ids) - len(set(ids))} rows twice"
    for tables in (["reddit_comments", "reddit_comments_quarantine"],
                   ["reddit_submissions", "reddit_submissions_quarantine"]):
        if all(lake.table_exists(root, t) for t in tables):
            lake.open_tables(root, tables)  # one build per month, never a mix

    for key, value in instance_env.items():
        monkeypatch.setenv(key, value)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        recorded = {r.run_id: r for r in instance.get_runs()}
        assert set(recorded) == {r["run_id"] for r in runs}
        for run in runs:
            expected = dg.DagsterRunStatus.SUCCESS if run["success"] else dg.DagsterRunStatus.FAILURE
            assert recorded[run["run_id"]].status == expected
        assert {recorded[r["run_id"]].tags.get("dagster/sensor_name") for r in sensor} == {"new_reddit_dumps"}
