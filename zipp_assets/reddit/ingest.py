"""Ingest one month's dump into its lake partition (and its quarantine), atomically.

Two ways through a dump, with the same rows and quarantine:
- one process: decompression in a reader thread, parsing on the calling thread, column building and
  Parquet on a writer thread. Parsing holds the GIL, so this tops out near two cores.
- a process per core (`workers` > 1; by default for dumps of 64 MiB and more): the calling process
  decompresses and cuts blocks of whole lines; block i goes to worker i mod n (through memory shared
  with it, two blocks at a time: see `parse_worker`), which parses it and writes its rows to its own
  Parquet files; the quarantine comes back to the calling process, which numbers its lines and writes
  it in file order. Blocks are dealt in a fixed order, so the same dump gives the same files.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
import mmap
import os
import queue
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
import pyarrow.compute as pc

import zipp_assets
from zipp_assets import lake
from zipp_assets.reddit import parse_worker
from zipp_assets.reddit.dumps import DEFAULT_BLOCK_BYTES, LineBlock, file_size, find_dump, iter_line_blocks
from zipp_assets.reddit.parse import TABLE_BUILDERS, DecodedBlock, Quarantine, RecordDecoder, decode_block
from zipp_assets.reddit.schemas import QUARANTINE_SCHEMA, SCHEMAS

log = logging.getLogger(__name__)
PROGRESS_EVERY_SECONDS = 10.0
# Below this many compressed bytes a dump takes less time than starting worker processes.
PROCESSES_FROM_COMPRESSED_BYTES = 64 << 20
# Each worker parses on one core: the parallelism comes from the processes, and the libraries'
# own thread pools would only contend with them.
_WORKER_ENVIRONMENT = {"POLARS_MAX_THREADS": "1", "OMP_NUM_THREADS": "1"}


class IngestWorkerError(RuntimeError):
    """A worker process failed or died while parsing a block."""


def dataset_name(kind: str) -> str:
    return f"reddit_{kind}"


def quarantine_dataset_name(kind: str) -> str:
    return f"reddit_{kind}_quarantine"


def open_ingested(lake_dir: Path, kind: str, months: list[str] | None = None) -> lake.TableSnapshot:
    """`reddit_<kind>` at its current version, after checking that each month (or each of `months`)
    comes from the same ingestion as its quarantine; a month that disagrees is refused."""
    rows, quarantine = dataset_name(kind), quarantine_dataset_name(kind)
    partitions = [{"month": m} for m in months] if months is not None else None
    return lake.open_tables(lake_dir, [rows, quarantine], partitions)[rows]


@dataclass
class IngestReport:
    kind: str
    month: str
    file: str
    lines_in: int = 0
    rows_out: int = 0
    quarantined: int = 0
    bytes_compressed: int = 0
    bytes_decompressed: int = 0
    seconds: float = 0.0
    versions: dict[str, int] = field(default_factory=dict)  # table -> the Delta version this month's commit made
    build_id: str = ""  # shared by the month's rows and its quarantine
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    workers: int = 1  # processes that parsed the file
    worker_peak_rss: int = 0  # the largest peak resident memory of a parse worker (bytes; 0 in one process)

    @property
    def rows_per_second(self) -> float:
        return self.lines_in / self.seconds if self.seconds > 0 else 0.0

    @property
    def quarantine_fraction(self) -> float:
        return self.quarantined / self.lines_in if self.lines_in else 0.0

    def as_dict(self) -> dict:
        out = asdict(self)
        out["rows_per_second"] = round(self.rows_per_second, 1)
        out["quarantine_fraction"] = self.quarantine_fraction
        return out


def _prefetch(blocks: Iterator[LineBlock], depth: int = 2) -> Iterator[LineBlock]:
    """Decompress in a background thread (zstd releases the GIL) while the caller parses."""
    channel: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for block in blocks:
                while not stop.is_set():
                    try:
                        channel.put(block, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            channel.put(done)
        except BaseException as exc:  # handed to the consumer, re-raised there
            channel.put(exc)

    worker = threading.Thread(target=produce, name="dump-reader", daemon=True)
    worker.start()
    try:
        while True:
            item = channel.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join(timeout=5)


def available_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: its affinity, capped by a container's CPU quota (cgroup v2's
    cpu.max, or v1's cfs quota), which the affinity does not show."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    quota = period = None
    try:
        quota_text, period_text = (cgroup_root / "cpu.max").read_text().split()
        if quota_text != "max":
            quota, period = int(quota_text), int(period_text)
    except (OSError, ValueError):
        try:
            quota = int((cgroup_root / "cpu" / "cpu.cfs_quota_us").read_text())
            period = int((cgroup_root / "cpu" / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            pass
    if quota is not None and period and quota > 0:
        cpus = min(cpus, max(1, -(-quota // period)))
    return cpus


def worker_count(workers: int, compressed_bytes: int) -> int:
    """Processes to parse a dump with: `workers` when it is set (1: the single-process pipeline),
    else one per available CPU for a dump of at least `PROCESSES_FROM_COMPRESSED_BYTES`."""
    if workers < 0:
        raise ValueError(f"workers must be 0 (automatic) or more, got {workers}")
    if workers:
        return workers
    return available_cpus() if compressed_bytes >= PROCESSES_FROM_COMPRESSED_BYTES else 1


def _reason_class(reason: str) -> str:
    """Group quarantine reasons for counting: drop the varying tail (byte positions, values)."""
    head = reason.split(" (byte ")[0]
    return head if len(head) <= 120 else head[:117] + "..."


def ingest_file(
    path: Path,
    kind: str,
    out_dir: Path,
    quarantine_dir: Path,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    rows_per_file: int = 5_000_000,
    progress: Callable[[str], None] | None = None,
    month: str = "",
    workers: int = 0,
) -> IngestReport:
    """Stream one dump file into Parquet files in `out_dir` and its quarantine into `quarantine_dir`,
    with `worker_count(workers, ...)` processes (see the module's docstring)."""
    report = IngestReport(kind=kind, month=month, file=Path(path).name, bytes_compressed=file_size(path))
    reasons: collections.Counter = collections.Counter()
    say = progress or log.info
    processes = worker_count(workers, report.bytes_compressed)
    started = time.perf_counter()
    report.workers = processes
    if processes > 1:
        _ingest_in_processes(path, kind, out_dir, quarantine_dir, block_bytes, rows_per_file, processes, report, reasons,
                             say)
    else:
        _ingest_in_threads(path, kind, out_dir, quarantine_dir, block_bytes, rows_per_file, report, reasons, say)
    report.seconds = time.perf_counter() - started
    report.quarantine_reasons = dict(reasons.most_common(20))
    return report


def _say_progress(say: Callable[[str], None], report: IngestReport, block: LineBlock, started: float) -> None:
    share = block.compressed_position / max(report.bytes_compressed, 1)
    say(f"{report.file}: {share:.1%} of the file, {report.lines_in:,} lines, {report.quarantined:,} quarantined, "
        f"{report.lines_in / max(time.perf_counter() - started, 1e-9):,.0f} lines/s")


def _ingest_in_threads(path: Path, kind: str, out_dir: Path, quarantine_dir: Path, block_bytes: int, rows_per_file: int,
                       report: IngestReport, reasons: collections.Counter, say: Callable[[str], None]) -> None:
    record_type, build_table = TABLE_BUILDERS[kind]
    decoder = RecordDecoder(record_type)
    started = last_progress = time.perf_counter()

    def finish(decoded: DecodedBlock, quarantine: Quarantine) -> None:
        # Runs on the worker thread: column building and Parquet encoding mostly release the GIL,
        # so they overlap with decoding the next block on the calling thread.
        table = build_table(decoded, report.file, quarantine)
        writer.write(table)
        if len(quarantine):
            quarantine_writer.write(quarantine.to_table())
            reasons.update(_reason_class(r) for r in quarantine.reason)
        report.lines_in += table.num_rows + len(quarantine)
        report.rows_out += table.num_rows
        report.quarantined += len(quarantine)
        report.bytes_decompressed = decoded.block.first_offset + (decoded.block.too_long or len(decoded.block.data)) + 1

    with (
        lake.RotatingParquetWriter(out_dir, SCHEMAS[dataset_name(kind)], rows_per_file) as writer,
        lake.RotatingParquetWriter(quarantine_dir, QUARANTINE_SCHEMA, rows_per_file) as quarantine_writer,
        concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="block-writer") as pool,
    ):
        pending: concurrent.futures.Future | None = None
        for block in _prefetch(iter_line_blocks(path, block_bytes)):
            quarantine = Quarantine()
            decoded = decode_block(block, decoder, report.file, quarantine)
            if pending is not None:
                pending.result()  # one block in flight: bounded memory, errors surface promptly
            pending = pool.submit(finish, decoded, quarantine)
            if time.perf_counter() - last_progress >= PROGRESS_EVERY_SECONDS:
                last_progress = time.perf_counter()
                _say_progress(say, report, block, started)
        if pending is not None:
            pending.result()


