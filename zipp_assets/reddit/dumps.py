"""Streaming reader of Reddit dump files: zstd-compressed NDJSON with a long (2 GiB) window.

The file is decompressed in small compressed reads and handed out as blocks of whole lines, so
memory stays bounded whatever the size of the month. A corrupt or truncated file raises
`DumpReadError` naming the file and the byte offsets where decoding stopped.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import zstandard

MAX_WINDOW_SIZE = 2**31  # the dumps are written with --long=31
_COMPRESSED_READ = 1 << 20
DEFAULT_BLOCK_BYTES = 16 << 20
DUMP_NAME = re.compile(r"^(?P<kind>RC|RS)_(?P<month>\d{4}-\d{2})\.zst$")
KINDS = {"comments": "RC", "submissions": "RS"}


class DumpReadError(RuntimeError):
    """The dump file cannot be decoded past some point (corrupt or truncated)."""

    def __init__(self, path: Path, compressed_offset: int, decompressed_offset: int, reason: str):
        self.path = Path(path)
        self.compressed_offset = compressed_offset
        self.decompressed_offset = decompressed_offset
        self.reason = reason
        super().__init__(
            f"{self.path.name}: {reason} at compressed byte offset {compressed_offset} "
            f"(decompressed byte offset {decompressed_offset}) in {self.path}"
        )


class DumpNotFoundError(FileNotFoundError):
    def __init__(self, month: str, kind: str, candidates: list[Path]):
        self.month, self.kind, self.candidates = month, kind, candidates
        looked = ", ".join(str(c) for c in candidates)
        super().__init__(f"no {kind} dump for {month}: looked for {looked}")


@dataclass(frozen=True)
class LineBlock:
    """Whole lines of a dump (separated by b'\\n', no trailing newline)."""

    data: bytes
    first_line: int  # 1-based number of the block's first line in the file
    first_offset: int  # decompressed byte offset of the block's first line
    compressed_position: int  # compressed bytes read so far (for progress)


def dump_candidates(reddit_dir: Path, kind: str, month: str) -> list[Path]:
    """Where a month's dump may lie: flat, or in the torrents' comments/ and submissions/ folders."""
    prefix = KINDS[kind]
    name = f"{prefix}_{month}.zst"
    return [Path(reddit_dir) / name, Path(reddit_dir) / kind / name]


def find_dump(reddit_dir: Path, kind: str, month: str) -> Path:
    candidates = dump_candidates(reddit_dir, kind, month)
    for path in candidates:
        if path.is_file():
            return path
    raise DumpNotFoundError(month, kind, candidates)


def iter_line_blocks(path: Path, block_bytes: int = DEFAULT_BLOCK_BYTES) -> Iterator[LineBlock]:
    """Decompress `path` and yield blocks of whole lines of about `block_bytes` each."""
    path = Path(path)
    dctx = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW_SIZE)
    dobj = dctx.decompressobj()
    pieces: list[bytes] = []  # decompressed output not yet handed out (joined once per block)
    pending = 0
    line_no = 1
    offset = 0  # decompressed offset of the first byte in `pieces`
    compressed = 0
    frame_open = False
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(_COMPRESSED_READ)
            if not chunk:
                break
            try:
                out = dobj.decompress(chunk)
                frame_open = True
                # A file may hold several frames; start a new one where the last ended.
                while dobj.eof:
                    rest = dobj.unused_data
                    dobj = dctx.decompressobj()
                    frame_open = bool(rest)
                    if not rest:
                        break
                    out += dobj.decompress(rest)
            except zstandard.ZstdError as exc:
                raise DumpReadError(path, compressed, offset + pending, f"corrupt zstd data ({exc})") from None
            compressed += len(chunk)
            if out:
                pieces.append(out)
                pending += len(out)
            if pending >= block_bytes:
                data = b"".join(pieces)
                start = 0
                while len(data) - start >= block_bytes:
                    cut = data.rfind(b"\n", start, start + block_bytes)
                    if cut < 0:  # a line longer than a block: take it whole
                        cut = data.find(b"\n", start + block_bytes)
                        if cut < 0:
                            break
                    yield LineBlock(data[start:cut], line_no, offset, compressed)
                    line_no += data.count(b"\n", start, cut) + 1
                    offset += cut + 1 - start
                    start = cut + 1
                rest = data[start:] if start else data
                pieces, pending = ([rest], len(rest)) if rest else ([], 0)
    if frame_open and not dobj.eof:
        raise DumpReadError(path, compressed, offset + pending, "truncated zstd stream (the last frame never ends)")
    if compressed == 0:
        raise DumpReadError(path, 0, 0, "empty file (not a zstd stream)")
    data = b"".join(pieces)
    if data.endswith(b"\n"):
        data = data[:-1]
    if data:
        yield LineBlock(data, line_no, offset, compressed)


def file_size(path: Path) -> int:
    return os.stat(path).st_size
