import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from zipp_assets import lake


def _write_month(root, month: str, values: list[int], dataset: str = "d", build_id: int | None = None) -> None:
    with lake.atomic_partition(root, dataset, {"month": month}, build_id=build_id) as folder:
        lake.write_table(folder, pa.table({"x": pa.array(values, pa.int64())}))


def _rows(root, dataset: str = "d") -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for row in lake.read_table(root, dataset).to_pylist():
        out.setdefault(row["month"], []).append(row["x"])
    return {k: sorted(v) for k, v in sorted(out.items())}


def test_predicate_overwrite_replaces_one_month_only_in_one_commit(tmp_path):
    _write_month(tmp_path, "2019-01", [1, 2, 3])
    _write_month(tmp_path, "2019-02", [7])
    before = lake.open_table(tmp_path, "d").version
    _write_month(tmp_path, "2019-01", [4, 5])
    table = lake.open_table(tmp_path, "d")
    assert _rows(tmp_path) == {"2019-01": [4, 5], "2019-02": [7]}
    assert table.version == before + 1 and table.partition_columns == ["month"]
    assert table.read([{"month": "2019-02"}], columns=["x"]).to_pylist() == [{"x": 7}]


def test_rerun_replaces_never_duplicates(tmp_path):
    for _ in range(3):
        _write_month(tmp_path, "2019-01", [1, 2])
        lake.write_partition(tmp_path, "g", pa.table({"y": ["a", "b"]}))
    assert _rows(tmp_path) == {"2019-01": [1, 2]}
    assert lake.read_table(tmp_path, "g")["y"].to_pylist() == ["a", "b"]


def test_a_reader_keeps_its_version_while_a_writer_overwrites(tmp_path):
    _write_month(tmp_path, "2019-01", [1, 2, 3])
    reader = lake.open_table(tmp_path, "d")
    dataset = reader.to_dataset()  # as a running query would hold it
    _write_month(tmp_path, "2019-01", [9])
    assert sorted(reader.read()["x"].to_pylist()) == [1, 2, 3]
    assert sorted(dataset.to_table()["x"].to_pylist()) == [1, 2, 3]
    assert sorted(lake.open_table(tmp_path, "d", version=reader.version).read()["x"].to_pylist()) == [1, 2, 3]
    assert lake.read_table(tmp_path, "d")["x"].to_pylist() == [9]


def test_a_failed_write_leaves_the_previous_version_current(tmp_path):
    _write_month(tmp_path, "2019-01", [1])
    version = lake.open_table(tmp_path, "d").version
    with pytest.raises(RuntimeError, match="killed half way"):
        with lake.atomic_partition(tmp_path, "d", {"month": "2019-01"}) as folder:
            lake.write_table(folder, pa.table({"x": [9, 9, 9]}))
            raise RuntimeError("killed half way")
    # A commit that Delta refuses (a column changes type) fails whole, too.
    with pytest.raises(Exception, match="(?i)cast"):
        with lake.atomic_partition(tmp_path, "d", {"month": "2019-01"}) as folder:
            lake.write_table(folder, pa.table({"x": ["not a number"]}))
    assert lake.open_table(tmp_path, "d").version == version
    assert _rows(tmp_path) == {"2019-01": [1]}


def test_a_killed_writer_leaves_the_previous_version_and_its_files_are_vacuumed(tmp_path):
    root = tmp_path / "lake"
    _write_month(root, "2019-01", [1])
    version = lake.open_table(root, "d").version
    script = (
        "import os, pyarrow as pa\n"
        "from zipp_assets import lake\n"
        f"with lake.atomic_partition({str(root)!r}, 'd', {{'month': '2019-01'}}) as folder:\n"
        "    lake.write_table(folder, pa.table({'x': pa.array([5, 6], pa.int64())}))\n"
        "    os._exit(9)\n"  # killed before the commit
    )
    env = {**os.environ, "ZIPP_SCRATCH_DIR": str(tmp_path / "scratch")}
    assert subprocess.run([sys.executable, "-c", script], env=env).returncode == 9
    assert lake.open_table(root, "d").version == version and _rows(root) == {"2019-01": [1]}
    stray = root / "d" / "month=2019-01" / "part-stray.parquet"  # what a writer killed inside the commit leaves
    pq.write_table(pa.table({"x": [5]}), stray)
    os.utime(stray, (1, 1))
    assert _rows(root) == {"2019-01": [1]}  # never referenced, never read
    lake.vacuum(root, retention_hours=1, longest_run_hours=0)  # no writer running
    assert not stray.exists() and _rows(root) == {"2019-01": [1]}


