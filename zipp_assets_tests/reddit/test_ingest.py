import json
import os
import signal
import subprocess
import sys

import pytest

from zipp_assets import lake
from zipp_assets.reddit.dumps import DumpNotFoundError, DumpReadError
from zipp_assets.reddit.ingest import ingest_month
from zipp_assets_tests.conftest import write_dump


def _comments(n: int, start: int = 0) -> list[bytes]:
    return [
        json.dumps({"id": f"c{i}", "author": f"user{i % 7}", "subreddit": "pics", "created_utc": 1546300800 + i, "body": "b" * 40}).encode()
        for i in range(start, start + n)
    ]


def test_month_accounting_and_rerun_replaces(tmp_path):
    raw, lake_dir = tmp_path / "raw", tmp_path / "lake"
    lines = _comments(500)
    lines.insert(10, b"{broken")
    write_dump(raw / "RC_2019-01.zst", lines)
    first = ingest_month(lake_dir, raw, "comments", "2019-01")
    assert (first.lines_in, first.rows_out, first.quarantined) == (501, 500, 1)
    assert first.quarantine_reasons == {"DecodeError: JSON is malformed: object keys must be strings": 1}
    again = ingest_month(lake_dir, raw, "comments", "2019-01")
    assert again.rows_out == 500
    table = lake.read_table(lake_dir, "reddit_comments")
    assert table.num_rows == 500 and len(set(table["id"].to_pylist())) == 500
    quarantine = lake.read_table(lake_dir, "reddit_comments_quarantine").to_pylist()
    assert [(q["line"], q["byte_offset"]) for q in quarantine] == [(11, sum(len(x) + 1 for x in lines[:10]))]


def test_corrupt_dump_fails_and_keeps_the_earlier_partition(tmp_path):
    raw, lake_dir = tmp_path / "raw", tmp_path / "lake"
    write_dump(raw / "RC_2019-01.zst", _comments(300))
    ingest_month(lake_dir, raw, "comments", "2019-01")
    version = lake.open_table(lake_dir, "reddit_comments").version
    path = write_dump(raw / "RC_2019-01.zst", _comments(30000, start=1000))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])  # truncated, as by an interrupted download
    with pytest.raises(DumpReadError, match=r"RC_2019-01\.zst: truncated"):
        ingest_month(lake_dir, raw, "comments", "2019-01")
    assert lake.read_table(lake_dir, "reddit_comments").num_rows == 300
    assert lake.open_table(lake_dir, "reddit_comments").version == version  # nothing was committed


def test_missing_month_fails_naming_the_files(tmp_path):
    with pytest.raises(DumpNotFoundError, match=r"RS_2011-05\.zst"):
        ingest_month(tmp_path / "lake", tmp_path / "raw", "submissions", "2011-05")
    assert not lake.table_exists(tmp_path / "lake", "reddit_submissions")


def test_killed_ingestion_leaves_previous_partition_and_rerun_recovers(tmp_path, monkeypatch):
    raw, lake_dir, scratch = tmp_path / "raw", tmp_path / "lake", tmp_path / "scratch"
    monkeypatch.setenv("ZIPP_SCRATCH_DIR", str(scratch))
    write_dump(raw / "RC_2019-01.zst", _comments(200))
    ingest_month(lake_dir, raw, "comments", "2019-01")
    versions = {d: lake.open_table(lake_dir, d).version for d in ("reddit_comments", "reddit_comments_quarantine")}
    write_dump(raw / "RC_2019-01.zst", _comments(400_000))
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "import zipp_assets.lake as lake\n"
        "from zipp_assets.reddit.ingest import ingest_month\n"
        "original = lake.RotatingParquetWriter.write\n"
        "def slow_write(self, table):\n"
        "    original(self, table)\n"
        "    print('wrote', flush=True); time.sleep(0.5)\n"
        "lake.RotatingParquetWriter.write = slow_write\n"
        f"ingest_month(Path({str(lake_dir)!r}), Path({str(raw)!r}), 'comments', '2019-01', block_bytes=1 << 20)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "wrote"  # a new version is half written...
    os.kill(proc.pid, signal.SIGKILL)  # ...when the process dies
    proc.wait(timeout=30)
    assert lake.read_table(lake_dir, "reddit_comments").num_rows == 200
    assert {d: lake.open_table(lake_dir, d).version for d in versions} == versions  # no commit was made
    assert [p.name for p in scratch.iterdir()], "the killed writer's scratch folder is expected to be left behind"
    report = ingest_month(lake_dir, raw, "comments", "2019-01")
    assert report.rows_out == 400_000
    assert lake.read_table(lake_dir, "reddit_comments").num_rows == 400_000
    assert report.versions == {d: v + 1 for d, v in versions.items()}
    assert not list(scratch.iterdir())  # the dead writer's scratch was swept, the new one removed


