"""A worker process of parallel ingestion (see `zipp_assets.reddit.ingest`).

    python -m zipp_assets.reddit.parse_worker FD SLOTS_FD INDEX KIND DATASET FILE_NAME OUT_DIR ROWS_PER_FILE

It reads blocks of dump lines, parses each, writes its rows to its own Parquet files
`part-w<INDEX>-NNNNN.parquet` in OUT_DIR, and answers each block with ("block", lines, rows,
quarantine table or None): the quarantine's line numbers count from the block's first line, which
only the parent knows. At the end it answers ("closed", its peak resident bytes); on failure
("failed", text). It imports only the parser and the Parquet writer.

A block comes as a header on the stream socket FD (its first byte offset, its length, and the slot
that holds it; a negative length ends the stream). Its bytes lie in that slot of the shared memory
SLOTS_FD (`SLOTS` slots of equal size): the parent copies a block there once, instead of pushing it
through the socket (a copy into the kernel and one out), and puts the worker's next block in its
other slot while it parses, so a worker never waits for its next block. A block larger than a slot
(a few lines longer than the block size) comes over the socket after its header (slot -1). An answer
is a length and a pickle.
"""

from __future__ import annotations

import mmap
import os
import pickle
import socket
import struct
import sys
import traceback
from pathlib import Path

from zipp_assets.reddit.dumps import LineBlock
from zipp_assets.reddit.parse import TABLE_BUILDERS, Quarantine, RecordDecoder, decode_block
from zipp_assets.reddit.schemas import SCHEMAS
from zipp_assets.staging import RotatingParquetWriter

_BLOCK_HEADER = struct.Struct("<qqq")  # first byte offset, length (negative: no more blocks), slot (-1: inline)
_ANSWER_HEADER = struct.Struct("<q")
SLOTS = 2  # blocks a worker may hold: the one it parses and the next one
INLINE = -1


def send_block(sock: socket.socket, first_offset: int, pieces: list[bytes]) -> None:
    """Send a block (the pieces that join to it) through the socket itself: one that does not fit a slot."""
    sock.sendall(_BLOCK_HEADER.pack(first_offset, sum(map(len, pieces)), INLINE))
    for piece in pieces:
        sock.sendall(piece)


def send_slot(sock: socket.socket, first_offset: int, length: int, slot: int) -> None:
    """Tell the worker that its `slot` holds a block of `length` bytes."""
    sock.sendall(_BLOCK_HEADER.pack(first_offset, length, slot))


def send_end(sock: socket.socket) -> None:
    sock.sendall(_BLOCK_HEADER.pack(0, -1, INLINE))


def _receive_exactly(sock: socket.socket, size: int) -> bytearray:
    buffer = bytearray(size)
    view, received = memoryview(buffer), 0
    while received < size:
        count = sock.recv_into(view[received:], size - received)
        if count == 0:
            raise EOFError("the other end closed the socket")
        received += count
    return buffer


def receive_block(sock: socket.socket, slots: mmap.mmap) -> tuple[int, bytes | bytearray] | None:
    """The next block's first offset and bytes (copied out of its slot), or None at the end."""
    first_offset, length, slot = _BLOCK_HEADER.unpack(_receive_exactly(sock, _BLOCK_HEADER.size))
    if length < 0:
        return None
    if slot == INLINE:
        return first_offset, _receive_exactly(sock, length)
    size = len(slots) // SLOTS
    if not 0 <= slot < SLOTS or length > size:
        raise ValueError(f"a block header names slot {slot} of {SLOTS} and {length:,} bytes (a slot holds {size:,})")
    start = slot * size
    return first_offset, slots[start : start + length]


def send_answer(sock: socket.socket, answer: tuple) -> None:
    payload = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(_ANSWER_HEADER.pack(len(payload)) + payload)


def receive_answer(sock: socket.socket) -> tuple:
    """The worker's next answer (it is trusted: it is this package's own process)."""
    (length,) = _ANSWER_HEADER.unpack(_receive_exactly(sock, _ANSWER_HEADER.size))
    return pickle.loads(_receive_exactly(sock, length))


def serve(sock: socket.socket, slots: mmap.mmap, index: int, kind: str, dataset: str, file_name: str, out_dir: Path,
          rows_per_file: int) -> None:
    record_type, build_table = TABLE_BUILDERS[kind]
    decoder = RecordDecoder(record_type)
    with RotatingParquetWriter(out_dir, SCHEMAS[dataset], rows_per_file, prefix=f"part-w{index:03d}") as writer:
        while (received := receive_block(sock, slots)) is not None:
            first_offset, data = received
            block = LineBlock(data, 1, first_offset, 0)  # bytes, or a bytearray: split and decoded alike
            quarantine = Quarantine()
            decoded = decode_block(block, decoder, file_name, quarantine)
            table = build_table(decoded, file_name, quarantine)
            writer.write(table)
            send_answer(sock, ("block", len(decoded.lines), table.num_rows,
                               quarantine.to_table() if len(quarantine) else None))
    send_answer(sock, ("closed", peak_resident_bytes()))


def peak_resident_bytes() -> int:
    """This process's peak resident memory (VmHWM: getrusage's maxrss also counts the parent's before
    exec); 0 where /proc is not there."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def main(argv: list[str]) -> int:
    fd, slots_fd, index, kind, dataset, file_name, out_dir, rows_per_file = argv[1:]
    sock = socket.socket(fileno=int(fd))
    try:
        with os.fdopen(int(slots_fd), "rb") as slots_file, \
                mmap.mmap(slots_file.fileno(), 0, access=mmap.ACCESS_READ) as slots:
            serve(sock, slots, int(index), kind, dataset, file_name, Path(out_dir), int(rows_per_file))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        try:
            send_answer(sock, ("failed", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
        except OSError:
            pass  # the parent is gone
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
