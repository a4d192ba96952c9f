import json
import os
import signal
import subprocess
import sys
from pathlib import Path

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


@pytest.mark.parametrize("workers", [1, 2])
def test_corrupt_dump_fails_and_keeps_the_earlier_partition(tmp_path, workers):
    raw, lake_dir = tmp_path / "raw", tmp_path / "lake"
    write_dump(raw / "RC_2019-01.zst", _comments(300))
    ingest_month(lake_dir, raw, "comments", "2019-01")
    version = lake.open_table(lake_dir, "reddit_comments").version
    path = write_dump(raw / "RC_2019-01.zst", _comments(30000, start=1000))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])  # truncated, as by an interrupted download
    with pytest.raises(DumpReadError, match=r"RC_2019-01\.zst: truncated"):
        ingest_month(lake_dir, raw, "comments", "2019-01", block_bytes=1 << 16, workers=workers)
    assert not _parse_workers()  # every worker process was stopped
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


@pytest.mark.parametrize("workers", [1, 2])
def test_a_line_longer_than_the_limit_is_quarantined_and_the_month_goes_on(tmp_path, workers):
    from zipp_assets.reddit.dumps import MAX_LINE_BYTES

    raw, lake_dir = tmp_path / "raw", tmp_path / "lake"
    lines = _comments(200)
    huge = json.dumps({"id": "huge", "author": "a", "subreddit": "pics", "created_utc": 1546300800,
                       "body": "x" * (MAX_LINE_BYTES + 1)}).encode()
    lines.insert(50, huge)
    write_dump(raw / "RC_2019-01.zst", lines)
    # Small blocks: with worker processes the line too long sits between blocks dealt to workers.
    report = ingest_month(lake_dir, raw, "comments", "2019-01", block_bytes=2048, workers=workers)
    assert (report.lines_in, report.rows_out, report.quarantined) == (201, 200, 1)
    assert report.bytes_decompressed == sum(len(x) + 1 for x in lines)
    [row] = lake.read_table(lake_dir, "reddit_comments_quarantine").to_pylist()
    assert row["line"] == 51 and row["byte_offset"] == sum(len(x) + 1 for x in lines[:50])
    assert row["reason"].startswith(f"line too long (byte length {len(huge):,}")
    assert row["excerpt"].startswith('{"id": "huge"') and len(row["excerpt"]) == 200
    assert "huge" not in lake.read_table(lake_dir, "reddit_comments")["id"].to_pylist()


# --- a process per core ---------------------------------------------------------------------------