def test_a_first_commit_killed_mid_write_leaves_no_table_and_its_files_go_with_the_next_vacuum(tmp_path):
    # delta-rs had flushed data files of a new table when its writer died: no log, so no table
    orphan = tmp_path / "d" / "month=2019-01" / "part-00003-0d5c3e0e-5a47-4b5c-9d3a-3c3a0e6f1b2a-c000.zstd.parquet"
    orphan.parent.mkdir(parents=True)
    pq.write_table(pa.table({"x": [9]}), orphan)
    os.utime(orphan, (1, 1))
    assert not lake.table_exists(tmp_path, "d")
    _write_month(tmp_path, "2019-01", [1])  # not mistaken for a pre-Delta folder
    assert _rows(tmp_path) == {"2019-01": [1]}
    lake.vacuum(tmp_path, retention_hours=1, longest_run_hours=0)  # no writer running
    assert not orphan.exists() and _rows(tmp_path) == {"2019-01": [1]}


def test_a_table_whose_first_commit_was_killed_before_it_was_published_is_not_listed(tmp_path):
    # delta-rs stages a commit's log entry as `N.json#k` and publishes it with a link: killed between
    # the two, the folder has data files and a log folder, but no version.
    staged = tmp_path / "d" / "_delta_log" / "00000000000000000000.json#1"
    staged.parent.mkdir(parents=True)
    staged.write_text('{"commitInfo": {}}\n')
    pq.write_table(pa.table({"x": [9]}), tmp_path / "d" / "part-00000.parquet")
    assert lake.list_tables(tmp_path) == [] and not lake.table_exists(tmp_path, "d")
    _write_month(tmp_path, "2019-01", [1])  # the next writer makes version 0
    assert lake.list_tables(tmp_path) == ["d"] and _rows(tmp_path) == {"2019-01": [1]}


def test_vacuum_removes_unreferenced_files_older_than_the_retention_and_keeps_the_current_version(tmp_path):
    _write_month(tmp_path, "2019-01", [1])
    old_files = set(lake.open_table(tmp_path, "d").file_uris())
    _write_month(tmp_path, "2019-01", [2])
    _write_month(tmp_path, "2019-02", [3])
    current = set(lake.open_table(tmp_path, "d").file_uris())
    assert lake.vacuum(tmp_path, retention_hours=24, longest_run_hours=0) == {"d": []}  # removed only minutes ago: kept
    assert all(Path(f).exists() for f in old_files)
    assert lake.read_table(tmp_path, "d", columns=["x"]).num_rows == 2
    removed = lake.vacuum(tmp_path, retention_hours=0, longest_run_hours=0)  # no writer running
    assert {str(tmp_path / "d" / f) for f in removed["d"]} == old_files
    assert not any(Path(f).exists() for f in old_files) and all(Path(f).exists() for f in current)
    assert _rows(tmp_path) == {"2019-01": [2], "2019-02": [3]}
    with pytest.raises(ValueError):
        lake.vacuum(tmp_path, retention_hours=-1, longest_run_hours=0)


