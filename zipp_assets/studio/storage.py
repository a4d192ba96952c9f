"""The study's sessions and votes: durable when acknowledged, in the lake within a flush interval.

A write is acknowledged only after its record is in a write-ahead log on local disk (one JSON line,
written and fsynced; concurrent writers share one fsync, a group commit). A flusher thread then
writes what changed to two lake tables, partitioned by session, each partition replaced whole with
one commit (`lake.atomic_partition`):

    human_study_sessions   one row per session: intake answers, persona, prompts, comparisons
    human_study_votes      one row per vote (choice, displayed order, time taken)

At start the store reads both tables, replays the log over them (a log line cut short by a kill was
never acknowledged and is dropped), writes whatever the lake lacks, and only then empties the log.
A killed server therefore loses nothing it acknowledged: either the lake has it or the log does.
One process at a time holds the log (an exclusive lock); a second studio on the same folder is refused.
The tables hold a hash of the participant's session token, never the token.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pyarrow as pa

from zipp_assets import lake

log = logging.getLogger(__name__)

SESSIONS = "human_study_sessions"
VOTES = "human_study_votes"
PARTITION_KEY = "session_id"
SESSIONS_SCHEMA = pa.schema([
    ("session_id", pa.string()), ("revision", pa.int64()), ("created_utc", pa.timestamp("us", tz="UTC")),
    ("updated_utc", pa.timestamp("us", tz="UTC")), ("study_version", pa.string()), ("comparison", pa.string()),
    ("zipp_method", pa.string()), ("baseline_method", pa.string()), ("n_prompts", pa.int64()),
    ("age_band", pa.string()), ("gender", pa.string()), ("country", pa.string()), ("profession", pa.string()),
    ("hobbies", pa.list_(pa.string())), ("persona_json", pa.string()), ("persona_model", pa.string()),
    ("persona_error", pa.string()), ("prompts_json", pa.string()), ("comparisons_json", pa.string()),
    ("prepare_error", pa.string()), ("generator", pa.string()),
])
VOTES_SCHEMA = pa.schema([
    ("vote_id", pa.string()), ("session_id", pa.string()), ("comparison_index", pa.int64()),
    ("prompt_id", pa.string()), ("base_prompt", pa.string()), ("seed", pa.int64()), ("comparison", pa.string()),
    ("zipp_method", pa.string()), ("baseline_method", pa.string()), ("left_method", pa.string()),
    ("right_method", pa.string()), ("choice", pa.string()), ("chosen_method", pa.string()), ("zipp_won", pa.bool_()),
    ("zipp_prompt", pa.string()), ("baseline_prompt", pa.string()), ("time_taken_ms", pa.int64()),
    ("shown_utc", pa.timestamp("us", tz="UTC")), ("voted_utc", pa.timestamp("us", tz="UTC")),
    ("study_version", pa.string()),
])
_SCHEMAS = {"session": SESSIONS_SCHEMA, "vote": VOTES_SCHEMA}
WAL_NAME = "study.wal"
ROTATE_BYTES = 4 * 1024 * 1024  # an idle, fully flushed log larger than this starts afresh


class DuplicateVote(ValueError):
    """That comparison of that session already has a vote."""


def _encode(kind: str, row: dict) -> bytes:
    def default(value):
        if isinstance(value, datetime):
            return value.isoformat()
        raise TypeError(f"cannot store {type(value).__name__} in the study log")

    return (json.dumps({"kind": kind, "row": row}, default=default, separators=(",", ":")) + "\n").encode()


def _decode(kind: str, row: dict) -> dict:
    schema = _SCHEMAS[kind]
    out = {}
    for f in schema:
        value = row.get(f.name)
        if value is not None and pa.types.is_timestamp(f.type):
            value = datetime.fromisoformat(value)
        out[f.name] = value
    return out


def read_study_table(lake_dir: Path, dataset: str) -> list[dict]:
    """All rows of a study table; none when it was never written."""
    try:
        return lake.read_table(lake_dir, dataset).to_pylist()
    except FileNotFoundError:  # the table does not exist yet (both lake implementations raise this kind)
        return []


class StudyStore:
    """Sessions and votes in memory, backed by the write-ahead log and the lake (see the module doc).

    Thread-safe: request handlers call it from a thread pool, the flusher from its own thread.
    """

    def __init__(self, lake_dir: Path, journal_dir: Path, flush_interval_s: float = 0.5,
                 on_flush: Callable[[int], None] | None = None):
        self.lake_dir, self.journal_dir = Path(lake_dir), Path(journal_dir)
        self.flush_interval_s = flush_interval_s
        self.on_flush = on_flush
        self._lock = threading.Lock()  # state: sessions, votes, dirty marks
        self._sessions: dict[str, dict] = {}
        self._votes: dict[str, dict[int, dict]] = {}
        self._reserved: set[tuple[str, int]] = set()
        self._session_locks: dict[str, threading.Lock] = {}
        self._in_flight = 0  # writes logged or being logged but not yet applied: the log must not be emptied
        self._dirty: dict[str, int] = {}  # session -> change counter when last changed
        self._changes = 0
        self._revisions = 0
        self._flush_lock = threading.Lock()
        self._wal = _GroupCommitLog(self.journal_dir / WAL_NAME)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.flush_failures = 0

    # --- lifecycle ---------------------------------------------------------------------------

    def open(self) -> StudyStore:
        """Load the lake, replay the log, write what the lake lacks, start the flusher."""
        if not self.journal_dir.is_dir():
            self.journal_dir.mkdir(parents=True, exist_ok=True)
            _fsync_directory(self.journal_dir.parent)
        for row in read_study_table(self.lake_dir, SESSIONS):
            self._sessions[row["session_id"]] = row
        for row in read_study_table(self.lake_dir, VOTES):
            self._votes.setdefault(row["session_id"], {}).setdefault(int(row["comparison_index"]), row)
        replayed = 0
        for kind, row in self._wal.open():
            self._apply(kind, _decode(kind, row))
            replayed += 1
        self._revisions = max((int(s["revision"]) for s in self._sessions.values()), default=0)
        if replayed:
            log.info("study store: replayed %d logged records over the lake", replayed)
        self.flush()
        if not self._dirty:
            self._wal.truncate()
        self._thread = threading.Thread(target=self._run, name="study-store-flusher", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the flusher and write everything still pending (what fails stays in the log)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        try:
            self.flush()
        finally:
            self._wal.close()

    def __enter__(self) -> StudyStore:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # --- writes ------------------------------------------------------------------------------

    def _apply(self, kind: str, row: dict) -> None:
        """Apply a record to memory (under the lock, or before the flusher starts)."""
        sid = row["session_id"]
        if kind == "session":
            current = self._sessions.get(sid)
            if current is not None and current["revision"] > row["revision"]:
                return  # an older revision logged after a newer one: keep the newer
            self._sessions[sid] = row
        else:
            votes = self._votes.setdefault(sid, {})
            if int(row["comparison_index"]) in votes:
                return
            votes[int(row["comparison_index"])] = row
        self._changes += 1
        self._dirty[sid] = self._changes

    def save_session(self, row: dict) -> dict:
        """Store a session's new state (the whole row); durable when this returns."""
        with self._lock:
            # Revisions rise across all saves, so concurrent saves of one session order the same way in
            # memory and in the log.
            self._revisions += 1
            row = {f.name: row.get(f.name) for f in SESSIONS_SCHEMA} | {"revision": self._revisions}
            self._in_flight += 1
        try:
            self._wal.append(_encode("session", row))
            with self._lock:
                self._apply("session", row)
        finally:
            with self._lock:
                self._in_flight -= 1
        self._wake.set()
        return row

    def update_session(self, session_id: str, changes: dict) -> dict:
        """Change some fields of a stored session (read, merge and save as one step per session, so two
        updates of different fields never undo each other)."""
        with self._lock:
            guard = self._session_locks.setdefault(session_id, threading.Lock())
        with guard:
            current = self.session(session_id)
            if current is None:
                raise KeyError(f"no study session {session_id}")
            return self.save_session(current | changes)

    def add_vote(self, row: dict) -> dict:
        """Store one vote; durable when this returns. DuplicateVote if the comparison has one."""
        key = (row["session_id"], int(row["comparison_index"]))
        with self._lock:
            if key[0] not in self._sessions:
                raise ValueError("a vote needs a stored session")
            if key[1] in self._votes.get(key[0], {}) or key in self._reserved:
                raise DuplicateVote(f"comparison {key[1]} of this session already has a vote")
            self._reserved.add(key)
            self._in_flight += 1
        try:
            row = {f.name: row.get(f.name) for f in VOTES_SCHEMA}
            self._wal.append(_encode("vote", row))
            with self._lock:
                self._apply("vote", row)
        finally:
            with self._lock:
                self._reserved.discard(key)
                self._in_flight -= 1
        self._wake.set()
        return row

    # --- reads -------------------------------------------------------------------------------

    def session(self, session_id: str) -> dict | None:
        with self._lock:
            row = self._sessions.get(session_id)
            return dict(row) if row is not None else None

    def votes_of(self, session_id: str) -> list[dict]:
        with self._lock:
            return [dict(v) for _, v in sorted(self._votes.get(session_id, {}).items())]

    def all_sessions(self) -> list[dict]:
        with self._lock:
            return [dict(s) for s in self._sessions.values()]

    def all_votes(self) -> list[dict]:
        with self._lock:
            return [dict(v) for votes in self._votes.values() for v in votes.values()]

    def pending(self) -> int:
        """Sessions whose latest state is in the log but not yet in the lake."""
        with self._lock:
            return len(self._dirty)

    # --- flushing ----------------------------------------------------------------------------

    def flush(self) -> int:
        """Write every changed session's partitions now; returns how many sessions were written."""
        with self._flush_lock:
            with self._lock:
                work = [(sid, mark, dict(self._sessions[sid]),
                         [dict(v) for _, v in sorted(self._votes.get(sid, {}).items())])
                        for sid, mark in self._dirty.items() if sid in self._sessions]
            for sid, mark, session, votes in work:
                partition = {PARTITION_KEY: sid}
                with lake.atomic_partition(self.lake_dir, SESSIONS, partition) as folder:
                    lake.write_table(folder, pa.Table.from_pylist([session], schema=SESSIONS_SCHEMA), SESSIONS_SCHEMA)
                if votes:
                    with lake.atomic_partition(self.lake_dir, VOTES, partition) as folder:
                        lake.write_table(folder, pa.Table.from_pylist(votes, schema=VOTES_SCHEMA), VOTES_SCHEMA)
                with self._lock:
                    if self._dirty.get(sid) == mark:  # nothing changed while it was being written
                        del self._dirty[sid]
            with self._lock:
                if not self._dirty and not self._in_flight and self._wal.size() > ROTATE_BYTES:
                    self._wal.truncate()
        if work and self.on_flush is not None:
            self.on_flush(len(work))
        return len(work)

    def _run(self) -> None:
        backoff = self.flush_interval_s
        while not self._stop.is_set():
            self._wake.wait(timeout=backoff)
            self._wake.clear()
            if self._stop.is_set():
                break
            if self._stop.wait(self.flush_interval_s):  # let a burst of writes gather into one flush
                break
            try:
                self.flush()
                backoff = self.flush_interval_s
            except Exception:  # the log still holds everything: retry later, slower
                self.flush_failures += 1
                log.exception("study store: writing to the lake failed; retrying (the log keeps the records)")
                backoff = min(30.0, max(backoff * 2, 1.0))