def _parse_workers() -> list[int]:
    """Pids of this process's parse workers still running."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) == os.getpid() \
                    and b"zipp_assets.reddit.parse_worker" in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except (OSError, IndexError, ValueError):
            continue
    return pids


def _mixed_lines() -> list[bytes]:
    """Good comments with every kind of bad line among them."""
    lines = _comments(3000)
    bad = {
        5: b"{broken",
        600: b"",
        1200: json.dumps({"id": "old", "author": "a", "subreddit": "pics", "created_utc": 5}).encode(),
        1800: json.dumps({"id": "typed", "author": "a", "subreddit": "pics", "created_utc": 1546300800,
                          "score": "many"}).encode(),
        2400: b'{"id": "bytes", "author": "a", "subreddit": "pics", "created_utc": 1546300800, "body": "\xff\xfe"}',
        2999: b"[1, 2]",
    }
    for index in sorted(bad, reverse=True):
        lines.insert(index, bad[index])
    return lines


def _ingest_each_way(tmp_path: Path, lines: list[bytes], worker_counts: tuple[int, ...]) -> tuple[dict, dict, dict]:
    """Ingest the same month (in 4 KiB blocks) with each number of workers into a lake of its own: the
    reports, the rows sorted by id and the quarantine, by number of workers."""
    raw = tmp_path / "raw"
    write_dump(raw / "RC_2019-01.zst", lines)
    reports, rows, quarantines = {}, {}, {}
    for workers in worker_counts:
        lake_dir = tmp_path / f"lake-{workers}"
        reports[workers] = ingest_month(lake_dir, raw, "comments", "2019-01", block_bytes=4096, workers=workers)
        rows[workers] = lake.read_table(lake_dir, "reddit_comments").sort_by("id").to_pylist()
        quarantines[workers] = lake.read_table(lake_dir, "reddit_comments_quarantine").to_pylist()
    return reports, rows, quarantines


def test_worker_processes_write_the_rows_and_quarantine_that_one_process_writes(tmp_path):
    # 4 KiB blocks: about a hundred of them, dealt round the workers
    reports, rows, quarantines = _ingest_each_way(tmp_path, _mixed_lines(), (1, 3))
    one, three = reports[1], reports[3]
    assert (three.lines_in, three.rows_out, three.quarantined) == (one.lines_in, one.rows_out, one.quarantined)
    assert one.quarantined == 5 and one.rows_out == 3001  # the invalid UTF-8 is repaired, not quarantined
    assert three.quarantine_reasons == one.quarantine_reasons
    assert three.bytes_decompressed == one.bytes_decompressed
    assert rows[3] == rows[1]
    # The quarantine is numbered by the file's lines and written in their order, as by one process.
    assert quarantines[3] == quarantines[1]
    assert [q["line"] for q in quarantines[3]] == [6, 602, 1203, 1804, 3005]
    assert (one.workers, three.workers, one.worker_peak_rss) == (1, 3, 0)
    assert 50 * 2**20 < three.worker_peak_rss < 2 * 2**30  # a parse worker's own peak (it imports pyarrow, polars)
    assert not _parse_workers()


def test_blocks_larger_than_a_workers_slot_reach_it_through_the_socket(tmp_path, monkeypatch):
    """Lines longer than the block size make blocks that do not fit a shared-memory slot: they go
    through the socket (once the worker holds nothing), with the same rows and quarantine."""
    from zipp_assets.reddit import parse_worker

    lines = _mixed_lines()
    for index in (40, 41, 1500, 2990):  # 10 KB lines among 4 KiB blocks, two of them back to back
        lines.insert(index, json.dumps({"id": f"long{index}", "author": "a", "subreddit": "pics",
                                        "created_utc": 1546300800, "body": "w" * 10_000}).encode())
    through_socket, through_slots = [], []
    send_block, send_slot = parse_worker.send_block, parse_worker.send_slot
    monkeypatch.setattr(parse_worker, "send_block", lambda sock, first, pieces: (
        through_socket.append(sum(map(len, pieces))), send_block(sock, first, pieces)))
    monkeypatch.setattr(parse_worker, "send_slot", lambda sock, first, length, slot: (through_slots.append(slot),
                                                                                    send_slot(sock, first, length, slot)))
    reports, rows, quarantines = _ingest_each_way(tmp_path, lines, (1, 2))
    assert len(through_socket) >= 3 and min(through_socket) > 4096
    assert set(through_slots) == set(range(parse_worker.SLOTS))  # the others went through both slots
    assert rows[2] == rows[1] and len(rows[1]) == 3005
    assert quarantines[2] == quarantines[1] and [q["line"] for q in quarantines[2]] == [6, 604, 1205, 1807, 3009]
    assert reports[2].bytes_decompressed == reports[1].bytes_decompressed
    assert not _parse_workers()


def test_a_worker_refuses_a_block_header_naming_a_slot_it_does_not_have():
    import mmap
    import socket

    from zipp_assets.reddit import parse_worker

    parent, child = socket.socketpair()
    with parent, child, mmap.mmap(-1, parse_worker.SLOTS * 64) as slots:
        slots[64:69] = b"abcde"
        parse_worker.send_slot(parent, 7, 5, 1)
        assert parse_worker.receive_block(child, slots) == (7, b"abcde")
        parse_worker.send_block(parent, 9, [b"in", b"", b"line"])
        assert parse_worker.receive_block(child, slots) == (9, b"inline")
        for length, slot in ((5, parse_worker.SLOTS), (5, -2), (65, 0)):
            parse_worker.send_slot(parent, 0, length, slot)
            with pytest.raises(ValueError, match="a block header names slot"):
                parse_worker.receive_block(child, slots)
        parse_worker.send_end(parent)
        assert parse_worker.receive_block(child, slots) is None


def test_parsing_and_staging_blocks_does_not_import_pandas(tmp_path):
    """pyarrow imports pandas (0.75 s) on its first Python scalar or array: a parse worker, which
    starts for every month, builds its tables in polars and never pays it for clean lines."""
    comment = json.dumps({"id": "c1", "author": "a", "subreddit": "pics", "created_utc": 1546300800, "body": "hi"})
    post = json.dumps({"id": "p1", "author": "a", "subreddit": "pics", "created_utc": 1546300800, "title": "t",
                       "url": "https://i.redd.it/x.jpg", "post_hint": "image"})
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from zipp_assets.reddit.dumps import LineBlock\n"
        "from zipp_assets.reddit.parse import Quarantine, comments_table, submissions_table\n"
        "from zipp_assets.reddit.schemas import SCHEMAS\n"
        "from zipp_assets.staging import RotatingParquetWriter\n"
        f"for build, line, name in ((comments_table, {comment!r}, 'comments'), (submissions_table, {post!r}, 'submissions')):\n"
        "    table = build(LineBlock(line.encode(), 1, 0, 0), 'f', Quarantine())\n"
        "    assert table.num_rows == 1, table\n"
        f"    with RotatingParquetWriter(Path({str(tmp_path)!r}), SCHEMAS['reddit_' + name], prefix=name) as writer:\n"
        "        writer.write(table)\n"
        "print('pandas' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip() == "False"
    assert len(list(tmp_path.glob("*.parquet"))) == 2


def test_workers_that_closed_exit_by_themselves(tmp_path, monkeypatch):
    from zipp_assets.reddit import ingest

    exit_codes = []
    stop = ingest._Worker.stop

    def recording_stop(worker):
        stop(worker)
        exit_codes.append(worker.process.returncode)

    monkeypatch.setattr(ingest._Worker, "stop", recording_stop)
    path = write_dump(tmp_path / "RC_2019-01.zst", _comments(2000))
    for name in ("out", "quarantine"):
        (tmp_path / name).mkdir()
    ingest.ingest_file(path, "comments", tmp_path / "out", tmp_path / "quarantine", block_bytes=4096, workers=3)
    assert exit_codes == [0, 0, 0]  # each said "closed" and was left to exit, not killed mid-exit


def test_the_same_dump_gives_the_same_files_whatever_the_timing(tmp_path):
    import pyarrow.parquet as pq

    from zipp_assets.reddit.ingest import ingest_file

    path = write_dump(tmp_path / "RC_2019-01.zst", _mixed_lines())
    files = {}
    for run in ("first", "second"):
        out, quarantine = tmp_path / run, tmp_path / f"{run}-quarantine"
        out.mkdir()
        quarantine.mkdir()
        ingest_file(path, "comments", out, quarantine, block_bytes=4096, workers=3)
        files[run] = {p.name: pq.read_table(p) for p in sorted(out.glob("*.parquet"))}
    assert sorted(files["first"]) == ["part-w000-00000.parquet", "part-w001-00000.parquet", "part-w002-00000.parquet"]
    assert all(files["first"][name].equals(files["second"][name]) for name in files["first"])


def test_a_worker_that_fails_fails_the_month_with_its_error(tmp_path):
    from zipp_assets.reddit.ingest import IngestWorkerError, ingest_file

    path = write_dump(tmp_path / "RC_2019-01.zst", _comments(2000))
    (tmp_path / "quarantine").mkdir()
    with pytest.raises(IngestWorkerError, match=r"ingest worker \d failed: FileNotFoundError"):
        ingest_file(path, "comments", tmp_path / "no-such-folder", tmp_path / "quarantine", block_bytes=4096, workers=2)
    assert not _parse_workers()


def test_a_worker_killed_mid_month_fails_the_month_and_commits_nothing(tmp_path, monkeypatch):
    from zipp_assets.reddit import ingest

    raw, lake_dir = tmp_path / "raw", tmp_path / "lake"
    write_dump(raw / "RC_2019-01.zst", _comments(300))
    ingest_month(lake_dir, raw, "comments", "2019-01", workers=1)
    version = lake.open_table(lake_dir, "reddit_comments").version
    write_dump(raw / "RC_2019-01.zst", _comments(20000))
    monkeypatch.setattr(ingest, "PROGRESS_EVERY_SECONDS", 0.0)
    killed = []

    def kill_a_worker(_message: str) -> None:  # as the kernel's OOM killer would, once a block is out
        if not killed and (pids := _parse_workers()):
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

    with pytest.raises(ingest.IngestWorkerError, match=r"ingest worker \d died \(exit code -9\)"):
        ingest_month(lake_dir, raw, "comments", "2019-01", block_bytes=4096, workers=2, progress=kill_a_worker)
    assert killed and not _parse_workers()
    assert lake.open_table(lake_dir, "reddit_comments").version == version
    assert lake.read_table(lake_dir, "reddit_comments").num_rows == 300


def test_worker_count_takes_the_setting_or_one_per_cpu_for_large_dumps(monkeypatch, tmp_path):
    from zipp_assets.reddit import ingest

    monkeypatch.setattr(ingest, "available_cpus", lambda: 6)
    assert ingest.worker_count(3, 1) == 3
    assert ingest.worker_count(0, ingest.PROCESSES_FROM_COMPRESSED_BYTES) == 6
    assert ingest.worker_count(0, ingest.PROCESSES_FROM_COMPRESSED_BYTES - 1) == 1
    with pytest.raises(ValueError, match="workers must be 0"):
        ingest.worker_count(-1, 1)


def test_available_cpus_is_capped_by_the_containers_cpu_quota(tmp_path):
    from zipp_assets.reddit.ingest import available_cpus

    uncapped = len(os.sched_getaffinity(0))
    assert available_cpus(tmp_path / "no-cgroup") == uncapped
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert available_cpus(tmp_path) == uncapped
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs: two processes, one of them part-time
    assert available_cpus(tmp_path) == min(uncapped, 2)
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")  # cgroup v1: half a CPU
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert available_cpus(tmp_path) == 1


def test_the_ingest_workers_setting_is_a_whole_number(tmp_path):
    from zipp_assets.settings import load_settings

    assert load_settings({"ZIPP_DATA_DIR": str(tmp_path)}).ingest_workers == 0
    assert load_settings({"ZIPP_DATA_DIR": str(tmp_path), "ZIPP_INGEST_WORKERS": "4"}).ingest_workers == 4
    with pytest.raises(ValueError, match="ZIPP_INGEST_WORKERS"):
        load_settings({"ZIPP_DATA_DIR": str(tmp_path), "ZIPP_INGEST_WORKERS": "all"})


def test_workers_exit_when_the_ingesting_process_is_killed(tmp_path):
    """A killed run (OOM, a cancelled pod) leaves no parse worker behind: each sees its socket close."""
    import time

    raw = tmp_path / "raw"
    write_dump(raw / "RC_2019-01.zst", _comments(20000))
    script = (
        "import os, signal\n"
        "from pathlib import Path\n"
        "from zipp_assets.reddit import ingest\n"
        "ingest.PROGRESS_EVERY_SECONDS = 0.0\n"
        "def die(message):  # once blocks are out to the workers\n"
        "    if 'lines/s' in message: os.kill(os.getpid(), signal.SIGKILL)\n"
        "if __name__ == '__main__':\n"
        f"    ingest.ingest_month(Path({str(tmp_path / 'lake')!r}), Path({str(raw)!r}), 'comments', '2019-01',\n"
        "                        block_bytes=4096, workers=2, progress=die)\n"
    )
    # The scratch folder, and so the workers' command lines, under tmp_path: how they are found below.
    env = {**os.environ, "ZIPP_SCRATCH_DIR": str(tmp_path / "scratch")}
    result = subprocess.run([sys.executable, "-c", script], check=False, timeout=120, env=env)
    assert result.returncode == -signal.SIGKILL

    def orphans() -> list[str]:
        found = []
        for proc in Path("/proc").iterdir():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if b"zipp_assets.reddit.parse_worker" in cmdline and str(tmp_path).encode() in cmdline:
                found.append(proc.name)
        return found

    deadline = time.monotonic() + 30
    while orphans() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not orphans()