def test_vacuum_refuses_a_retention_shorter_than_the_longest_run(tmp_path):
    from zipp_assets.settings import load_settings

    _write_month(tmp_path, "2019-01", [1])
    # What a writer leaves in the table before its commit: a data file no version references yet.
    in_flight = tmp_path / "d" / "month=2019-02" / "part-00000-in-flight.zstd.parquet"
    in_flight.parent.mkdir()
    pq.write_table(pa.table({"x": [7]}), in_flight)
    os.utime(in_flight, (time.time() - 3600, time.time() - 3600))  # its run started an hour ago
    for retention in (0, 1, lake.LONGEST_RUN_HOURS - 1):
        with pytest.raises(ValueError, match="shorter than the longest run"):
            lake.vacuum(tmp_path, retention_hours=retention)
    assert in_flight.exists()
    assert lake.vacuum(tmp_path, retention_hours=lake.LONGEST_RUN_HOURS) == {"d": []} and in_flight.exists()
    with pytest.raises(ValueError, match="shorter than the longest run"):
        lake.vacuum(tmp_path, retention_hours=48, longest_run_hours=72)
    # Only a caller that knows no writer is running may go below it (as the tests do).
    assert lake.vacuum(tmp_path, retention_hours=0, longest_run_hours=0) == {"d": ["month=2019-02/" + in_flight.name]}
    with pytest.raises(ValueError, match="ZIPP_LONGEST_RUN_HOURS"):
        load_settings({"ZIPP_DATA_DIR": str(tmp_path), "ZIPP_LAKE_RETENTION_HOURS": "0"})
    with pytest.raises(ValueError, match="ZIPP_LONGEST_RUN_HOURS"):
        load_settings({"ZIPP_DATA_DIR": str(tmp_path), "ZIPP_LONGEST_RUN_HOURS": "a day"})
    settings = load_settings({"ZIPP_DATA_DIR": str(tmp_path), "ZIPP_LAKE_RETENTION_HOURS": "2",
                              "ZIPP_LONGEST_RUN_HOURS": "2"})
    assert (settings.lake_retention_hours, settings.longest_run_hours) == (2, 2)


def test_a_partition_that_was_never_written_is_an_error_and_an_empty_one_is_a_partition(tmp_path):
    _write_month(tmp_path, "2019-01", [1])
    _write_month(tmp_path, "2019-02", [])
    table = lake.open_table(tmp_path, "d")
    assert table.has_partition({"month": "2019-02"}) and lake.partition_exists(tmp_path, "d", {"month": "2019-02"})
    assert table.read([{"month": "2019-02"}]).num_rows == 0
    assert not lake.partition_exists(tmp_path, "d", {"month": "2019-03"})
    with pytest.raises(lake.PartitionNotFound, match="month=2019-03"):
        table.read([{"month": "2019-01"}, {"month": "2019-03"}])
    with pytest.raises(lake.TableNotFound, match="nothing_here"):
        lake.read_table(tmp_path, "nothing_here")
    assert not lake.partition_exists(tmp_path, "nothing_here", {"month": "2019-01"})


def test_tables_built_together_share_a_build_id_and_a_mismatch_names_the_tables(tmp_path):
    with lake.build(tmp_path) as together:
        lake.write_table(together.partition("users"), pa.table({"user_index": [0, 1]}))
        lake.write_table(together.partition("graph_edges"), pa.table({"user_index": [0, 1, 1]}))
    tables = lake.open_tables(tmp_path, ["users", "graph_edges"])
    assert tables["users"].build_id() == tables["graph_edges"].build_id() == together.build_id
    # graph_edges rebuilt alone, as if the writer of both had died between its two commits
    lake.write_partition(tmp_path, "graph_edges", pa.table({"user_index": [0, 1, 2]}))
    with pytest.raises(lake.BuildMismatch, match=r"users \(version 1\) has build .*, graph_edges \(version 2\) has build"):
        lake.open_tables(tmp_path, ["users", "graph_edges"])


def test_a_reader_between_a_writers_two_commits_waits_for_the_second(tmp_path, monkeypatch):
    """Two operators at once: a run reads a month while another run is between the commits of its
    rows and its quarantine. The reader waits for the set to agree instead of failing."""
    import threading

    with lake.build(tmp_path) as first:
        lake.write_table(first.partition("users"), pa.table({"user_index": [0]}))
        lake.write_table(first.partition("graph_edges"), pa.table({"user_index": [0]}))
    between = threading.Event()
    original = lake._commit

    def slow_second_commit(root, dataset, *args, **kwargs):
        if dataset == "graph_edges":
            between.set()
            time.sleep(1.0)  # the reader opens the tables now, with users already at the new build
        return original(root, dataset, *args, **kwargs)

    monkeypatch.setattr(lake, "_commit", slow_second_commit)

    def write_both() -> None:
        with lake.build(tmp_path) as second:
            lake.write_table(second.partition("users"), pa.table({"user_index": [0, 1]}))
            lake.write_table(second.partition("graph_edges"), pa.table({"user_index": [0, 1]}))
        done.append(second.build_id)

    done: list[int] = []
    writer = threading.Thread(target=write_both)
    writer.start()
    assert between.wait(30)
    with pytest.raises(lake.BuildMismatch):  # without waiting, the reader sees the set mixed
        lake.open_tables(tmp_path, ["users", "graph_edges"], wait_seconds=0)
    tables = lake.open_tables(tmp_path, ["users", "graph_edges"])
    writer.join()
    assert tables["users"].build_id() == tables["graph_edges"].build_id() == done[0]


