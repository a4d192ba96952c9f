"""The lake: one Delta Lake table per dataset (delta-rs), on a local path or an object store.

    <lake root>/<dataset>/            a Delta table (`_delta_log/` and its Parquet files)

The root is a local path or a URI (`s3://bucket/prefix`, `gs://...`, `az://...`); credentials and
endpoints come from the environment (`storage_options`). Nothing here writes a file into a table
except delta-rs, and nothing reads one except through a table version.

Writes. A partition (`{"month": "2019-01"}`, `{"shard": "007"}`, ...) is replaced with one
predicate-overwrite commit; a table without partitions with one overwrite commit. A caller fills a
local scratch folder with Parquet files (`atomic_partition`, `RotatingParquetWriter`; see
`zipp_assets.staging`); only when its block ends without error are those rows committed, so a failed or killed writer leaves the
previous version current (its orphaned data files are removed by `vacuum`). Append-only tables
(`append_rows`) add one commit per call.

Concurrent writers. A writer is checked against the table version current when it began
(`Build.partition`, `write_partition`): if another writer committed the same partition (or the
whole table) since, its commit fails with `ConcurrentWrite` and none of its rows land; the other
writer's rows stay. Writers of different partitions commit side by side. A table that does not exist yet is
first created empty by a commit of its own, which only one writer can make (a loser finds the
table made and goes on), so two first writers are checked like any other two; a reader treats a
table that holds only that creation as not written yet.

Build ids. Tables built together (a month's rows and its quarantine; users, subreddits and
graph_edges; user embeddings and attention) are written under one build id (`build`). The id is
recorded per partition as a Delta app transaction (`txn` action, app id `zipp.build[/key=value]`,
version = the id) in the same commit as the rows. It is therefore part of the table version a
reader sees, atomically with the rows, it is there for a partition written empty (an empty
quarantine), and it survives vacuum and checkpoints. A kill between two tables' commits leaves
ids that disagree; `open_tables` refuses such a set with `BuildMismatch` naming the tables.

Reads. `open_table` pins one table version (a `TableSnapshot`): a concurrent writer never changes
what it returns. polars and DuckDB read it as an Arrow dataset (`TableSnapshot.to_dataset`). A
partition that was never written is an error (`PartitionNotFound`), never an empty result.

Versions. Every table version opened and committed inside `recording()` is noted, for the
materialization's metadata (`zipp_assets.metadata.lake_versions`).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

# Writers fill local scratch folders through these; they are part of the lake's writing API.
from zipp_assets.staging import (  # noqa: F401
    PARQUET_COMPRESSION,
    RotatingParquetWriter,
    Scratch,
    append_file,
    scratch_parent,
    write_table,
)

LakeRoot = str | os.PathLike
Partition = Mapping[str, str]

_DATASET_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_PARTITION_KEY = re.compile(r"^[a-z][a-z0-9_]*$")
_PARTITION_VALUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # safe inside a quoted predicate and a path
_BUILD_APP_ID = "zipp.build"
# The build of the table a derived table was computed from, recorded in the derived table's own commit
# (encoder outputs: their own build id, and the graph build whose user indexes they use).
_BUILT_FROM_APP_ID = "zipp.built_from"
# The description of a table `_create_if_absent` made: at version 0 such a table holds no writes yet.
_CREATED_EMPTY = "zipp_assets lake table (created empty; rows come in later commits)"
# Object-store settings read from the environment (delta-rs's object_store keys).
_STORAGE_ENV_PREFIXES = ("AWS_", "GOOGLE_", "AZURE_")


class TableNotFound(FileNotFoundError):
    pass


class PartitionNotFound(FileNotFoundError):
    pass


class BuildMismatch(RuntimeError):
    """Tables that must come from one build carry different build ids (a writer stopped half way)."""


class ConcurrentWrite(RuntimeError):
    """Another writer committed the same partition (or whole table) after this one began: this
    writer's rows were not committed, and the table keeps the other writer's (a build of several
    tables also undoes the commits it had made, where nothing was committed on top of them)."""


# ---------------------------------------------------------------------------------------------
# Locations


def is_object_store(root: LakeRoot) -> bool:
    text = str(root)
    return "://" in text and not text.startswith("file://")


def _root_text(root: LakeRoot) -> str:
    if is_object_store(root):
        return str(root).rstrip("/")
    return str(Path(str(root).removeprefix("file://")).expanduser().resolve())


def storage_options(root: LakeRoot, environ: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """delta-rs storage options for an object-store root, from AWS_*/GOOGLE_*/AZURE_* variables
    (keys, region, AWS_ENDPOINT_URL, AWS_ALLOW_HTTP, AWS_CONDITIONAL_PUT=etag, ...); None locally."""
    if not is_object_store(root):
        return None
    env = os.environ if environ is None else environ
    return {k: v for k, v in env.items() if k.startswith(_STORAGE_ENV_PREFIXES) and v}


def _check_dataset(dataset: str) -> None:
    if not _DATASET_NAME.match(dataset or ""):
        raise ValueError(f"invalid dataset name: {dataset!r}")


def _check_partition(partition: Partition | None) -> dict[str, str]:
    # Partition values come from partition keys and end up in a predicate and a path: allow only
    # plain names, never quotes, separators or a leading dot.
    checked = {}
    for key, value in (partition or {}).items():
        if not _PARTITION_KEY.match(str(key)):
            raise ValueError(f"invalid partition key: {key!r}")
        if not _PARTITION_VALUE.match(str(value)) or ".." in str(value):
            raise ValueError(f"invalid partition value: {value!r}")
        checked[str(key)] = str(value)
    return checked


def table_uri(root: LakeRoot, dataset: str) -> str:
    _check_dataset(dataset)
    return f"{_root_text(root)}/{dataset}"


def dataset_dir(root: LakeRoot, dataset: str) -> Path | str:
    """Where the table lives (a Path on a local lake, a URI on an object store). For messages and
    links: read and write it only through this module."""
    uri = table_uri(root, dataset)
    return uri if is_object_store(root) else Path(uri)


def partition_dir(root: LakeRoot, dataset: str, partition: Partition | None = None) -> Path | str:
    """Where delta-rs puts a partition's files (Hive-style `key=value`), for messages only."""
    location = dataset_dir(root, dataset)
    for key, value in _check_partition(partition).items():
        location = location / f"{key}={value}" if isinstance(location, Path) else f"{location}/{key}={value}"
    return location