CLOSED_WORKER_EXIT_SECONDS = 5.0


class _Dealt(NamedTuple):
    """A block out of the parent's hands, in file order: sent to `worker`, or (worker None) a line too long
    to send that the parent decodes itself (`too_long_line`, holding only its length)."""
    worker: int | None
    end_offset: int  # decompressed bytes up to and including the block's last newline
    too_long_line: LineBlock | None


class _Worker:
    """A `parse_worker` process, the parent's end of its socket pair, and the shared memory of its
    `parse_worker.SLOTS` block slots of `slot_bytes` each."""

    def __init__(self, index: int, kind: str, file_name: str, out_dir: Path, rows_per_file: int, slot_bytes: int):
        self.name = f"ingest worker {index}"
        self.closed = False
        self.slot_bytes = slot_bytes
        self.blocks_out = 0  # blocks sent whose answer has not come back
        self.blocks_sent = 0  # block j of this worker lies in slot j mod SLOTS
        self.sock, child_end = socket.socketpair()
        self.slots_file, self.slots = _shared_memory(parse_worker.SLOTS * slot_bytes)
        # The package's folder first on the path: a parent that found it through sys.path finds it there too.
        package_root = str(Path(zipp_assets.__file__).resolve().parents[1])
        environment = {**_WORKER_ENVIRONMENT, **os.environ}
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
        try:
            with child_end:
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "zipp_assets.reddit.parse_worker", str(child_end.fileno()),
                     str(self.slots_file.fileno()), str(index), kind, dataset_name(kind), file_name, str(out_dir),
                     str(rows_per_file)],
                    pass_fds=[child_end.fileno(), self.slots_file.fileno()], env=environment, stdin=subprocess.DEVNULL,
                )
        except BaseException:
            self._close_channels()
            raise

    def _died(self) -> None:
        code = self.process.wait(timeout=10)
        raise IngestWorkerError(f"{self.name} died (exit code {code})") from None

    def can_take(self, length: int) -> bool:
        """Whether a block of `length` bytes can be sent now: into a free slot, or through the socket
        when it is larger than a slot, only once the worker holds no other block (so that neither side
        waits on the other: the worker may be sending a large answer meanwhile)."""
        return self.blocks_out < (parse_worker.SLOTS if length <= self.slot_bytes else 1)

    def send(self, block: LineBlock) -> None:
        """Hand the worker a block it `can_take` (its `data` a list of pieces): into its next slot, or
        through the socket."""
        try:
            if block.length > self.slot_bytes:
                parse_worker.send_block(self.sock, block.first_offset, block.data)
            else:
                slot = self.blocks_sent % parse_worker.SLOTS
                position = slot * self.slot_bytes
                for piece in block.data:
                    self.slots[position : position + len(piece)] = piece
                    position += len(piece)
                parse_worker.send_slot(self.sock, block.first_offset, block.length, slot)
        except OSError:  # it died holding a block (its socket closed): say so, as `receive` would
            self._died()
        self.blocks_sent += 1
        self.blocks_out += 1

    def receive(self) -> tuple:
        """The worker's next answer; raises IngestWorkerError when it failed or died."""
        try:
            answer = parse_worker.receive_answer(self.sock)
        except (EOFError, OSError):
            self._died()
        if answer[0] == "failed":
            raise IngestWorkerError(f"{self.name} failed: {answer[1]}")
        if answer[0] == "block":  # its slot is free again
            self.blocks_out -= 1
        self.closed = answer[0] == "closed"
        return answer

    def stop(self) -> None:
        """Reap the process; one that already said "closed" gets a moment to exit by itself (its files
        are complete), any other is killed (a failed run must not leave it parsing)."""
        if self.closed:
            try:
                self.process.wait(timeout=CLOSED_WORKER_EXIT_SECONDS)
            except subprocess.TimeoutExpired:
                pass
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._close_channels()

    def _close_channels(self) -> None:
        self.sock.close()
        self.slots.close()
        self.slots_file.close()