def test_derived_tables_record_the_source_build_they_were_computed_from(tmp_path):
    """A pair with a build id of its own (the encoder's outputs) records the graph build in each commit:
    a reader refuses the pair half rewritten, and the pair once the graph is rebuilt."""
    lake.write_partition(tmp_path, "users", pa.table({"user_index": [0, 1]}))
    graph = lake.open_table(tmp_path, "users")
    with lake.build(tmp_path, built_from=graph.build_id()) as pair:
        lake.write_table(pair.partition("emb"), pa.table({"user_index": [0, 1]}))
        lake.write_table(pair.partition("top"), pa.table({"user_index": [0, 1]}))
    tables = lake.open_tables(tmp_path, ["emb", "top"])
    assert pair.build_id != graph.build_id() and tables["top"].build_id() == pair.build_id
    assert tables["emb"].built_from() == tables["top"].built_from() == graph.build_id()
    lake.check_built_from(tables["top"], None, graph)
    # Re-encoding the same graph, killed between the two commits: the pair disagrees and is refused.
    with lake.build(tmp_path, built_from=graph.build_id()) as rerun:
        lake.write_table(rerun.partition("emb"), pa.table({"user_index": [0, 1]}))
    with pytest.raises(lake.BuildMismatch, match="emb .* has build .*, top .* has build"):
        lake.open_tables(tmp_path, ["emb", "top"])
    lake.check_built_from(lake.open_table(tmp_path, "emb"), None, graph)  # each half is of this graph
    # The graph rebuilt since: a pair computed from the old build is refused, naming what it was built from.
    lake.write_partition(tmp_path, "users", pa.table({"user_index": [0, 1]}))
    with pytest.raises(lake.BuildMismatch, match=f"top .* was computed from build {lake.format_build(graph.build_id())}"):
        lake.check_built_from(lake.open_table(tmp_path, "top"), None, lake.open_table(tmp_path, "users"))
    # A partition of a derived table records its own source build.
    lake.write_partition(tmp_path, "per_month", pa.table({"x": [1]}), {"month": "2019-01"}, built_from=42)
    snapshot = lake.open_table(tmp_path, "per_month")
    assert snapshot.built_from({"month": "2019-01"}) == 42 and snapshot.built_from() is None


def test_monthly_pairs_are_checked_month_by_month(tmp_path):
    for month, build_id in (("2019-01", 11), ("2019-02", 12)):
        _write_month(tmp_path, month, [1], "rows", build_id)
        _write_month(tmp_path, month, [], "rows_quarantine", build_id)  # empty: still carries its build
    assert set(lake.open_tables(tmp_path, ["rows", "rows_quarantine"])) == {"rows", "rows_quarantine"}
    _write_month(tmp_path, "2019-02", [2], "rows", 13)
    lake.open_tables(tmp_path, ["rows", "rows_quarantine"], [{"month": "2019-01"}])  # that month still agrees
    with pytest.raises(lake.BuildMismatch, match="month=2019-02"):
        lake.open_tables(tmp_path, ["rows", "rows_quarantine"])


def test_every_version_read_and_written_is_recorded(tmp_path):
    _write_month(tmp_path, "2019-01", [1])
    with lake.recording() as activity:
        lake.read_table(tmp_path, "d")
        _write_month(tmp_path, "2019-02", [2], "e")
        _write_month(tmp_path, "2019-03", [3], "e")
    # version 0 of each table is its empty creation; the rows come from version 1 on
    assert activity.read == {"d": {1}} and activity.written == {"e": {1, 2}}
    lake.read_table(tmp_path, "d")
    assert activity.read == {"d": {1}}  # nothing after the block