def _partition_label(partition: Partition) -> str:
    return "/".join(f"{k}={v}" for k, v in partition.items())


def _build_app_id(partition: Partition, app: str = _BUILD_APP_ID) -> str:
    return f"{app}/{_partition_label(partition)}" if partition else app


def new_build_id() -> int:
    return secrets.randbits(62) + 1  # a Delta txn version: a positive int64


def format_build(build_id: int | None) -> str:
    return "none" if build_id is None else f"{build_id:016x}"


# File names of the pre-Delta lake's writers (RotatingParquetWriter, append_file). delta-rs names
# its files part-NNNNN-<uuid>-c000...: a first commit killed mid-write leaves those without a log,
# which is not an old lake (the table simply does not exist yet).
_LEGACY_FILE = re.compile(r"^part-(\d{5}|\d{8}T\d{6}-[0-9a-f]{8})\.parquet$")


def _is_legacy(folder: Path) -> bool:
    return folder.is_dir() and not (folder / "_delta_log").is_dir() and any(
        _LEGACY_FILE.match(p.name) for p in folder.rglob("*.parquet"))


def legacy_tables(root: LakeRoot) -> list[str]:
    """Folders of a local lake written by the pre-Delta lake (Parquet files, no Delta log)."""
    folder = Path(_root_text(root))
    if is_object_store(root) or not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if _is_legacy(p))


def _check_not_legacy(root: LakeRoot, dataset: str) -> None:
    if is_object_store(root):
        return
    folder = Path(table_uri(root, dataset))
    if _is_legacy(folder):
        raise RuntimeError(f"{folder} holds Parquet files but no Delta log: it was written by the earlier, "
                           "pre-Delta lake. Delete it (or the whole lake folder) and materialize again.")


# ---------------------------------------------------------------------------------------------
# Recording versions read and written


@dataclass
class LakeActivity:
    """Table versions opened and committed while a `recording()` block ran."""

    read: dict[str, set[int]] = field(default_factory=dict)
    written: dict[str, set[int]] = field(default_factory=dict)


_recorders: list[LakeActivity] = []
_recorders_lock = threading.Lock()


@contextlib.contextmanager
def recording() -> Iterator[LakeActivity]:
    activity = LakeActivity()
    with _recorders_lock:
        _recorders.append(activity)
    try:
        yield activity
    finally:
        with _recorders_lock:
            _recorders.remove(activity)