def test_progress_is_reported_for_long_files(tmp_path, monkeypatch):
    from zipp_assets.reddit import ingest

    monkeypatch.setattr(ingest, "PROGRESS_EVERY_SECONDS", 0.0)
    raw = tmp_path / "raw"
    write_dump(raw / "RC_2019-01.zst", _comments(20000))
    messages: list[str] = []
    ingest_month(tmp_path / "lake", raw, "comments", "2019-01", progress=messages.append, block_bytes=1 << 18)
    assert any("lines/s" in m and "of the file" in m for m in messages)


@pytest.mark.parametrize(
    "month, keyed_by_fullname",
    [("2007-06", False), ("2019-06", True), ("2023-05", True)],  # early schema, Pushshift 2019, Arctic Shift
)
def test_every_era_of_generated_dumps_ingests(tmp_path, month, keyed_by_fullname):
    from zipp_assets.simworld.world import WorldConfig, generate_world

    generate_world(WorldConfig(users=80, months=(month,), seed=5, write_images=False), tmp_path / "raw")
    raw, lake_dir = tmp_path / "raw" / "reddit", tmp_path / "lake"
    for kind in ("comments", "submissions"):
        report = ingest_month(lake_dir, raw, kind, month)
        assert report.rows_out > 0 and report.rows_out + report.quarantined == report.lines_in
    comments = lake.read_table(lake_dir, "reddit_comments").to_pylist()
    people = [c for c in comments if c["author"] != "[deleted]"]
    assert all(c["user_key"] == (c["author_fullname"] if keyed_by_fullname else c["author"]) for c in people)
    assert all(c["created_utc"].strftime("%Y-%m") == month for c in comments)


def test_a_line_longer_than_the_limit_is_quarantined_and_the_month_goes_on(tmp_path):
    from zipp_assets.reddit.dumps import MAX_LINE_BYTES

    raw, lake_dir = tmp_path / "raw", tmp_path / "lake"
    lines = _comments(200)
    huge = json.dumps({"id": "huge", "author": "a", "subreddit": "pics", "created_utc": 1546300800,
                       "body": "x" * (MAX_LINE_BYTES + 1)}).encode()
    lines.insert(50, huge)
    write_dump(raw / "RC_2019-01.zst", lines)
    report = ingest_month(lake_dir, raw, "comments", "2019-01")
    assert (report.lines_in, report.rows_out, report.quarantined) == (201, 200, 1)
    assert report.bytes_decompressed == sum(len(x) + 1 for x in lines)
    [row] = lake.read_table(lake_dir, "reddit_comments_quarantine").to_pylist()
    assert row["line"] == 51 and row["byte_offset"] == sum(len(x) + 1 for x in lines[:50])
    assert row["reason"].startswith(f"line too long (byte length {len(huge):,}")
    assert row["excerpt"].startswith('{"id": "huge"') and len(row["excerpt"]) == 200
    assert "huge" not in lake.read_table(lake_dir, "reddit_comments")["id"].to_pylist()