def test_append_only_tables_add_rows_per_commit(tmp_path):
    lake.append_rows(tmp_path, "log", pa.table({"v": [1]}), {"encoder": "a"})
    lake.append_rows(tmp_path, "log", pa.table({"v": [2, 3]}), {"encoder": "a"})
    table = lake.open_table(tmp_path, "log")
    assert table.version == 2 and sorted(table.read([{"encoder": "a"}])["v"].to_pylist()) == [1, 2, 3]
    assert table.has_partition({"encoder": "a"}) and not table.has_partition({"encoder": "b"})


def test_duckdb_and_polars_read_a_version_through_arrow(tmp_path):
    import polars as pl

    _write_month(tmp_path, "2019-01", [1, 2])
    _write_month(tmp_path, "2019-02", [3])
    dataset = lake.open_table(tmp_path, "d").to_dataset()
    with duckdb.connect() as con:
        con.register("d", dataset)
        assert con.sql("SELECT month, sum(x) FROM d GROUP BY 1 ORDER BY 1").fetchall() == [("2019-01", 3), ("2019-02", 3)]
    assert pl.scan_pyarrow_dataset(dataset).filter(pl.col("x") > 1).collect().height == 2


@pytest.mark.parametrize("bad", ["../escape", "a/b", ".hidden", "", "x' OR '1'='1", "a b"])
def test_partition_values_cannot_leave_the_lake_or_the_predicate(tmp_path, bad):
    with pytest.raises(ValueError):
        lake.partition_dir(tmp_path, "d", {"month": bad})
    with pytest.raises(ValueError):
        lake.atomic_partition(tmp_path, "d", {"month": bad}).__enter__()
    with pytest.raises(ValueError):
        lake.read_table(tmp_path, "../d")


def test_rotating_writer_splits_files_and_writes_schema_when_empty(tmp_path):
    schema = pa.schema([("x", pa.int64())])
    (tmp_path / "a").mkdir()
    with lake.RotatingParquetWriter(tmp_path / "a", schema, rows_per_file=2) as w:
        w.write(pa.table({"x": [1, 2, 3, 4, 5]}))
    assert len(w.files) == 3 and w.rows_written == 5
    with lake.atomic_partition(tmp_path / "lake", "b") as folder:
        with lake.RotatingParquetWriter(folder, schema) as empty:
            pass
    assert len(empty.files) == 1
    assert lake.read_table(tmp_path / "lake", "b").schema == schema


def test_scratch_files_reach_the_commit_a_row_group_at_a_time_in_the_batches_iter_batches_gave(tmp_path, monkeypatch):
    """The commit's reader takes each scratch file a row group at a time (the whole file held at
    once was 1.5 GiB for 2M embeddings) and hands on the batches `iter_batches` gave (delta-rs
    spreads batches over its writers: they decide the order rows come back in), in order, with the
    partition key added."""
    from zipp_assets.lake import _scratch_reader

    schema = pa.schema([("x", pa.int64()), ("y", pa.string())])
    (tmp_path / "a").mkdir()
    with lake.RotatingParquetWriter(tmp_path / "a", schema, rows_per_file=4) as w:
        for start in range(0, 6, 2):  # files of 2 row groups and 1
            w.write(pa.table({"x": [start, start + 1], "y": ["a", "b"]}))
    reads = []
    original = pq.ParquetFile.read_row_group
    monkeypatch.setattr(pq.ParquetFile, "read_row_group",
                        lambda self, i, *a, **k: reads.append(i) or original(self, i, *a, **k))
    monkeypatch.setattr(lake, "_COMMIT_BATCH_ROWS", 2)
    reader = _scratch_reader(w.files, {"month": "2019-01"})
    first = reader.read_next_batch()
    assert reads == [0] and first.to_pydict() == {"x": [0, 1], "y": ["a", "b"], "month": ["2019-01"] * 2}
    rest = pa.Table.from_batches(list(reader))
    assert rest["x"].to_pylist() == [2, 3, 4, 5] and reads == [0, 1, 0]
    monkeypatch.setattr(lake, "_COMMIT_BATCH_ROWS", 3)
    got = [batch.column("x").to_pylist() for batch in _scratch_reader(w.files, {})]
    expected = [batch.column("x").to_pylist() for f in w.files for batch in pq.ParquetFile(f).iter_batches(batch_size=3)]
    assert got == expected == [[0, 1, 2], [3], [4, 5]]