def _note(kind: str, dataset: str, version: int) -> None:
    with _recorders_lock:
        for activity in _recorders:
            getattr(activity, kind).setdefault(dataset, set()).add(version)


# ---------------------------------------------------------------------------------------------
# Reading


class TableSnapshot:
    """One version of one table. Everything it returns comes from that version."""

    def __init__(self, root: LakeRoot, dataset: str, table):
        self.root, self.dataset, self._table = root, dataset, table
        self.version: int = table.version()
        self.partition_columns: list[str] = list(table.metadata().partition_columns)

    def __repr__(self) -> str:
        return f"TableSnapshot({self.dataset!r}, version={self.version})"

    @property
    def schema(self) -> pa.Schema:
        return self._table.to_pyarrow_dataset().schema

    def build_id(self, partition: Partition | None = None) -> int | None:
        """The build id the partition (or the whole table) was last written under; None if never."""
        return self._table.transaction_version(_build_app_id(_check_partition(partition)))

    def built_from(self, partition: Partition | None = None) -> int | None:
        """The source build the partition (or whole table) was computed from, as its last write
        recorded it (`Build(built_from=...)`); None if that write recorded none."""
        return self._table.transaction_version(_build_app_id(_check_partition(partition), _BUILT_FROM_APP_ID))

    def partitions(self) -> list[dict[str, str]]:
        """Partitions that hold rows in this version (a partition written empty holds none)."""
        return sorted(self._table.partitions(), key=lambda p: sorted(p.items()))

    def has_partition(self, partition: Partition | None = None) -> bool:
        """Written at this version: recorded by a build (even with no rows), or holding appended rows."""
        partition = _check_partition(partition)
        if not partition or self.build_id(partition) is not None:
            return True
        return partition in self._table.partitions()

    def to_dataset(self, partitions: Sequence[Partition] | None = None) -> pads.Dataset:
        """This version as an Arrow dataset (all of it, or the given partitions, each of which must
        have been written): for pyarrow, DuckDB (`con.register`) and polars (`pl.scan_pyarrow_dataset`)."""
        if partitions is None:
            return self._table.to_pyarrow_dataset()
        checked = [_check_partition(p) for p in partitions]
        missing = [p for p in checked if not self.has_partition(p)]
        if missing:
            raise PartitionNotFound(f"{self.dataset} (version {self.version}) has no partition "
                                    f"{', '.join(_partition_label(p) for p in missing)}: materialize it first")
        if not checked:
            return pads.dataset([], schema=self.schema)
        return self._table.to_pyarrow_dataset(
            file_pruning_predicate=[[(k, "=", v) for k, v in p.items()] for p in checked])

    def read(self, partitions: Sequence[Partition] | None = None, columns: Sequence[str] | None = None) -> pa.Table:
        # One thread: a threaded scan of delta-rs's dataset leaves Arrow threads that abort the process at
        # exit ("terminate called without an active exception", exit 134) about half the time.
        return self.to_dataset(partitions).to_table(columns=list(columns) if columns is not None else None,
                                                    use_threads=False)

    def content_version(self) -> int:
        """The newest version at or before this one that changed rows: vacuum's own commits change
        none, so a vacuumed table keeps its content version (what a checkpoint's data version uses)."""
        from deltalake import DeltaTable

        latest = DeltaTable(table_uri(self.root, self.dataset), storage_options=storage_options(self.root))
        limit = 16
        while True:
            entries = latest.history(limit)  # newest first, numbered from the latest version
            for entry in entries:
                if entry["version"] <= self.version and not str(entry.get("operation", "")).startswith("VACUUM"):
                    return int(entry["version"])
            if len(entries) < limit:
                return self.version  # history cleaned up past this point: the version itself
            limit *= 8

    def size(self) -> tuple[int, int]:
        """(rows, bytes) of this version, from the log's file statistics (no data is read)."""
        actions = pa.table(self._table.get_add_actions(flatten=True))
        if actions.num_rows == 0:
            return 0, 0
        return int(pa.compute.sum(actions["num_records"]).as_py() or 0), int(pa.compute.sum(actions["size_bytes"]).as_py())

    def file_uris(self) -> list[str]:
        """The data files of this version (for inspection only; read through `to_dataset`)."""
        return list(self._table.file_uris())


def _is_bare_creation(table) -> bool:
    return table.version() == 0 and table.metadata().description == _CREATED_EMPTY


