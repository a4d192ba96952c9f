"""Ingest one month's dump into its lake partition (and its quarantine), atomically."""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from zipp_assets import lake
from zipp_assets.reddit.dumps import DEFAULT_BLOCK_BYTES, LineBlock, file_size, find_dump, iter_line_blocks
from zipp_assets.reddit.parse import TABLE_BUILDERS, DecodedBlock, Quarantine, RecordDecoder, decode_block
from zipp_assets.reddit.schemas import QUARANTINE_SCHEMA, SCHEMAS

log = logging.getLogger(__name__)
PROGRESS_EVERY_SECONDS = 10.0


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
) -> IngestReport:
    """Stream one dump file into Parquet files in `out_dir` and its quarantine into `quarantine_dir`."""
    record_type, build_table = TABLE_BUILDERS[kind]
    decoder = RecordDecoder(record_type)
    report = IngestReport(kind=kind, month=month, file=Path(path).name, bytes_compressed=file_size(path))
    reasons: collections.Counter = collections.Counter()
    started = last_progress = time.perf_counter()
    say = progress or log.info

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
            now = time.perf_counter()
            if now - last_progress >= PROGRESS_EVERY_SECONDS:
                last_progress = now
                share = block.compressed_position / max(report.bytes_compressed, 1)
                say(
                    f"{report.file}: {share:.1%} of the file, {report.lines_in:,} lines, "
                    f"{report.quarantined:,} quarantined, {report.lines_in / (now - started):,.0f} lines/s"
                )
        if pending is not None:
            pending.result()
    report.seconds = time.perf_counter() - started
    report.quarantine_reasons = dict(reasons.most_common(20))
    return report


def ingest_month(
    lake_dir: Path,
    reddit_dir: Path,
    kind: str,
    month: str,
    progress: Callable[[str], None] | None = None,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> IngestReport:
    """Ingest RC_ (comments) or RS_ (submissions) of `month` into the lake, replacing any earlier run.

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
        report = ingest_file(path, kind, out_dir, quarantine_dir, block_bytes, progress=progress, month=month)
    report.versions = together.versions
    report.build_id = lake.format_build(together.build_id)
    return report