def test_a_commit_keeps_the_order_of_rows_written_in_small_pieces(tmp_path):
    with lake.build(tmp_path / "lake") as together:
        with lake.RotatingParquetWriter(together.partition("t"), pa.schema([("x", pa.int64())])) as writer:
            for start in range(0, 2_000, 7):
                writer.write(pa.table({"x": list(range(start, min(start + 7, 2_000)))}))
    assert lake.read_table(tmp_path / "lake", "t")["x"].to_pylist() == list(range(2_000))


def test_scratch_of_dead_writers_is_swept_and_a_live_writers_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("ZIPP_SCRATCH_DIR", str(tmp_path / "scratch"))
    dead = lake.Build(tmp_path / "lake")
    os.close(dead._scratch._lock)  # its process died: the kernel dropped its lock
    with lake.build(tmp_path / "lake") as live:
        assert not dead._scratch.folder.exists()
        with lake.build(tmp_path / "lake") as other:
            assert live._scratch.folder.exists() and other._scratch.folder.exists()
            lake.write_table(other.partition("t"), pa.table({"x": [1]}))
        lake.write_table(live.partition("u"), pa.table({"x": [1]}))
    assert list((tmp_path / "scratch").iterdir()) == []


def test_a_pre_delta_folder_is_refused_with_advice(tmp_path):
    (tmp_path / "d" / "month=2019-01").mkdir(parents=True)
    pq.write_table(pa.table({"x": [1]}), tmp_path / "d" / "month=2019-01" / "part-00000.parquet")
    with pytest.raises(RuntimeError, match="pre-Delta lake"):
        lake.read_table(tmp_path, "d")
    with pytest.raises(RuntimeError, match="pre-Delta lake"):
        _write_month(tmp_path, "2019-01", [1])
    _write_month(tmp_path, "2019-01", [1], dataset="e")
    assert lake.legacy_tables(tmp_path) == ["d"]


def test_object_store_roots_take_credentials_from_the_environment():
    env = {"AWS_ACCESS_KEY_ID": "k", "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ALLOW_HTTP": "true",
           "HOME": "/root", "AWS_SESSION_TOKEN": ""}
    assert lake.storage_options("s3://bucket/lake", env) == {"AWS_ACCESS_KEY_ID": "k",
                                                            "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
                                                            "AWS_ALLOW_HTTP": "true"}
    assert lake.storage_options("/data/lake", env) is None
    assert lake.table_uri("s3://bucket/lake/", "users") == "s3://bucket/lake/users"
    assert lake.dataset_dir("s3://bucket/lake", "users") == "s3://bucket/lake/users"


def test_settings_put_the_lake_on_a_path_or_an_object_store(tmp_path):
    from zipp_assets.resources import ZippLake
    from zipp_assets.settings import load_settings

    assert load_settings({"ZIPP_DATA_DIR": str(tmp_path)}).lake_dir == tmp_path / "lake"
    on_s3 = load_settings({"ZIPP_DATA_DIR": str(tmp_path), "ZIPP_LAKE_URI": "s3://bucket/zipp/lake/",
                           "ZIPP_LAKE_RETENTION_HOURS": "24"})
    assert on_s3.lake_dir == "s3://bucket/zipp/lake" and on_s3.raw_dir == tmp_path / "raw"  # dumps stay local
    assert on_s3.lake_retention_hours == 24
    resource = ZippLake(data_dir=str(tmp_path), lake_uri="s3://bucket/zipp/lake", lake_retention_hours=24)
    assert resource.settings.lake_dir == "s3://bucket/zipp/lake"
    with pytest.raises(ValueError, match="ZIPP_LAKE_URI"):
        load_settings({"ZIPP_DATA_DIR": "s3://bucket/zipp"})
    with pytest.raises(ValueError, match="ZIPP_LAKE_RETENTION_HOURS"):
        load_settings({"ZIPP_DATA_DIR": str(tmp_path), "ZIPP_LAKE_RETENTION_HOURS": "a week"})


