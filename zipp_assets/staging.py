"""Local Parquet staging for lake writes: scratch folders that writers fill before a Delta commit,
the rotating Parquet writer, and immutable work files outside the lake.

A scratch folder lives under ZIPP_SCRATCH_DIR (default: the system's temporary folder) and holds a
lock its writer keeps while it lives; the kernel drops the lock of a process that dies, even by
SIGKILL, so the next writer removes folders whose lock is free: killed runs do not fill the disk.
Nothing here writes into the lake itself (see `zipp_assets.lake`).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

PARQUET_COMPRESSION = "zstd"
# Staged files are read once, in order, by the commit, which writes the lake's own files (with their
# statistics): dictionaries and column statistics here would only cost time. Without them a month of
# comments is written in 0.6 us a row instead of 1.5, and zstd keeps the files as small.
_STAGING_OPTIONS = {"compression": PARQUET_COMPRESSION, "use_dictionary": False, "write_statistics": False}
_SCRATCH_PREFIX = "zipp-lake-"
_UNLOCKED_PREFIX = "zipp-lake-unlocked-"  # a scratch folder before its lock is held


def scratch_parent() -> Path:
    """Where writers stage Parquet files before a commit: ZIPP_SCRATCH_DIR, else the system's
    temporary folder (TMPDIR). It needs room for the largest partition written at once."""
    folder = Path(os.environ.get("ZIPP_SCRATCH_DIR") or tempfile.gettempdir())
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def remove_abandoned_scratch(parent: Path) -> None:
    """Remove scratch folders of writers that died (their lock is free: the kernel drops a dead
    process's locks), so killed runs do not fill the disk."""
    for folder in parent.glob(f"{_UNLOCKED_PREFIX}*"):  # a writer killed between making and locking its folder
        try:
            if time.time() - folder.stat().st_mtime > 3600:
                shutil.rmtree(folder, ignore_errors=True)
        except FileNotFoundError:
            pass
    for folder in parent.glob(f"{_SCRATCH_PREFIX}*"):
        if folder.name.startswith(_UNLOCKED_PREFIX):
            continue
        lock_path = folder / ".lock"
        try:
            fd = os.open(lock_path, os.O_RDWR)
        except FileNotFoundError:
            try:
                if time.time() - folder.stat().st_mtime > 3600:  # never got its lock (killed as it was made)
                    shutil.rmtree(folder, ignore_errors=True)
            except FileNotFoundError:
                pass  # removed meanwhile
            continue
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a live writer holds it
        else:
            shutil.rmtree(folder, ignore_errors=True)
        finally:
            os.close(fd)


class Scratch:
    """A fresh scratch folder, locked by this process until `remove`."""

    def __init__(self) -> None:
        parent = scratch_parent()
        remove_abandoned_scratch(parent)
        # Made and locked under a name the sweep ignores, then renamed into view: another writer's
        # sweep must never find a live folder whose lock exists but is not yet held (it would delete it).
        hidden = Path(tempfile.mkdtemp(prefix=_UNLOCKED_PREFIX, dir=parent))
        self._lock = os.open(hidden / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._lock, fcntl.LOCK_EX)  # held while this writer lives
        self.folder = parent / (_SCRATCH_PREFIX + hidden.name[len(_UNLOCKED_PREFIX):])
        os.rename(hidden, self.folder)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        os.close(self._lock)

    def __enter__(self) -> Path:
        return self.folder

    def __exit__(self, *exc) -> None:
        self.remove()


class RotatingParquetWriter:
    """Writes record batches into <prefix>-NNNNN.parquet files of at most `rows_per_file` rows, in a
    local folder (typically an `atomic_partition` scratch folder). Several writers share a folder
    under different prefixes."""

    def __init__(self, folder: Path, schema: pa.Schema, rows_per_file: int = 5_000_000, prefix: str = "part"):
        self.folder = Path(folder)
        self.prefix = prefix
        self.schema = schema
        self.rows_per_file = rows_per_file
        self.rows_written = 0
        self.files: list[Path] = []
        self._writer: pq.ParquetWriter | None = None
        self._rows_in_file = 0

    def write(self, table: pa.Table) -> None:
        table = table.select(self.schema.names).cast(self.schema)
        offset = 0
        while offset < table.num_rows:
            if self._writer is None or self._rows_in_file >= self.rows_per_file:
                self._open_next()
            take = min(table.num_rows - offset, self.rows_per_file - self._rows_in_file)
            self._writer.write_table(table.slice(offset, take))
            self._rows_in_file += take
            self.rows_written += take
            offset += take

    def _open_next(self) -> None:
        self._close_current()
        path = self.folder / f"{self.prefix}-{len(self.files):05d}.parquet"
        self._writer = pq.ParquetWriter(path, self.schema, **_STAGING_OPTIONS)
        self.files.append(path)
        self._rows_in_file = 0

    def _close_current(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def close(self) -> None:
        if not self.files:
            # An empty partition is still a partition: write one file with the schema.
            self._open_next()
        self._close_current()

    def __enter__(self) -> RotatingParquetWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_table(folder: Path, table: pa.Table, schema: pa.Schema | None = None) -> Path:
    """Write one table as part-00000.parquet into a local `folder` (typically an atomic_partition)."""
    with RotatingParquetWriter(folder, schema or table.schema, rows_per_file=max(table.num_rows, 1)) as w:
        w.write(table)
    return w.files[0]


def append_file(folder: Path, table: pa.Table) -> Path:
    """Add one immutable Parquet file to a local work folder (not the lake: use `append_rows`),
    atomically (temporary name, then rename): a killed writer leaves either the whole file or none."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"part-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.parquet"
    tmp = folder / f".{name}.tmp"
    pq.write_table(table, tmp, compression=PARQUET_COMPRESSION)
    tmp.rename(folder / name)
    return folder / name