def table_exists(root: LakeRoot, dataset: str) -> bool:
    """A table someone has committed rows (or an empty partition) to; one only created is not."""
    from deltalake import DeltaTable

    _check_not_legacy(root, dataset)
    uri, options = table_uri(root, dataset), storage_options(root)
    return DeltaTable.is_deltatable(uri, options) and not _is_bare_creation(DeltaTable(uri, storage_options=options))


def open_table(root: LakeRoot, dataset: str, version: int | None = None) -> TableSnapshot:
    """The table at `version` (default: the current one), pinned."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    uri = table_uri(root, dataset)
    _check_not_legacy(root, dataset)
    try:
        table = DeltaTable(uri, version=version, storage_options=storage_options(root))
    except TableNotFoundError:
        table = None
    if table is None or _is_bare_creation(table):
        raise TableNotFound(f"no table {dataset!r} in the lake at {_root_text(root)}: materialize it first")
    snapshot = TableSnapshot(root, dataset, table)
    _note("read", dataset, snapshot.version)
    return snapshot


def check_same_build(snapshots: Sequence[TableSnapshot], partition: Partition | None = None) -> int | None:
    """The one build id the tables share (for `partition`, or as whole tables); else BuildMismatch."""
    ids = {s.dataset: s.build_id(partition) for s in snapshots}
    if len(set(ids.values())) > 1:
        where = f" partition {_partition_label(_check_partition(partition))}" if partition else ""
        listed = ", ".join(f"{name} (version {s.version}) has build {format_build(ids[name])}"
                           for name, s in zip(ids, snapshots))
        raise BuildMismatch(f"tables written together disagree{where}: {listed}. A writer stopped between "
                            "their commits; materialize them again.")
    return next(iter(ids.values()), None)


def check_built_from(derived: TableSnapshot, partition: Partition | None, source: TableSnapshot) -> None:
    """`derived` (or its `partition`) was computed from the build `source` has now: the source build
    its write recorded (`built_from`: the encoder's outputs, which have a build id of their own), or,
    where it recorded none, its own build id (visual profiles are written under the graph's build).
    Else BuildMismatch naming both."""
    recorded = derived.built_from(partition)
    mine, theirs = (recorded if recorded is not None else derived.build_id(partition)), source.build_id()
    if mine != theirs:
        where = f" partition {_partition_label(_check_partition(partition))}" if partition else ""
        what = "was computed from build" if recorded is not None else "has build"
        raise BuildMismatch(f"{derived.dataset} (version {derived.version}){where} {what} {format_build(mine)}, but "
                            f"{source.dataset} (version {source.version}), which it is computed from, has build "
                            f"{format_build(theirs)}: materialize {derived.dataset} again")


# A writer commits the tables of one build one after another, so a reader that opens them between two
# of those commits sees them disagree for as long as the next commit takes. It waits this long for them
# to agree before calling the set mixed (a writer that died between its commits leaves it mixed for good).
MIXED_BUILD_WAIT_SECONDS = 5.0


def open_tables(root: LakeRoot, datasets: Sequence[str], partitions: Sequence[Partition] | None = None,
                wait_seconds: float | None = None) -> dict[str, TableSnapshot]:
    """Tables built together, each pinned at its current version, after checking that they share a
    build id: as whole tables, or for each of `partitions` (all partitions any of them holds when
    `partitions` is None and they are partitioned). Tables that disagree are opened again for up to
    `wait_seconds` (default `MIXED_BUILD_WAIT_SECONDS`) before BuildMismatch is raised."""
    deadline = time.monotonic() + (MIXED_BUILD_WAIT_SECONDS if wait_seconds is None else wait_seconds)
    while True:
        snapshots = {d: open_table(root, d) for d in datasets}
        tables = list(snapshots.values())
        try:
            if any(s.partition_columns for s in tables):
                wanted = partitions if partitions is not None else [
                    dict(p) for p in {tuple(sorted(q.items())) for s in tables for q in s.partitions()}]
                for partition in wanted:
                    check_same_build(tables, partition)
            else:
                check_same_build(tables)
            return snapshots
        except BuildMismatch:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.25)


def vector_matrix(column: pa.ChunkedArray | pa.Array, dtype=np.float32) -> np.ndarray:
    """A column of equal-length vectors (fixed- or variable-size lists) as an [rows, dim] array, through
    Arrow's flat values: no Python float per element (a 768-d embedding is 27 KB as a Python list)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], column.type)
    rows = len(column)
    if rows == 0:
        return np.zeros((0, 0), dtype)
    if column.null_count:
        raise ValueError(f"{column.null_count} of {rows} vectors are null")
    values = np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=dtype)
    if len(values) % rows:
        raise ValueError(f"{len(values)} values do not make {rows} vectors of one length")
    matrix = values.reshape(rows, len(values) // rows)
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    if (lengths != matrix.shape[1]).any():
        raise ValueError("vectors of different lengths")
    return matrix


def read_table(root: LakeRoot, dataset: str, partitions: Sequence[Partition] | None = None,
               columns: Sequence[str] | None = None) -> pa.Table:
    """The current version of a table (or of some partitions, each of which must exist)."""
    return open_table(root, dataset).read(partitions, columns)


def partition_exists(root: LakeRoot, dataset: str, partition: Partition | None = None) -> bool:
    if not table_exists(root, dataset):
        return False
    return open_table(root, dataset).has_partition(partition)


def _delta_folders(root: LakeRoot) -> list[str]:
    """Names of the Delta tables under the root, written or only created."""
    if is_object_store(root):
        from deltalake import DeltaTable
        from deltalake.fs import DeltaStorageHandler
        from pyarrow.fs import FileSelector, FileType, PyFileSystem

        fs = PyFileSystem(DeltaStorageHandler(_root_text(root), storage_options(root)))
        names = [Path(i.path).name for i in fs.get_file_info(FileSelector("", allow_not_found=True))
                 if i.type == FileType.Directory]
        return sorted(n for n in names if _DATASET_NAME.match(n)
                      and DeltaTable.is_deltatable(table_uri(root, n), storage_options(root)))
    folder = Path(_root_text(root))
    return sorted(p.name for p in folder.iterdir() if _DATASET_NAME.match(p.name) and (p / "_delta_log").is_dir()) \
        if folder.is_dir() else []


def list_tables(root: LakeRoot) -> list[str]:
    """Names of the tables under the root that a reader can open (a table only created is not one)."""
    return [name for name in _delta_folders(root) if table_exists(root, name)]


# ---------------------------------------------------------------------------------------------
# Writing


_COMMIT_BATCH_ROWS = 256_000


def _scratch_reader(files: Sequence[Path], partition: dict[str, str]) -> pa.RecordBatchReader:
    """The scratch files' rows, in file order, with each partition key added as a string column."""
    schema = pq.read_schema(files[0])
    added = [k for k in partition if k not in schema.names]
    out_schema = schema
    for key in added:
        out_schema = out_schema.append(pa.field(key, pa.string()))

    def file_batches(path: Path) -> Iterator[pa.RecordBatch]:
        # Row groups read one at a time and cut into batches of `_COMMIT_BATCH_ROWS` across their
        # boundaries: `iter_batches` held most of a file before its first batch (1.5 GiB for 2M rows of
        # 128-float embeddings; a scratch file holds up to 5M rows). The batches are the ones it gave,
        # whatever the row groups: delta-rs spreads a stream's batches over its writers, so the
        # batches decide the order rows come back in.
        file = pq.ParquetFile(path, pre_buffer=False)
        pending: list[pa.Table] = []
        rows = 0
        for group in range(file.num_row_groups):
            pending.append(file.read_row_group(group).select(schema.names).cast(schema))
            rows += pending[-1].num_rows
            while rows >= _COMMIT_BATCH_ROWS:
                table = pa.concat_tables(pending)
                yield from table.slice(0, _COMMIT_BATCH_ROWS).combine_chunks().to_batches()
                pending, rows = [table.slice(_COMMIT_BATCH_ROWS)], rows - _COMMIT_BATCH_ROWS
        if rows:
            yield from pa.concat_tables(pending).combine_chunks().to_batches()

    def batches() -> Iterator[pa.RecordBatch]:
        for path in files:
            for b in file_batches(path):
                extra = [pa.array([partition[k]] * b.num_rows, pa.string()) for k in added]
                yield pa.RecordBatch.from_arrays(b.columns + extra, schema=out_schema)

    return pa.RecordBatchReader.from_batches(out_schema, batches())


def _pin(root: LakeRoot, dataset: str):
    """The table as it is now, which a writer beginning now is checked against at commit (None: no
    table yet)."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    _check_not_legacy(root, dataset)
    try:
        return DeltaTable(table_uri(root, dataset), storage_options=storage_options(root))
    except TableNotFoundError:
        return None


def _create_if_absent(root: LakeRoot, dataset: str, schema: pa.Schema, partition_by: list[str]):
    """Version 0 of a new table, empty, made by whichever writer commits it first. delta-rs retries
    a lost first commit as the next version without checking it against the winner's, so two
    first writes both land (both runs' rows under one build id): hence an empty creation, never
    retried, and every write after it checked against it."""
    from deltalake import DeltaTable, write_deltalake
    from deltalake.exceptions import DeltaError
    from deltalake.transaction import CommitProperties

    uri, options = table_uri(root, dataset), storage_options(root)
    try:
        # mode "error", not "ignore": "ignore" still commits an empty version when it finds the table made
        write_deltalake(uri, schema.empty_table(), mode="error", partition_by=partition_by or None,
                        description=_CREATED_EMPTY, storage_options=options,
                        commit_properties=CommitProperties(max_commit_retries=0))
    except DeltaError:  # made by another writer since `_pin` (the table exists), or a real failure
        if not DeltaTable.is_deltatable(uri, options):
            raise
    return DeltaTable(uri, version=0, storage_options=options)


def _commit(root: LakeRoot, dataset: str, data: pa.RecordBatchReader, partition: dict[str, str], mode: str,
            build_id: int | None, base, built_from: int | None = None):
    """Commit `data` to the partition (or whole table), checked against `base` (`_pin`'s table, None
    if there was none): a commit by another writer to the same partition since then fails this one
    with `ConcurrentWrite`. `built_from`: the source build to record in the same commit (with a
    build id only). Returns the table at the version committed."""
    from deltalake import WriterProperties, write_deltalake
    from deltalake.exceptions import CommitFailedError
    from deltalake.transaction import CommitProperties, Transaction

    _check_not_legacy(root, dataset)
    if base is None:
        base = _create_if_absent(root, dataset, data.schema, list(partition))
    custom = {"zipp.partition": _partition_label(partition) or "(whole table)"}
    transactions = None
    if build_id is not None:
        custom["zipp.build_id"] = format_build(build_id)
        transactions = [Transaction(app_id=_build_app_id(partition), version=build_id)]
        if built_from is not None:
            custom["zipp.built_from"] = format_build(built_from)
            transactions.append(Transaction(app_id=_build_app_id(partition, _BUILT_FROM_APP_ID), version=built_from))
    kwargs: dict = {"mode": mode, "writer_properties": WriterProperties(compression=PARQUET_COMPRESSION.upper()),
                    "commit_properties": CommitProperties(custom_metadata=custom, app_transactions=transactions)}
    if mode == "overwrite" and partition:
        kwargs |= {"predicate": " AND ".join(f"{k} = '{v}'" for k, v in partition.items()),
                   "partition_by": list(partition), "schema_mode": "merge"}
    elif mode == "overwrite":
        kwargs |= {"schema_mode": "overwrite"}  # the whole table is replaced, its schema too
    else:
        kwargs |= {"partition_by": list(partition) or None, "schema_mode": "merge"}
    began_at = base.version()
    try:
        write_deltalake(base, data, **kwargs)
    except CommitFailedError as error:
        raise _concurrent_write(root, dataset, partition, began_at, error) from None
    _note("written", dataset, base.version())
    return base


def _concurrent_write(root: LakeRoot, dataset: str, partition: dict[str, str], began_at: int,
                      error: Exception) -> ConcurrentWrite:
    from deltalake import DeltaTable

    where = f"{dataset} {_partition_label(partition)}" if partition else f"{dataset} (whole table)"
    now = DeltaTable(table_uri(root, dataset), storage_options=storage_options(root))
    build_id = now.transaction_version(_build_app_id(partition))
    return ConcurrentWrite(
        f"{where}: another writer committed it after this one began at version {began_at} (the table is now at "
        f"version {now.version()}, build {format_build(build_id)}). This writer's rows were not committed; the "
        f"table keeps the other writer's. Materialize it again to replace them. (delta-rs: {error})")


def _undo_commit(root: LakeRoot, dataset: str, partition: dict[str, str], version: int, build_id: int) -> str | None:
    """Restore `dataset` to the version before `version` (this build's commit of `partition`), with
    that version's build ids, if `version` is still the table's latest. None when undone, else why not."""
    from deltalake import DeltaTable
    from deltalake.exceptions import CommitFailedError, DeltaError
    from deltalake.transaction import CommitProperties, Transaction

    uri, options = table_uri(root, dataset), storage_options(root)
    table = DeltaTable(uri, storage_options=options)
    if table.version() != version:
        return f"version {table.version()} was committed on top of it"
    before = DeltaTable(uri, version=version - 1, storage_options=options)
    app_ids = (_build_app_id(partition), _build_app_id(partition, _BUILT_FROM_APP_ID))
    earlier = [before.transaction_version(app_id) for app_id in app_ids]
    if earlier[0] is None:
        return "it held no build before this one"
    if earlier[1] is None and table.transaction_version(app_ids[1]) is not None:
        return "the build before it recorded no source build, and a recorded one cannot be taken back"
    custom = {"zipp.partition": _partition_label(partition) or "(whole table)", "zipp.build_id": format_build(earlier[0]),
              "zipp.undone_build": format_build(build_id)}
    if earlier[1] is not None:
        custom["zipp.built_from"] = format_build(earlier[1])
    transactions = [Transaction(app_id=a, version=v) for a, v in zip(app_ids, earlier) if v is not None]
    try:  # never retried: a commit on top since the check above fails it
        table.restore(version - 1, commit_properties=CommitProperties(custom_metadata=custom, app_transactions=transactions,
                                                                      max_commit_retries=0))
    except CommitFailedError:
        return "another commit came on top of it while it was being undone"
    except DeltaError as error:  # e.g. the earlier version's files vacuumed away
        return f"the restore failed: {error}"
    _note("written", dataset, table.version())
    return None


class Build:
    """Tables written together under one build id. Each gets a local scratch folder to fill with
    Parquet files; `commit` writes them to their tables, one Delta commit each, in order.
    `built_from`: the build of the tables they were computed from, recorded in each commit
    (`TableSnapshot.built_from`, checked by `check_built_from`).

    Delta commits one table at a time. When another writer wins a later table of the set
    (`ConcurrentWrite`), the tables this build had already committed would pair its rows with the
    other writer's; so those commits are undone, newest first, by restoring each table to the version
    before it (with that version's build id), wherever nothing was committed on top of it. The set
    is then the other writer's, whole, instead of mixed until someone rebuilds it."""

    def __init__(self, root: LakeRoot, build_id: int | None = None, built_from: int | None = None):
        self.root = root
        self.build_id = build_id if build_id is not None else new_build_id()
        self.built_from = built_from
        self._scratch = Scratch()
        self._parts: list[tuple[str, dict[str, str], Path]] = []
        self._bases: dict = {}  # each table as this build found it: its commit is checked against that
        self.versions: dict[str, int] = {}
        self._committed: list[tuple[str, dict[str, str], int]] = []  # (table, partition, version), in order

    def partition(self, dataset: str, partition: Partition | None = None) -> Path:
        checked = _check_partition(partition)
        _check_dataset(dataset)
        folder = self._scratch.folder / f"{len(self._parts):02d}-{dataset}"
        folder.mkdir()
        self._parts.append((dataset, checked, folder))
        if dataset not in self._bases:
            self._bases[dataset] = _pin(self.root, dataset)
        return folder

    def commit(self) -> dict[str, int]:
        for dataset, partition, folder in self._parts:
            files = sorted(folder.glob("*.parquet"))
            if not files:
                raise ValueError(f"nothing was written for {dataset} {_partition_label(partition)}: "
                                 "a partition needs at least one Parquet file (empty ones carry the schema)")
            try:
                self._bases[dataset] = _commit(self.root, dataset, _scratch_reader(files, partition), partition,
                                               "overwrite", self.build_id, self._bases[dataset], self.built_from)
            except ConcurrentWrite as error:
                if self._committed:
                    raise ConcurrentWrite(f"{error} {self._undo()}") from None
                raise
            self.versions[dataset] = self._bases[dataset].version()
            self._committed.append((dataset, partition, self.versions[dataset]))
        return self.versions

    def _undo(self) -> str:
        """Undo this build's commits, newest first; says what was undone and what could not be."""
        names = [f"{dataset} {_partition_label(partition)}".strip() for dataset, partition, _ in self._committed]
        undone, kept = [], []
        for name, (dataset, partition, version) in reversed(list(zip(names, self._committed))):
            why_not = _undo_commit(self.root, dataset, partition, version, self.build_id)
            if why_not is None:
                undone.append(name)
            else:
                kept.append(f"{name} ({why_not})")
        said = f"This build had already committed {', '.join(names)}."
        if undone:
            said += f" Undone, restored to the version before (the other writer's): {', '.join(undone)}."
        if kept:
            said += (f" Not undone: {'; '.join(kept)}; readers refuse the set (BuildMismatch) until it is "
                     "materialized again.")
        return said

    def discard(self) -> None:
        self._scratch.remove()


@contextlib.contextmanager
def build(root: LakeRoot, build_id: int | None = None, built_from: int | None = None) -> Iterator[Build]:
    """Scratch folders for tables written together; committed, under one build id (recording the
    source build `built_from`, if given), only if the block ends without an error."""
    together = Build(root, build_id, built_from)
    try:
        yield together
        together.commit()
    finally:
        together.discard()


@contextlib.contextmanager
def atomic_partition(root: LakeRoot, dataset: str, partition: Partition | None = None,
                     build_id: int | None = None) -> Iterator[Path]:
    """A local scratch folder for one partition (or a whole table); on success its Parquet files'
    rows replace the partition in one Delta commit, on error nothing is committed."""
    with build(root, build_id) as together:
        yield together.partition(dataset, partition)


def write_partition(root: LakeRoot, dataset: str, table: pa.Table, partition: Partition | None = None,
                    build_id: int | None = None, built_from: int | None = None) -> int:
    """Replace a partition (or a whole table) with `table` in one commit; returns the new version."""
    checked = _check_partition(partition)
    reader = _scratch_reader_from_table(table, checked)
    return _commit(root, dataset, reader, checked, "overwrite", build_id if build_id is not None else new_build_id(),
                   _pin(root, dataset), built_from).version()


def append_rows(root: LakeRoot, dataset: str, table: pa.Table, partition: Partition | None = None) -> int:
    """Add rows to an append-only table (or one of its partitions) in one commit."""
    checked = _check_partition(partition)
    return _commit(root, dataset, _scratch_reader_from_table(table, checked), checked, "append", None,
                   _pin(root, dataset)).version()


def _scratch_reader_from_table(table: pa.Table, partition: dict[str, str]) -> pa.RecordBatchReader:
    for key, value in partition.items():
        if key not in table.schema.names:
            table = table.append_column(key, pa.array([value] * table.num_rows, pa.string()))
    return pa.RecordBatchReader.from_batches(table.schema, table.to_batches())


# ---------------------------------------------------------------------------------------------
# Maintenance


# A writer's data files sit in the table, referenced by no commit, until its commit; vacuum deletes
# such files once they are older than the retention. A retention shorter than the longest run could
# therefore delete the files of a run still writing, so it is refused.
LONGEST_RUN_HOURS = 24


def vacuum(root: LakeRoot, retention_hours: float, datasets: Sequence[str] | None = None,
           dry_run: bool = False, *, longest_run_hours: float = LONGEST_RUN_HOURS) -> dict[str, list[str]]:
    """Delete files that no version younger than `retention_hours` needs, and files no commit ever
    referenced (a killed writer's), from every table (or `datasets`). The lake's setting is the
    authority, so Delta's own minimum retention is not enforced; ours is the longest a run may take
    (`longest_run_hours`; 0 only where no writer can be running, as in a test). Returns the files
    per table."""
    from deltalake import DeltaTable

    if longest_run_hours < 0:
        raise ValueError(f"the longest run must be at least 0 hours, got {longest_run_hours}")
    if retention_hours < longest_run_hours:
        raise ValueError(
            f"a retention of {retention_hours} hours is shorter than the longest run ({longest_run_hours} hours): "
            "vacuum would delete the files of a run that has not committed yet")
    removed = {}
    for dataset in datasets if datasets is not None else _delta_folders(root):  # created-only ones too
        table = DeltaTable(table_uri(root, dataset), storage_options=storage_options(root))
        removed[dataset] = table.vacuum(retention_hours=int(retention_hours), dry_run=dry_run,
                                        enforce_retention_duration=False, full=True)
    return removed


@contextlib.contextmanager
def spilling_duckdb(memory_limit: str):
    """A DuckDB connection that spills past `memory_limit` into a scratch folder of its own (under
    ZIPP_SCRATCH_DIR, else the system's temporary folder; DuckDB's own default is `.tmp` under the
    working directory, which may be a checkout or read-only). The folder is locked while the
    connection lives and removed after it; one left by a killed process (tens of GB of spill at the
    full size) is removed by the next writer's sweep."""
    import duckdb

    with Scratch() as scratch:
        con = duckdb.connect()
        try:
            con.execute(f"SET memory_limit = '{memory_limit}'")
            con.execute(f"SET temp_directory = '{scratch / 'duckdb-spill'}'")
            yield con
        finally:
            con.close()
