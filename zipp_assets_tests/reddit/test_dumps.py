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
