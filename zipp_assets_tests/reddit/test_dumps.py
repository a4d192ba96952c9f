import json

import pytest
import zstandard

from zipp_assets.reddit.dumps import DumpNotFoundError, DumpReadError, find_dump, iter_line_blocks
from zipp_assets_tests.conftest import write_dump


def _lines(n: int) -> list[bytes]:
    return [json.dumps({"id": f"c{i}", "body": "x" * (i % 50)}).encode() for i in range(n)]


def _read_all(path, block_bytes=1 << 10):
    blocks = list(iter_line_blocks(path, block_bytes=block_bytes))
    lines = [line for b in blocks for line in b.data.split(b"\n")]
    return blocks, lines


def test_long_window_dump_needs_the_2gib_window_and_reads_whole_lines(tmp_path):
    lines = _lines(3000)
    path = write_dump(tmp_path / "RC_2019-01.zst", lines)
    with pytest.raises(zstandard.ZstdError, match="too much memory"):
        zstandard.ZstdDecompressor().stream_reader(open(path, "rb")).read(10)
    blocks, read = _read_all(path)
    assert read == lines
    assert len(blocks) > 1
    # Line numbers and byte offsets of each block point at its first line.
    payload = b"".join(line + b"\n" for line in lines)
    for block in blocks:
        assert payload[block.first_offset :].startswith(block.data.split(b"\n")[0] + b"\n")
        assert lines[block.first_line - 1] == block.data.split(b"\n")[0]


def test_several_frames_and_a_last_line_without_newline(tmp_path):
    lines = _lines(500)
    path = write_dump(tmp_path / "RC_2019-01.zst", lines, frames=4)
    assert _read_all(path)[1] == lines
    no_newline = tmp_path / "RS_2019-01.zst"
    no_newline.write_bytes(zstandard.ZstdCompressor().compress(b"\n".join(lines)))
    assert _read_all(no_newline)[1] == lines


def test_truncated_dump_fails_with_file_and_offset(tmp_path):
    path = write_dump(tmp_path / "RC_2019-01.zst", _lines(20000))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DumpReadError, match=r"RC_2019-01\.zst: truncated .* compressed byte offset \d+") as info:
        _read_all(path, block_bytes=1 << 30)
    assert info.value.compressed_offset == len(data) // 2


def test_corrupt_dump_fails_with_file_and_offset(tmp_path):
    path = write_dump(tmp_path / "RC_2019-01.zst", _lines(20000))
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 256] = bytes(256)
    path.write_bytes(bytes(data))
    with pytest.raises(DumpReadError, match=r"RC_2019-01\.zst: corrupt zstd data") as info:
        _read_all(path)
    assert 0 <= info.value.compressed_offset <= middle


@pytest.mark.parametrize("content", [b"", b"plain text, not zstd at all"])
def test_empty_or_non_zstd_file_fails(tmp_path, content):
    path = tmp_path / "RC_2019-01.zst"
    path.write_bytes(content)
    with pytest.raises(DumpReadError, match="RC_2019-01.zst"):
        _read_all(path)


def test_missing_dump_names_every_place_looked(tmp_path):
    with pytest.raises(DumpNotFoundError) as info:
        find_dump(tmp_path, "comments", "2007-03")
    message = str(info.value)
    assert str(tmp_path / "RC_2007-03.zst") in message
    assert str(tmp_path / "comments" / "RC_2007-03.zst") in message
    nested = write_dump(tmp_path / "submissions" / "RS_2007-03.zst", _lines(3))
    assert find_dump(tmp_path, "submissions", "2007-03") == nested


def _expected_lines(lines: list[bytes], max_line_bytes: int) -> list[tuple]:
    """(line number, byte offset, the line or its length and first bytes when too long) of every line."""
    expected, offset = [], 0
    for number, line in enumerate(lines, 1):
        shown = ("too long", len(line), line[:1024]) if len(line) > max_line_bytes else line
        expected.append((number, offset, shown))
        offset += len(line) + 1
    return expected


def _lines_read(blocks) -> list[tuple]:
    read = []
    for block in blocks:
        if block.too_long:
            read.append((block.first_line, block.first_offset, ("too long", block.too_long, block.data)))
            continue
        offset = block.first_offset
        for k, line in enumerate(block.data.split(b"\n")):
            read.append((block.first_line + k, offset, line))
            offset += len(line) + 1
    return read