def test_duckdb_spills_into_a_locked_scratch_folder_that_a_killed_process_does_not_leave_behind(tmp_path, monkeypatch):
    """DuckDB spills into a scratch folder of its own under ZIPP_SCRATCH_DIR (not `.tmp` in the working
    directory), removed when the connection closes; one left by a process killed mid-query is removed
    by the next connection's sweep."""
    parent = tmp_path / "scratch"
    monkeypatch.setenv("ZIPP_SCRATCH_DIR", str(parent))
    with lake.spilling_duckdb("64MB") as con:
        spill = Path(con.sql("SELECT current_setting('temp_directory')").fetchall()[0][0])
        assert spill.parent.parent == parent and (spill.parent / ".lock").is_file()
        assert con.sql("SELECT current_setting('memory_limit')").fetchall()[0][0].startswith("6")
    assert not spill.parent.exists()  # removed with the connection
    script = ("import os, signal; from zipp_assets import lake\n"
              "with lake.spilling_duckdb('64MB') as con:\n"
              "    print(con.sql(\"SELECT current_setting('temp_directory')\").fetchall()[0][0], flush=True)\n"
              "    os.kill(os.getpid(), signal.SIGKILL)")
    killed = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "ZIPP_SCRATCH_DIR": str(parent)}, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    left = Path(killed.stdout.strip()).parent
    assert left.is_dir()  # the dead process's folder stays...
    with lake.spilling_duckdb("64MB"):
        assert not left.exists()  # ...until the next writer's sweep


def test_a_sweep_between_making_and_locking_a_scratch_folder_spares_it(tmp_path, monkeypatch):
    """Another writer's sweep that runs after a scratch folder exists but before its lock is held
    must not delete it (it did when the folder was made under the swept name)."""
    from zipp_assets import staging

    monkeypatch.setenv("ZIPP_SCRATCH_DIR", str(tmp_path / "scratch"))
    real_flock = staging.fcntl.flock

    def sweep_then_lock(fd, operation):
        if operation == staging.fcntl.LOCK_EX:  # the new writer's own blocking lock: another sweep gets in first
            staging.remove_abandoned_scratch(tmp_path / "scratch")
        return real_flock(fd, operation)

    monkeypatch.setattr(staging.fcntl, "flock", sweep_then_lock)
    scratch = staging.Scratch()
    try:
        assert scratch.folder.is_dir() and (scratch.folder / ".lock").is_file()
        (scratch.folder / "part-00000.parquet").write_bytes(b"x")  # still usable
    finally:
        scratch.remove()


def test_a_process_that_read_a_table_exits_cleanly(tmp_path):
    """A threaded scan of delta-rs's pyarrow dataset aborted the interpreter at exit about half the
    time (exit 134); five processes in a row must all exit 0."""
    lake.write_partition(tmp_path, "t", pa.table({"a": list(range(1000)), "b": [str(i) for i in range(1000)]}))
    code = f"from zipp_assets import lake; assert lake.read_table({str(tmp_path)!r}, 't').num_rows == 1000"
    for _ in range(5):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (done.returncode, done.stderr[-500:])


def test_vector_columns_become_matrices_without_python_floats_and_bad_ones_are_refused():
    import numpy as np
    import pyarrow as pa

    fixed = pa.chunked_array([pa.FixedSizeListArray.from_arrays(pa.array(np.arange(6, dtype=np.float32)), 3),
                              pa.FixedSizeListArray.from_arrays(pa.array([6.0, 7.0, 8.0], pa.float32()), 3)])
    np.testing.assert_array_equal(lake.vector_matrix(fixed), np.arange(9, dtype=np.float32).reshape(3, 3))
    variable = pa.array([[1.0, 2.0], [3.0, 4.0]], pa.list_(pa.float64()))
    assert lake.vector_matrix(variable).dtype == np.float32 and lake.vector_matrix(variable).shape == (2, 2)
    assert lake.vector_matrix(pa.chunked_array([], pa.list_(pa.float32()))).shape == (0, 0)
    with pytest.raises(ValueError, match="different lengths"):
        lake.vector_matrix(pa.array([[1.0], [2.0, 3.0, 4.0]], pa.list_(pa.float32())))
    with pytest.raises(ValueError, match="null"):
        lake.vector_matrix(pa.array([[1.0, 2.0], None], pa.list_(pa.float32())))
    with pytest.raises(ValueError, match="one length"):
        lake.vector_matrix(pa.array([[1.0, 2.0], [3.0]], pa.list_(pa.float32())))
