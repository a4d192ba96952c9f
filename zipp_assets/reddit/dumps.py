"""Streaming reader of Reddit dump files: zstd-compressed NDJSON with a long (2 GiB) window.

The file is decompressed in small compressed reads and handed out as blocks of whole lines, so
memory stays bounded whatever the size of the month, and whatever a corrupt or hostile file holds:
each decompress call yields at most 32 MiB, and a line longer than `max_line_bytes` is not kept (it
is handed out as a `LineBlock` with `too_long` set, for the quarantine). A corrupt or truncated file
raises `DumpReadError` naming the file and the byte offsets where decoding stopped.
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
# Compressed bytes per decompress call. zstd's densest block (an RLE block: 3 header bytes and one
# byte) stands for 128 KiB, so one call yields at most 1 KiB / 4 B * 128 KiB = 32 MiB, whatever the
# file holds (a 12 KB file can expand to 384 MiB in one call otherwise). Costs about 10% of the
# decompression time, which parsing dwarfs.
_FEED_BYTES = 1 << 10
DEFAULT_BLOCK_BYTES = 16 << 20
# The longest line read: the largest real dump lines (submissions with big galleries) are well under
# 1 MiB. A longer line is not kept in memory; it reaches the quarantine as its length and first bytes.
MAX_LINE_BYTES = 16 << 20
_HEAD_BYTES = 1 << 10  # kept of a line too long to read, for the quarantine's excerpt
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
    """Whole lines of a dump (separated by b'\\n', no trailing newline), or one line too long to read."""

    # Bytes; a bytearray in a parse worker; on the way to one, a list of pieces that join to the block.
    data: bytes | list[bytes]
    first_line: int  # 1-based number of the block's first line in the file (0: not numbered, see iter_line_blocks)
    first_offset: int  # decompressed byte offset of the block's first line
    compressed_position: int  # compressed bytes read so far (for progress)
    too_long: int = 0  # not 0: the block stands for one line of this many bytes; `data` is its first bytes

    @property
    def length(self) -> int:
        """Bytes of the block's lines (of the line's first bytes, for a line too long to read)."""
        return sum(map(len, self.data)) if isinstance(self.data, list) else len(self.data)


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


def _decompressed_chunks(path: Path) -> Iterator[tuple[bytes, int]]:
    """The decompressed bytes of every frame of `path`, at most 32 MiB at a time, each with the number
    of compressed bytes consumed so far."""
    dctx = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW_SIZE)
    dobj = dctx.decompressobj()
    compressed = decompressed = 0
    last_output_at = 0  # where the last call that produced output began: decoding was sound up to there
    frame_open = False
    with open(path, "rb") as handle:
        while chunk := handle.read(_COMPRESSED_READ):
            view = memoryview(chunk)
            for start in range(0, len(view), _FEED_BYTES):
                try:
                    out = dobj.decompress(view[start : start + _FEED_BYTES])
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
                    raise DumpReadError(path, last_output_at, decompressed, f"corrupt zstd data ({exc})") from None
                if out:
                    last_output_at = compressed
                compressed += min(_FEED_BYTES, len(view) - start)
                if out:
                    decompressed += len(out)
                    yield out, compressed
    if frame_open and not dobj.eof:
        raise DumpReadError(path, compressed, decompressed, "truncated zstd stream (the last frame never ends)")
    if compressed == 0:
        raise DumpReadError(path, 0, 0, "empty file (not a zstd stream)")


def _cut(pieces: list[bytes], block_bytes: int) -> tuple[list[bytes], list[bytes]] | None:
    """Split `pieces` (at least `block_bytes` in all) at the last newline among their first
    `block_bytes` bytes, or, when a line is longer than that, at the first newline after them: the
    pieces before the newline and those after it (only the piece holding it is copied). None: no
    newline to cut at yet."""
    seen = 0
    for index, piece in enumerate(pieces):
        if seen + len(piece) >= block_bytes:
            break
        seen += len(piece)
    newline = piece.rfind(b"\n", 0, block_bytes - seen)
    at = index
    while newline < 0 and at > 0:  # earlier pieces, from the last
        at -= 1
        newline = pieces[at].rfind(b"\n")
    if newline < 0:  # a line longer than a block: take it whole
        at, newline = index, piece.find(b"\n", block_bytes - seen)
        while newline < 0 and at + 1 < len(pieces):
            at += 1
            newline = pieces[at].find(b"\n")
        if newline < 0:
            return None
    holder = pieces[at]
    head = [*pieces[:at], holder[:newline]] if newline else pieces[:at]
    rest = [holder[newline + 1 :], *pieces[at + 1 :]] if newline + 1 < len(holder) else pieces[at + 1 :]
    return head, rest


def iter_line_blocks(path: Path, block_bytes: int = DEFAULT_BLOCK_BYTES,
                     max_line_bytes: int = MAX_LINE_BYTES, for_workers: bool = False) -> Iterator[LineBlock]:
    """Decompress `path` and yield blocks of whole lines of about `block_bytes` each; a line longer
    than `max_line_bytes` comes as a block of its own with `too_long` set (its bytes are not kept).

    With `for_workers`, blocks are only passed on to processes that parse them: `first_line` is 0
    (counting newlines costs a scan of the whole file, which the workers do as they split the lines)
    and `data` is the list of decompressed pieces that make the block, not joined: the caller copies
    them once, where the worker reads them."""
    number_lines = not for_workers
    path = Path(path)
    # `pieces` holds the output not yet handed out (`pending` bytes), from `offset` (the start of line
    # `line_no`): whole lines, then the last line so far (`partial` bytes). While a line too long to
    # keep is skipped, `pieces` is empty and `partial` counts that line's bytes.
    pieces: list[bytes] = []
    pending = 0
    line_no = 1
    offset = 0
    partial = 0
    skipped_head: bytes | None = None  # the first bytes of a line too long to keep
    compressed = 0

    def block_of(head: list[bytes]) -> LineBlock:
        nonlocal line_no, offset
        if number_lines:
            data = b"".join(head)
            block = LineBlock(data, line_no, offset, compressed)
            line_no += data.count(b"\n") + 1
        else:
            block = LineBlock(head, 0, offset, compressed)
        offset += block.length + 1
        return block

    def hand_out(final: bool) -> Iterator[LineBlock]:
        """Blocks of `pieces`; unless `final`, what is left after the last whole line of a block stays
        in `pieces`. With `final`, `pieces` are whole lines without the last newline, all handed out."""
        nonlocal pieces, pending
        while pending >= block_bytes and (cut := _cut(pieces, block_bytes)) is not None:
            head, pieces = cut
            block = block_of(head)
            pending -= block.length + 1
            yield block
        if final:
            last, pieces, pending = pieces, [], 0
            yield block_of(last)

    def too_long() -> LineBlock:
        nonlocal line_no, offset, partial, skipped_head
        block = LineBlock(skipped_head, line_no if number_lines else 0, offset, compressed, too_long=partial)
        line_no += 1
        offset += partial + 1
        partial, skipped_head = 0, None
        return block

    for out, compressed in _decompressed_chunks(path):
        first, last = out.find(b"\n"), out.rfind(b"\n")
        if skipped_head is None and (
            partial + len(out) <= max_line_bytes if first < 0
            else max(partial + first, last - first, len(out) - last - 1) <= max_line_bytes
        ):  # no line here can be too long: the usual case, with no per-line work
            pieces.append(out)
            pending += len(out)
            partial = partial + len(out) if first < 0 else len(out) - last - 1
        else:  # a line too long starts, goes on or ends here: line by line
            start = 0
            while True:
                newline = out.find(b"\n", start)
                end = len(out) if newline < 0 else newline
                if skipped_head is None and partial + end - start > max_line_bytes:
                    joined = b"".join(pieces)
                    whole = pending - partial  # the whole lines before this one, handed out first
                    skipped_head = joined[whole:][:_HEAD_BYTES]
                    if whole:
                        pieces, pending = [joined[: whole - 1]], whole - 1
                        yield from hand_out(final=True)
                    pieces, pending = [], 0
                if skipped_head is None:
                    pieces.append(out[start : end + 1])
                    pending += end + 1 - start if newline >= 0 else end - start
                elif len(skipped_head) < _HEAD_BYTES:
                    skipped_head += out[start : min(end, start + _HEAD_BYTES - len(skipped_head))]
                partial += end - start
                if newline < 0:
                    break
                if skipped_head is not None:
                    yield too_long()
                partial = 0
                start = newline + 1
        if pending >= block_bytes:
            yield from hand_out(final=False)
    if skipped_head is not None:
        yield too_long()
    pieces = [piece for piece in pieces if piece]
    if pieces and pieces[-1].endswith(b"\n"):
        pieces[-1] = pieces[-1][:-1]
        pending -= 1
    if pending:
        yield from hand_out(final=True)


def file_size(path: Path) -> int:
    return os.stat(path).st_size