def _fsync_directory(path: Path) -> None:
    """Make the entries of a folder (a file just created in it) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _append_all(fd: int, data: bytes) -> None:
    """Append all of `data`: `os.write` may write less than asked (a full disk, a signal). If the rest
    cannot be written, the part that was is cut off again, so the log never holds a torn record
    followed by whole ones (which reads back as a damaged log)."""
    start = os.lseek(fd, 0, os.SEEK_END)
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view):]
    except OSError:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, start)
        raise


class _GroupCommitLog:
    """An append-only JSON-lines file; `append` returns once its line is fsynced. Concurrent appends
    share one write and one fsync: the first waiting writer writes everything queued so far."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None
        self._cond = threading.Condition()
        self._queued: list[bytes] = []
        self._next = 0  # sequence number of the next queued line
        self._synced = 0  # lines [0, synced) are durable
        self._writing = False
        self._failed_upto: list[tuple[int, int, BaseException]] = []

    def open(self) -> list[tuple[str, dict]]:
        """Lock the log (one studio process per log), read its records (a torn last line dropped and
        cut off), and keep it open for appending."""
        created = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            # Two processes appending and truncating one log would lose each other's records.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RuntimeError(f"{self.path} is in use by another studio process; give each studio its own "
                               "studio folder, or stop the other one first") from None
        try:
            if created:  # the new file's name must survive a crash, as its contents do
                _fsync_directory(self.path.parent)
            records, good, size = self._read_records()
            if good < size:
                os.ftruncate(fd, good)
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return records

    def _read_records(self) -> tuple[list[tuple[str, dict]], int, int]:
        """The log's whole records, the length they take, and the file's length."""
        records = []
        good = 0
        data = self.path.read_bytes()
        position = 0
        while position < len(data):
            end = data.find(b"\n", position)
            if end < 0:
                log.warning("study log: dropping a torn last record (%d bytes, never acknowledged)",
                            len(data) - position)
                break
            line = data[position:end]
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise RuntimeError(f"{self.path}: record at byte {position} is not JSON ({error}); the log is "
                                   "damaged (keep a copy and inspect it before restarting)") from None
            records.append((record["kind"], record["row"]))
            position = good = end + 1
        return records, good, len(data)

    def append(self, line: bytes) -> None:
        with self._cond:
            if self._fd is None:
                raise RuntimeError("the study log is closed")
            self._queued.append(line)
            mine = self._next
            self._next += 1
            while self._synced <= mine:
                for low, high, error in self._failed_upto:
                    if low <= mine < high:
                        raise RuntimeError(f"could not write the study log: {error}") from error
                if self._writing:
                    self._cond.wait()
                    continue
                batch, low, high = self._queued, self._synced, self._next
                self._queued, self._writing = [], True
                self._cond.release()
                error = None
                try:
                    _append_all(self._fd, b"".join(batch))
                    os.fsync(self._fd)
                except OSError as caught:
                    error = caught
                finally:
                    self._cond.acquire()
                    self._writing = False
                if error is not None:
                    self._failed_upto.append((low, high, error))
                self._synced = high
                self._cond.notify_all()
            for low, high, error in self._failed_upto:
                if low <= mine < high:
                    raise RuntimeError(f"could not write the study log: {error}") from error

    def size(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def truncate(self) -> None:
        with self._cond:
            if self._fd is not None:
                os.ftruncate(self._fd, 0)
                os.fsync(self._fd)

    def close(self) -> None:
        with self._cond:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