def _shared_memory(size: int):
    """A file of `size` bytes that only this process and its workers see, and its memory map: a memfd
    on Linux (freed with its last descriptor, even after a kill), else an unlinked temporary file."""
    if hasattr(os, "memfd_create"):
        handle = os.fdopen(os.memfd_create("zipp-ingest-slots", os.MFD_CLOEXEC), "w+b")
    else:
        handle = tempfile.TemporaryFile()
    handle.truncate(size)
    return handle, mmap.mmap(handle.fileno(), size)


def _ingest_in_processes(path: Path, kind: str, out_dir: Path, quarantine_dir: Path, block_bytes: int,
                         rows_per_file: int, workers: int, report: IngestReport, reasons: collections.Counter,
                         say: Callable[[str], None]) -> None:
    decoder = RecordDecoder(TABLE_BUILDERS[kind][0])  # for lines too long to send: only their length is here
    pool: list[_Worker] = []
    in_order: collections.deque[_Dealt] = collections.deque()  # blocks out, not yet accounted for
    next_line = 1
    started = last_progress = time.perf_counter()
    try:
        for index in range(workers):
            pool.append(_Worker(index, kind, report.file, Path(out_dir), rows_per_file, slot_bytes=block_bytes))
        with lake.RotatingParquetWriter(quarantine_dir, QUARANTINE_SCHEMA, rows_per_file) as quarantine_writer:

            def account_for_oldest() -> None:
                nonlocal next_line
                index, end_offset, too_long_line = in_order.popleft()
                if index is None:
                    quarantine = Quarantine()
                    decode_block(dataclasses.replace(too_long_line, first_line=next_line), decoder, report.file,
                                 quarantine)
                    lines, rows, table = 1, 0, quarantine.to_table()
                else:
                    _, lines, rows, table = pool[index].receive()
                    if table is not None:  # block-relative line numbers become the file's
                        column = table.schema.get_field_index("line")
                        table = table.set_column(column, "line", pc.add(table["line"], pa.scalar(next_line - 1, pa.int64())))
                if table is not None:
                    quarantine_writer.write(table)
                    reasons.update(_reason_class(r) for r in table["reason"].to_pylist())
                    report.quarantined += table.num_rows
                report.lines_in += lines
                report.rows_out += rows
                next_line += lines
                report.bytes_decompressed = end_offset

            dealt = 0
            for block in _prefetch(iter_line_blocks(path, block_bytes, for_workers=True)):
                if block.too_long:
                    in_order.append(_Dealt(None, block.first_offset + block.too_long + 1, block))
                else:
                    index = dealt % workers
                    while not pool[index].can_take(block.length):
                        account_for_oldest()
                    pool[index].send(block)
                    in_order.append(_Dealt(index, block.first_offset + block.length + 1, None))
                    dealt += 1
                if time.perf_counter() - last_progress >= PROGRESS_EVERY_SECONDS:
                    last_progress = time.perf_counter()
                    _say_progress(say, report, block, started)
            while in_order:
                account_for_oldest()
        for worker in pool:
            parse_worker.send_end(worker.sock)
        for worker in pool:
            _, peak = worker.receive()  # its files are complete
            report.worker_peak_rss = max(report.worker_peak_rss, peak)
    finally:
        for worker in pool:
            worker.stop()


