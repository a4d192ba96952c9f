"""The Parquet lake: dataset paths, atomic partition writes and readers.

Layout (Hive-style, one dataset per asset):
    lake/<dataset>/month=YYYY-MM/part-*.parquet
    lake/<dataset>/shard=NNN/part-*.parquet
    lake/<dataset>/part-*.parquet

A partition is written into a hidden temporary folder beside it and swapped in with one rename, so
readers never see a half-written partition, a re-run replaces rather than duplicates, and a killed
writer leaves the previous version intact. Readers skip names that start with `.` or `_`.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

PARQUET_COMPRESSION = "zstd"
_TMP_PREFIX = ".tmp-"
_OLD_PREFIX = ".old-"


def dataset_dir(lake_dir: Path, dataset: str) -> Path:
    _check_name(dataset, "dataset")
    return Path(lake_dir) / dataset


def partition_dir(lake_dir: Path, dataset: str, partition: Mapping[str, str] | None = None) -> Path:
    path = dataset_dir(lake_dir, dataset)
    for key, value in (partition or {}).items():
        _check_name(key, "partition key")
        _check_name(str(value), "partition value")
        path = path / f"{key}={value}"
    return path


def _check_name(name: str, what: str) -> None:
    # Partition values come from partition keys; never let one climb out of the lake.
    if not name or "/" in name or "\\" in name or name.startswith(".") or "\x00" in name:
        raise ValueError(f"invalid {what}: {name!r}")


@contextlib.contextmanager
def atomic_partition(
    lake_dir: Path, dataset: str, partition: Mapping[str, str] | None = None
) -> Iterator[Path]:
    """Yield an empty temporary folder; on success swap it in as the partition, on error drop it.

    Any earlier version of the partition stays readable until the swap and is removed after it.
    """
    final = partition_dir(lake_dir, dataset, partition)
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(final)
    tmp = final.parent / f"{_TMP_PREFIX}{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        _fsync_tree(tmp)
        _swap_in(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _remove_stale_temporaries(final: Path) -> None:
    """Remove temporaries of this partition left by writers that are no longer running."""
    for prefix in (_TMP_PREFIX, _OLD_PREFIX):
        for leftover in final.parent.glob(f"{prefix}{final.name}.*"):
            pid_text = leftover.name.rsplit(".", 2)[-2]
            if pid_text.isdigit() and _pid_alive(int(pid_text)) and int(pid_text) != os.getpid():
                continue
            shutil.rmtree(leftover, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_tree(folder: Path) -> None:
    for child in folder.iterdir():
        if child.is_file():
            fd = os.open(child, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _renameat2_exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths (Linux renameat2). False where the system cannot."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap_in(tmp: Path, final: Path) -> None:
    if not final.exists():
        os.rename(tmp, final)
        return
    if _renameat2_exchange(tmp, final):
        shutil.rmtree(tmp)  # tmp now holds the previous version
        return
    # Fallback without an atomic exchange: the partition is briefly absent, never half-written.
    old = final.parent / f"{_OLD_PREFIX}{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    os.rename(final, old)
    os.rename(tmp, final)
    shutil.rmtree(old)


class RotatingParquetWriter:
    """Writes record batches into part-NNNNN.parquet files of at most `rows_per_file` rows."""

    def __init__(self, folder: Path, schema: pa.Schema, rows_per_file: int = 5_000_000):
        self.folder = Path(folder)
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
        path = self.folder / f"part-{len(self.files):05d}.parquet"
        self._writer = pq.ParquetWriter(path, self.schema, compression=PARQUET_COMPRESSION)
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
    """Write one table as part-00000.parquet into `folder` (typically an atomic_partition)."""
    with RotatingParquetWriter(folder, schema or table.schema, rows_per_file=max(table.num_rows, 1)) as w:
        w.write(table)
    return w.files[0]


def partition_exists(lake_dir: Path, dataset: str, partition: Mapping[str, str] | None = None) -> bool:
    folder = partition_dir(lake_dir, dataset, partition)
    return folder.is_dir() and any(folder.glob("part-*.parquet"))


def parquet_files(
    lake_dir: Path, dataset: str, partitions: Sequence[Mapping[str, str]] | None = None
) -> list[Path]:
    """Part files of the dataset, or of the given partitions only (in the given order)."""
    if partitions is None:
        root = dataset_dir(lake_dir, dataset)
        return sorted(
            p for p in root.rglob("part-*.parquet")
            if not any(part.startswith((".", "_")) for part in p.relative_to(root).parts)
        )
    files: list[Path] = []
    for partition in partitions:
        files.extend(sorted(partition_dir(lake_dir, dataset, partition).glob("part-*.parquet")))
    return files


def read_table(
    lake_dir: Path,
    dataset: str,
    partitions: Sequence[Mapping[str, str]] | None = None,
    columns: Sequence[str] | None = None,
) -> pa.Table:
    """Read a dataset (or some of its partitions); Hive keys in the path are not added as columns."""
    files = parquet_files(lake_dir, dataset, partitions)
    if not files:
        where = f" partitions {list(partitions)}" if partitions is not None else ""
        raise FileNotFoundError(f"no Parquet files for dataset {dataset!r}{where} under {lake_dir}")
    return pads.dataset([str(f) for f in files], format="parquet").to_table(columns=columns)


def append_file(folder: Path, table: pa.Table) -> Path:
    """Add one immutable part file to an append-only dataset folder, atomically (temporary name,
    then rename): a killed writer leaves either the whole file or none."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"part-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.parquet"
    tmp = folder / f".{name}.tmp"
    pq.write_table(table, tmp, compression=PARQUET_COMPRESSION)
    tmp.rename(folder / name)
    return folder / name


def spilling_duckdb(memory_limit: str):
    """A DuckDB connection that spills past `memory_limit` into the system's temporary folder (DuckDB's
    own default is `.tmp` under the working directory, which may be a checkout or read-only)."""
    import tempfile

    import duckdb

    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{memory_limit}'")
    con.execute(f"SET temp_directory = '{Path(tempfile.gettempdir()) / 'zipp-duckdb-spill'}'")
    return con
