"""The study store: acknowledged writes survive a kill (write-ahead log), reach the lake, never duplicate."""

import os
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime, timezone

import pytest

from zipp_assets import lake
from zipp_assets.studio import storage
from zipp_assets.studio.storage import SESSIONS, VOTES, WAL_NAME, DuplicateVote, StudyStore, read_study_table

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def session(sid: str) -> dict:
    return {"session_id": sid, "created_utc": NOW, "updated_utc": NOW, "n_prompts": 20, "age_band": "25-34",
            "gender": "female", "country": "Portugal", "hobbies": ["hiking"], "comparison": "zipp_0shot vs generic"}


def vote(sid: str, index: int) -> dict:
    return {"vote_id": f"{sid}-{index:03d}", "session_id": sid, "comparison_index": index, "choice": "left",
            "zipp_won": index % 2 == 0, "time_taken_ms": 1200, "shown_utc": NOW, "voted_utc": NOW,
            "comparison": "zipp_0shot vs generic"}


def sid(i: int) -> str:
    return f"{i:032x}"


def test_writes_reach_the_lake_partitioned_by_session_and_reload(tmp_path):
    lake_dir, journal = tmp_path / "lake", tmp_path / "journal"
    with StudyStore(lake_dir, journal, flush_interval_s=0.01) as store:
        store.save_session(session(sid(1)))
        store.update_session(sid(1), {"persona_json": '{"summary": "I"}'})
        for i in range(3):
            store.add_vote(vote(sid(1), i))
        with pytest.raises(DuplicateVote):
            store.add_vote(vote(sid(1), 1))
        with pytest.raises(ValueError):
            store.add_vote(vote(sid(2), 0))  # no such session
    assert lake.partition_exists(lake_dir, VOTES, {"session_id": sid(1)})
    votes = read_study_table(lake_dir, VOTES)
    assert sorted(v["comparison_index"] for v in votes) == [0, 1, 2]
    [row] = read_study_table(lake_dir, SESSIONS)
    assert row["persona_json"] == '{"summary": "I"}' and row["hobbies"] == ["hiking"] and row["revision"] == 2
    assert (journal / WAL_NAME).stat().st_size > 0  # while running, the log is emptied only past ROTATE_BYTES
    with StudyStore(lake_dir, journal) as again:
        assert (journal / WAL_NAME).stat().st_size == 0  # at start, once the lake holds everything
        assert len(again.votes_of(sid(1))) == 3 and again.session(sid(1))["country"] == "Portugal"
        with pytest.raises(DuplicateVote):
            again.add_vote(vote(sid(1), 2))
    assert read_study_table(tmp_path / "nowhere", VOTES) == []


KILLED_WRITER = textwrap.dedent("""
    import os, sys
    from datetime import datetime, timezone
    from zipp_assets.studio.storage import StudyStore
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    store = StudyStore(sys.argv[1], sys.argv[2], flush_interval_s=3600).open()  # the flusher never runs
    sid = "0" * 31 + "7"
    store.save_session({"session_id": sid, "created_utc": now, "updated_utc": now, "n_prompts": 5})
    for i in range(5):
        store.add_vote({"vote_id": f"{sid}-{i}", "session_id": sid, "comparison_index": i, "zipp_won": True,
                        "voted_utc": now, "shown_utc": now, "time_taken_ms": 5})
        print(f"acknowledged {i}", flush=True)
    os._exit(9)  # killed: no close, no flush
""")


def test_a_killed_writer_loses_nothing_it_acknowledged(tmp_path):
    lake_dir, journal = tmp_path / "lake", tmp_path / "journal"
    done = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(lake_dir), str(journal)], capture_output=True,
                          text=True, timeout=120, env=os.environ | {"DGLBACKEND": "pytorch"})
    assert done.returncode == 9, done.stderr
    acknowledged = done.stdout.count("acknowledged")
    assert acknowledged == 5 and read_study_table(lake_dir, VOTES) == []  # only in the log so far
    with open(journal / WAL_NAME, "ab") as f:
        f.write(b'{"kind":"vote","row":{"session_id":')  # a record torn by the kill: never acknowledged
    store = StudyStore(lake_dir, journal).open()
    try:
        assert len(read_study_table(lake_dir, VOTES)) == acknowledged  # written to the lake before serving
        store.add_vote(vote("0" * 31 + "7", 5))  # the torn tail was cut off: new records append cleanly
    finally:
        store.close()
    reopened = StudyStore(lake_dir, journal).open()
    reopened.close()
    assert len(read_study_table(lake_dir, VOTES)) == 6


def test_a_damaged_log_is_refused_not_guessed(tmp_path):
    (tmp_path / "journal").mkdir()
    (tmp_path / "journal" / WAL_NAME).write_bytes(b'not json\n{"kind":"vote","row":{}}\n')
    with pytest.raises(RuntimeError, match="damaged"):
        StudyStore(tmp_path / "lake", tmp_path / "journal").open()