def ingest_month(
    lake_dir: Path,
    reddit_dir: Path,
    kind: str,
    month: str,
    progress: Callable[[str], None] | None = None,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    workers: int = 0,
) -> IngestReport:
    """Ingest RC_ (comments) or RS_ (submissions) of `month` into the lake, replacing any earlier run,
    with `worker_count(workers, ...)` processes.

    The month's rows and its quarantine are written to local scratch folders and committed to their
    Delta tables, under one build id, only when the whole file has been read: a corrupt file or a
    kill leaves the earlier version of the month current.
    """
    if kind not in TABLE_BUILDERS:
        raise ValueError(f"unknown dump kind {kind!r}; expected one of {sorted(TABLE_BUILDERS)}")
    path = find_dump(reddit_dir, kind, month)
    (progress or log.info)(f"ingesting {path} ({file_size(path):,} bytes compressed)")
    partition = {"month": month}
    with lake.build(lake_dir) as together:
        out_dir = together.partition(dataset_name(kind), partition)
        quarantine_dir = together.partition(quarantine_dataset_name(kind), partition)
        report = ingest_file(path, kind, out_dir, quarantine_dir, block_bytes, progress=progress, month=month,
                             workers=workers)
    report.versions = together.versions
    report.build_id = lake.format_build(together.build_id)
    return report