@pytest.mark.parametrize("frames", [1, 7, 60])
def test_lines_longer_than_the_limit_are_handed_out_as_their_length_and_first_bytes(tmp_path, frames):
    # Lines around the limit, empty lines, and lines many times the limit that span several
    # decompress calls and frames; short and long lines in every order.
    lengths = [0, 5, 99, 100, 101, 250, 0, 3000, 7, 100, 40_000, 101, 1, 2_000_000, 0, 60, 150, 150, 9]
    lines = [(b"%06d" % i + bytes([97 + i % 26]) * n)[:n] for i, n in enumerate(lengths * 3)]
    path = write_dump(tmp_path / "RC_2019-01.zst", lines, frames=frames)
    for block_bytes in (64, 1 << 10, 1 << 20):
        blocks = list(iter_line_blocks(path, block_bytes=block_bytes, max_line_bytes=100))
        assert _lines_read(blocks) == _expected_lines(lines, 100), block_bytes
        assert max(len(b.data) for b in blocks if not b.too_long) <= max(block_bytes, 100)
        assert all(len(b.data) <= 1024 for b in blocks if b.too_long)
    # Under the default limit every one of these lines is read whole.
    assert [line for _, _, line in _lines_read(iter_line_blocks(path))] == lines


@pytest.mark.parametrize("frames", [1, 7, 60])
def test_blocks_for_workers_are_the_same_blocks_left_in_pieces(tmp_path, frames):
    """Blocks for parse workers come as the decompressed pieces that make them, unjoined and unnumbered:
    joined, they are the blocks read for one process, at the same offsets, whatever the line lengths."""
    lengths = [0, 5, 99, 100, 101, 250, 0, 3000, 7, 100, 40_000, 101, 1, 2_000_000, 0, 60, 150, 150, 9]
    lines = [(b"%06d" % i + bytes([97 + i % 26]) * n)[:n] for i, n in enumerate(lengths * 3)]
    ends = {"newline": b"", "no newline": None, "empty last line": b"\n"}
    for end, extra in ends.items():
        path = tmp_path / f"RC_{frames}.zst"
        if extra is None:
            path.write_bytes(zstandard.ZstdCompressor().compress(b"\n".join(lines)))
        else:
            write_dump(path, lines + ([b""] if extra else []), frames=frames)
        for block_bytes, max_line_bytes in ((64, 100), (1 << 10, 100), (1 << 10, 1 << 24), (1 << 20, 100), (5000, 1 << 24)):
            numbered = list(iter_line_blocks(path, block_bytes=block_bytes, max_line_bytes=max_line_bytes))
            pieces = list(iter_line_blocks(path, block_bytes=block_bytes, max_line_bytes=max_line_bytes,
                                           for_workers=True))
            assert [(b.first_offset, b.too_long, b.length) for b in pieces] == \
                [(b.first_offset, b.too_long, b.length) for b in numbered], (end, block_bytes)
            assert [b"".join(b.data) if not b.too_long else b.data for b in pieces] == [b.data for b in numbered]
            assert all(isinstance(b.data, list) and b.first_line == 0 for b in pieces if not b.too_long)
            assert len(numbered) > 1


def test_a_decompression_bomb_never_becomes_one_block_in_memory(tmp_path):
    """A few KB that expand to 256 MiB without a newline: read in bounded pieces, handed out as one
    line too long, with the good lines around it intact."""
    import tracemalloc

    path = tmp_path / "RC_2019-01.zst"
    good = [json.dumps({"id": "before"}).encode(), json.dumps({"id": "after"}).encode()]
    compressor = zstandard.ZstdCompressor(level=19)
    path.write_bytes(compressor.compress(good[0] + b"\n") + compressor.compress(bytes(256 << 20))
                     + compressor.compress(b"\n" + good[1] + b"\n"))
    assert path.stat().st_size < 64 << 10
    tracemalloc.start()
    try:
        blocks = list(iter_line_blocks(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 80 << 20  # decompress calls of at most 32 MiB, one kept at a time
    assert _lines_read(blocks) == [(1, 0, good[0]), (2, len(good[0]) + 1, ("too long", 256 << 20, bytes(1024))),
                                   (3, len(good[0]) + 1 + (256 << 20) + 1, good[1])]