def test_concurrent_votes_share_fsyncs_and_all_arrive(tmp_path, monkeypatch):
    store = StudyStore(tmp_path / "lake", tmp_path / "journal", flush_interval_s=0.01).open()
    for s in range(10):
        store.save_session(session(sid(s)))
    fsyncs = []
    real_fsync = os.fsync

    def slow_fsync(fd):  # a slow disk: writers arriving meanwhile must share the next fsync
        fsyncs.append(fd)
        time.sleep(0.2)
        real_fsync(fd)

    monkeypatch.setattr(storage.os, "fsync", slow_fsync)
    start = threading.Barrier(10)
    threads = [threading.Thread(target=lambda s=s: (start.wait(), store.add_vote(vote(sid(s), 0)))) for s in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    monkeypatch.setattr(storage.os, "fsync", real_fsync)
    log_fd = store._wal._fd
    store.close()
    assert len(read_study_table(tmp_path / "lake", VOTES)) == 10
    # Ten durable writes, at least one fsync of the log and at most three (one write each would be ten).
    assert 1 <= len(fsyncs) <= 3 and set(fsyncs) == {log_fd}


def test_a_write_is_acknowledged_only_after_its_line_is_written_and_fsynced(tmp_path, monkeypatch):
    store = StudyStore(tmp_path / "lake", tmp_path / "journal", flush_interval_s=3600).open()
    log_fd, events = store._wal._fd, []
    real_write, real_fsync = os.write, os.fsync

    def write(fd, data):
        if fd == log_fd:
            events.append(("write", bytes(data)))
        return real_write(fd, data)

    def fsync(fd):
        if fd == log_fd:
            events.append(("fsync", None))
        return real_fsync(fd)

    monkeypatch.setattr(storage.os, "write", write)
    monkeypatch.setattr(storage.os, "fsync", fsync)
    store.save_session(session(sid(1)))
    store.add_vote(vote(sid(1), 0))
    monkeypatch.undo()
    store.close()
    assert [kind for kind, _ in events] == ["write", "fsync", "write", "fsync"]
    assert b'"kind":"vote"' in events[2][1]


def test_short_writes_are_completed_and_a_failed_write_leaves_no_torn_record(tmp_path, monkeypatch):
    journal = tmp_path / "journal"
    store = StudyStore(tmp_path / "lake", journal, flush_interval_s=3600).open()  # flushed only at close
    log_fd, real_write = store._wal._fd, os.write
    disk = {"full": False}

    def short_write(fd, data):  # a disk that takes 7 bytes per call, and then none when it is full
        if fd != log_fd:
            return real_write(fd, data)
        if disk["full"] and len(bytes(data)) < 50:
            raise OSError(28, "No space left on device")
        return real_write(fd, bytes(data)[:7])

    monkeypatch.setattr(storage.os, "write", short_write)
    store.save_session(session(sid(1)))
    store.add_vote(vote(sid(1), 0))
    disk["full"] = True  # the next record is written in part, then the disk fills up
    with pytest.raises(RuntimeError, match="could not write the study log"):
        store.add_vote(vote(sid(1), 1))
    disk["full"] = False
    store.add_vote(vote(sid(1), 2))
    monkeypatch.undo()
    records, good, size = store._wal._read_records()  # whole records only: none torn, none lost
    assert good == size and [(kind, row.get("comparison_index")) for kind, row in records] == \
        [("session", None), ("vote", 0), ("vote", 2)]
    store.close()
    assert sorted(v["comparison_index"] for v in read_study_table(tmp_path / "lake", VOTES)) == [0, 2]


def test_creating_the_log_makes_its_name_durable(tmp_path, monkeypatch):
    synced, real_fsync = [], os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    monkeypatch.setattr(storage.os, "fsync", fsync)
    journal = tmp_path / "studio" / "journal"
    store = StudyStore(tmp_path / "lake", journal, flush_interval_s=3600).open()
    store.close()
    # The new folder's entry in its parent, and the new log's entry in the folder.
    assert str(tmp_path / "studio") in synced and str(journal) in synced


HOLDER = textwrap.dedent("""
    import sys
    from zipp_assets.studio.storage import StudyStore
    store = StudyStore(sys.argv[1], sys.argv[2], flush_interval_s=3600).open()
    print("open", flush=True)
    sys.stdin.read()
    store.close()
""")


def test_two_studio_processes_cannot_share_one_log(tmp_path):
    lake_dir, journal = tmp_path / "lake", tmp_path / "journal"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lake_dir), str(journal)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=os.environ | {"DGLBACKEND": "pytorch"})
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(RuntimeError, match="in use by another studio process"):
            StudyStore(lake_dir, journal).open()
    finally:
        holder.communicate("", timeout=120)
    assert holder.returncode == 0
    with StudyStore(lake_dir, journal) as store:  # free once the other has closed it
        store.save_session(session(sid(1)))
        with pytest.raises(RuntimeError, match="in use by another studio process"):
            StudyStore(lake_dir, journal).open()  # another store in this process, too


def test_a_failing_lake_write_keeps_the_records_and_retries(tmp_path, monkeypatch):
    store = StudyStore(tmp_path / "lake", tmp_path / "journal", flush_interval_s=3600).open()  # flushed by hand
    real = lake.atomic_partition
    failing = {"on": True}

    def flaky(*args, **kwargs):
        if failing["on"]:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(storage.lake, "atomic_partition", flaky)
    store.save_session(session(sid(1)))
    store.add_vote(vote(sid(1), 0))
    with pytest.raises(OSError):
        store.flush()
    assert store.pending() == 1 and (tmp_path / "journal" / WAL_NAME).stat().st_size > 0
    failing["on"] = False
    assert store.flush() == 1 and store.pending() == 0
    store.close()
    assert len(read_study_table(tmp_path / "lake", VOTES)) == 1


def test_a_flushed_log_past_its_size_starts_afresh_while_running(tmp_path, monkeypatch):
    monkeypatch.setattr(storage, "ROTATE_BYTES", 100)
    store = StudyStore(tmp_path / "lake", tmp_path / "journal", flush_interval_s=3600).open()
    store.save_session(session(sid(1)))
    store.add_vote(vote(sid(1), 0))
    log_file = tmp_path / "journal" / WAL_NAME
    assert log_file.stat().st_size > 100
    store.flush()
    assert log_file.stat().st_size == 0  # everything is in the lake
    store.add_vote(vote(sid(1), 1))
    assert log_file.stat().st_size > 0  # and new records append to the emptied log
    store.close()
    assert len(read_study_table(tmp_path / "lake", VOTES)) == 2
