"""A worker process of parallel ingestion (see `zipp_assets.reddit.ingest`).

    python -m zipp_assets.reddit.parse_worker FD INDEX KIND DATASET FILE_NAME OUT_DIR ROWS_PER_FILE

It reads blocks of dump lines from the stream socket FD, parses each, writes its rows to its own
Parquet files `part-w<INDEX>-NNNNN.parquet` in OUT_DIR, and answers each block with ("block", lines,
rows, quarantine table or None): the quarantine's line numbers count from the block's first line,
which only the parent knows. At the end it answers ("closed", its peak resident bytes); on failure
("failed", text). It imports only the parser and
the Parquet writer.

On the socket, a block is a header (its first byte offset and its length; a negative length ends
the stream) and then its bytes, received straight into one buffer; an answer is a length and a pickle.
"""

from __future__ import annotations

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

_BLOCK_HEADER = struct.Struct("<qq")  # first byte offset, length (negative: no more blocks)
_ANSWER_HEADER = struct.Struct("<q")


def send_block(sock: socket.socket, first_offset: int, data: bytes | memoryview) -> None:
    sock.sendall(_BLOCK_HEADER.pack(first_offset, len(data)))
    sock.sendall(data)


def send_end(sock: socket.socket) -> None:
    sock.sendall(_BLOCK_HEADER.pack(0, -1))


def _receive_exactly(sock: socket.socket, size: int) -> bytearray:
    buffer = bytearray(size)
    view, received = memoryview(buffer), 0
    while received < size:
        count = sock.recv_into(view[received:], size - received)
        if count == 0:
            raise EOFError("the other end closed the socket")
        received += count
    return buffer


def receive_block(sock: socket.socket) -> tuple[int, bytearray] | None:
    first_offset, length = _BLOCK_HEADER.unpack(_receive_exactly(sock, _BLOCK_HEADER.size))
    return None if length < 0 else (first_offset, _receive_exactly(sock, length))


def send_answer(sock: socket.socket, answer: tuple) -> None:
    payload = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(_ANSWER_HEADER.pack(len(payload)) + payload)


def receive_answer(sock: socket.socket) -> tuple:
    """The worker's next answer (it is trusted: it is this package's own process)."""
    (length,) = _ANSWER_HEADER.unpack(_receive_exactly(sock, _ANSWER_HEADER.size))
    return pickle.loads(_receive_exactly(sock, length))


def serve(sock: socket.socket, index: int, kind: str, dataset: str, file_name: str, out_dir: Path,
          rows_per_file: int) -> None:
    record_type, build_table = TABLE_BUILDERS[kind]
    decoder = RecordDecoder(record_type)
    with RotatingParquetWriter(out_dir, SCHEMAS[dataset], rows_per_file, prefix=f"part-w{index:03d}") as writer:
        while (received := receive_block(sock)) is not None:
            first_offset, data = received
            block = LineBlock(data, 1, first_offset, 0)  # a bytearray: split and decoded like bytes
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
    fd, index, kind, dataset, file_name, out_dir, rows_per_file = argv[1:]
    sock = socket.socket(fileno=int(fd))
    try:
        serve(sock, int(index), kind, dataset, file_name, Path(out_dir), int(rows_per_file))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        try:
            send_answer(sock, ("failed", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
        except OSError:
            pass  # the parent is gone
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
