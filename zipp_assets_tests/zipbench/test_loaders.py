import csv
import json
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from zipp_assets.zipbench.loaders import (
    GENERATION_SCHEMA,
    PREFERENCE_SCHEMA,
    PROMPT_HISTORY_SCHEMA,
    REJECTED_SCHEMA,
    BenchmarkFileError,
    load_generation_histories,
    load_preference_pairs,
    load_prompt_histories,
)


def _generation(**overrides):
    row = {"prompt": "a lighthouse at dusk, soft light, 8k", "negativePrompt": "blurry, lowres",
           "url": "https://image.civitai.com/abc/width=512/1.jpeg", "seed": 1234567, "steps": 30,
           "sampler": "DPM++ 2M Karras", "cfgScale": 7.5, "width": 512, "height": 768,
           "civitai_username": "pixel_fox", "reddit_username": "Some_Redditor-1"}
    row.update(overrides)
    return row


ROWS = [_generation(), _generation(prompt="a fox in the snow", seed=7, negativePrompt=None, sampler=None,
                                   civitai_username=None, reddit_username="other_user")]


def _write(path, rows, fmt=None):
    fmt = fmt or path.suffix
    if fmt in (".jsonl", ".ndjson"):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == ".json":
        path.write_text(json.dumps(rows))
    elif fmt == ".csv":
        names = list(dict.fromkeys(k for r in rows for k in r))
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, names)
            writer.writeheader()
            writer.writerows(rows)
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _message(excinfo) -> str:
    return str(excinfo.value)


# --- good path, every format -----------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".jsonl", ".ndjson", ".json", ".csv", ".parquet"])
def test_generation_histories_load_from_every_format(tmp_path, suffix):
    table = load_generation_histories(_write(tmp_path / f"gens{suffix}", ROWS))
    assert table.schema == GENERATION_SCHEMA
    rows = table.to_pylist()
    assert [r["source_row"] for r in rows] == [1, 2]
    first = rows[0]
    assert first["prompt"] == "a lighthouse at dusk, soft light, 8k"
    assert first["negative_prompt"] == "blurry, lowres" and first["cfg_scale"] == 7.5
    assert (first["seed"], first["steps"], first["width"], first["height"]) == (1234567, 30, 512, 768)
    assert first["reddit_username"] == "Some_Redditor-1" and first["civitai_username"] == "pixel_fox"
    second = rows[1]
    assert second["negative_prompt"] is None and second["sampler"] is None and second["civitai_username"] is None


def test_strings_are_cleaned_capped_and_names_coerced(tmp_path):
    long_prompt = "a castle " * 1000
    rows = [_generation(prompt="  a cat\non a mat\x00\x1b[31m\u202e  ", reddit_username="u/Name_1",
                        seed="42", width=512.0, steps=" 20 "),
            _generation(prompt=long_prompt)]
    table = load_generation_histories(_write(tmp_path / "g.jsonl", rows)).to_pylist()
    assert table[0]["prompt"] == "a cat on a mat[31m"
    assert table[0]["reddit_username"] == "Name_1"
    assert (table[0]["seed"], table[0]["width"], table[0]["steps"]) == (42, 512, 20)
    assert len(table[1]["prompt"]) == 4000


def test_prompt_histories_accept_aliases_and_timestamps(tmp_path):
    path = tmp_path / "pip.csv"
    path.write_text("User,Text,created_at,extra\n"
                    "alice,a red bicycle,2023-05-01T12:00:00Z,x\n"
                    "12345,a moody forest,1682942400,\n"
                    "bob,night market,,\n")
    table = load_prompt_histories(path)
    assert table.schema == PROMPT_HISTORY_SCHEMA
    rows = table.to_pylist()
    assert [r["user_id"] for r in rows] == ["alice", "12345", "bob"]
    assert rows[0]["timestamp"] == rows[1]["timestamp"] == datetime(2023, 5, 1, 12, tzinfo=timezone.utc)
    assert rows[2]["timestamp"] is None
    numeric_ids = tmp_path / "pip.jsonl"
    numeric_ids.write_text(json.dumps({"uid": 7, "prompt": "x", "time": "2024-01-02 03:04:05+01:00"}) + "\n")
    row = load_prompt_histories(numeric_ids).to_pylist()[0]
    assert row["user_id"] == "7" and row["timestamp"] == datetime(2024, 1, 2, 2, 4, 5, tzinfo=timezone.utc)


def test_preference_pairs_keep_images_as_strings_and_read_demographics(tmp_path):
    rows = [{"user_id": "rater_1", "prompt": "a lighthouse", "image_a": "../../etc/passwd",
             "image_b": "https://example.com/b.png", "preferred": "A", "age_band": "25-34", "gender": "female",
             "country": "DE", "occupation": "nurse"},
            {"user_id": "rater_2", "prompt": "a fox", "image1": "a.png", "image2": "b.png", "winner": "tie"}]
    table = load_preference_pairs(_write(tmp_path / "prefs.json", rows))
    assert table.schema == PREFERENCE_SCHEMA
    first, second = table.to_pylist()
    assert first["image_a"] == "../../etc/passwd" and first["preferred"] == "a"  # kept, never opened
    assert (first["locale"], first["profession"]) == ("DE", "nurse")
    assert second["preferred"] == "tie" and second["age_band"] is None and second["image_a"] == "a.png"


# --- bad files ---------------------------------------------------------------------------------

def test_missing_file_and_unknown_extension_and_folder(tmp_path):
    with pytest.raises(BenchmarkFileError, match="no such file") as excinfo:
        load_generation_histories(tmp_path / "absent.jsonl")
    assert "absent.jsonl" in _message(excinfo)
    (tmp_path / "rows.txt").write_text("{}\n")
    with pytest.raises(BenchmarkFileError, match=r"unknown extension '\.txt'.*\.jsonl"):
        load_generation_histories(tmp_path / "rows.txt")
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(BenchmarkFileError, match="got a folder"):
        load_prompt_histories(tmp_path / "dir.csv")


@pytest.mark.parametrize("name,content", [("e.jsonl", b""), ("e.jsonl", b"\n  \n"), ("e.json", b"[]"),
                                          ("e.csv", b"prompt,reddit_username\n"), ("e.csv", b""),
                                          ("e.parquet", b"")])
def test_empty_files_raise_even_when_skipping(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(BenchmarkFileError, match="empty file"):
        load_generation_histories(tmp_path / name, on_bad_row="skip")


def test_empty_parquet_table_raises(tmp_path):
    pq.write_table(pa.Table.from_pylist([], schema=pa.schema([("prompt", pa.string())])), tmp_path / "e.parquet")
    with pytest.raises(BenchmarkFileError, match="empty file"):
        load_generation_histories(tmp_path / "e.parquet")


def test_whole_file_problems_name_the_line(tmp_path):
    (tmp_path / "bad.json").write_text('[\n{"prompt": "x",\n "reddit_username": }\n]')
    with pytest.raises(BenchmarkFileError, match=r"bad\.json, line 3: expected a JSON array"):
        load_generation_histories(tmp_path / "bad.json", on_bad_row="skip")
    (tmp_path / "obj.json").write_text('{"prompt": "x"}')
    with pytest.raises(BenchmarkFileError, match="expected a JSON array of objects, got an object"):
        load_generation_histories(tmp_path / "obj.json")
    (tmp_path / "latin1.csv").write_bytes(b"prompt,reddit_username\nok,alice\ncaf\xe9,bob\n")
    with pytest.raises(BenchmarkFileError, match=r"latin1\.csv, line 3: expected UTF-8 text, found byte 0xe9"):
        load_generation_histories(tmp_path / "latin1.csv")
    (tmp_path / "dup.csv").write_text("prompt,reddit_username,Reddit_Username\nx,a,b\n")
    with pytest.raises(BenchmarkFileError, match="distinct column names"):
        load_generation_histories(tmp_path / "dup.csv")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(BenchmarkFileError, match="expected a Parquet file"):
        load_generation_histories(tmp_path / "junk.parquet")


# --- bad rows: every class, raised with file, row and field; skipped with reasons ----------------

BAD_JSONL_LINES = [
    # (line text, field at fault or None, what the message says)
    (b'{"prompt": "x", "reddit_username": "a"', None, "malformed JSON"),
    (b'{"reddit_username": "a"}', "prompt", "expected a value, got none"),
    (b'{"prompt": "   ", "reddit_username": "a"}', "prompt", "expected a value, got none"),
    (b'{"prompt": 17, "reddit_username": "a"}', "prompt", "expected text, got int 17"),
    (b'{"prompt": "x", "reddit_username": "a", "seed": "abc"}', "seed", "expected an integer, got text 'abc'"),
    (b'{"prompt": "x", "reddit_username": "a", "steps": 7.5}', "steps", "expected an integer, got float 7.5"),
    (b'{"prompt": "x", "reddit_username": "a", "seed": true}', "seed", "expected an integer, got a boolean"),
    (b'{"prompt": "x", "reddit_username": "a", "cfgScale": "NaN"}', "cfg_scale", "expected a finite number"),
    (b'{"prompt": "x", "reddit_username": "a", "width": -512}', "width", "expected an integer within 1..65536, got -512"),
    (b'{"prompt": "x", "reddit_username": "a", "height": 0}', "height", "within 1..65536, got 0"),
    (b'{"prompt": "x", "reddit_username": "../../etc/passwd"}', "reddit_username", "expected a user name"),
    (b'{"prompt": "x", "reddit_username": ["a"]}', "reddit_username", "expected a user name or id, got a list"),
    (b'{"prompt": "x", "reddit_username": "a", "cfgScale": 7, "cfg": 8}', "cfg_scale", "expected one column"),
    (b'{"prompt": "caf\xe9", "reddit_username": "a"}', None, "expected UTF-8 text, found byte 0xe9"),
    (b'["prompt", "x"]', None, "expected an object, got a list"),
    (b'"just text"', None, "expected an object, got text"),
]


@pytest.mark.parametrize("line,field,says", BAD_JSONL_LINES)
def test_each_bad_row_raises_naming_file_line_and_field(tmp_path, line, field, says):
    path = tmp_path / "gens.jsonl"
    path.write_bytes(json.dumps(_generation()).encode() + b"\n\n" + line + b"\n")
    with pytest.raises(BenchmarkFileError) as excinfo:
        load_generation_histories(path)
    error = excinfo.value
    assert (error.row, error.field) == (3, field)  # the blank line still counts
    assert str(path) in str(error) and "line 3" in str(error) and says in str(error)
    if field:
        assert f"field {field!r}" in str(error)


def test_skip_returns_every_bad_row_with_its_reason(tmp_path):
    path = tmp_path / "gens.jsonl"
    lines = [json.dumps(_generation()).encode()] + [line for line, _, _ in BAD_JSONL_LINES]
    path.write_bytes(b"\n".join(lines) + b"\n")
    rows, rejected = load_generation_histories(path, on_bad_row="skip")
    assert rows.num_rows == 1 and rows.column("source_row").to_pylist() == [1]
    assert rejected.schema == REJECTED_SCHEMA
    assert rejected.num_rows == len(BAD_JSONL_LINES)  # nothing dropped silently
    assert rejected.column("source_row").to_pylist() == list(range(2, len(lines) + 1))
    assert rejected.column("field").to_pylist() == [f for _, f, _ in BAD_JSONL_LINES]
    for reason, (_, _, says) in zip(rejected.column("reason").to_pylist(), BAD_JSONL_LINES):
        assert says in reason
    assert all(raw and len(raw) <= 500 for raw in rejected.column("raw").to_pylist())


def test_bad_rows_in_json_csv_and_parquet_name_their_row(tmp_path):
    rows = [_generation(), "not an object", _generation(width=-1)]
    with pytest.raises(BenchmarkFileError, match=r"g\.json, row 2: expected an object"):
        load_generation_histories(_write(tmp_path / "g.json", rows))
    good, rejected = load_generation_histories(tmp_path / "g.json", on_bad_row="skip")
    assert good.num_rows == 1 and rejected.column("source_row").to_pylist() == [2, 3]

    (tmp_path / "g.csv").write_text("prompt,reddit_username,width\nok,alice,512\nok,bob,wide\nok,carol,1,extra\n,dave,1\n")
    with pytest.raises(BenchmarkFileError, match=r"g\.csv, row 2, field 'width': expected an integer, got text 'wide'"):
        load_generation_histories(tmp_path / "g.csv")
    good, rejected = load_generation_histories(tmp_path / "g.csv", on_bad_row="skip")
    assert good.column("reddit_username").to_pylist() == ["alice"]
    assert rejected.column("source_row").to_pylist() == [2, 3, 4]
    assert "at most 3 cells" in rejected.column("reason")[1].as_py()
    assert rejected.column("field").to_pylist() == ["width", None, "prompt"]

    pq.write_table(pa.table({"prompt": ["ok", "ok"], "reddit_username": ["alice", "bob"], "seed": [5, -3]}),
                   tmp_path / "g.parquet")
    with pytest.raises(BenchmarkFileError, match=r"g\.parquet, row 2, field 'seed': expected an integer within 0\.\."):
        load_generation_histories(tmp_path / "g.parquet")


def test_prompt_history_and_preference_rows_are_checked_too(tmp_path):
    (tmp_path / "pip.jsonl").write_text('{"user_id": "a", "prompt": "x", "timestamp": "yesterday"}\n')
    with pytest.raises(BenchmarkFileError, match=r"line 1, field 'timestamp': expected an ISO 8601 time"):
        load_prompt_histories(tmp_path / "pip.jsonl")
    (tmp_path / "pip2.jsonl").write_text('{"user": "a", "user_id": "b", "prompt": "x"}\n')
    with pytest.raises(BenchmarkFileError, match=r"field 'user_id': expected one column for it"):
        load_prompt_histories(tmp_path / "pip2.jsonl")
    pair = {"user_id": "r", "prompt": "p", "image_a": "a.png", "image_b": "b.png", "preferred": "left"}
    _write(tmp_path / "p.jsonl", [pair, {**pair, "preferred": "b", "image_b": "a.png"}, {**pair, "preferred": "b"}])
    good, rejected = load_preference_pairs(tmp_path / "p.jsonl", on_bad_row="skip")
    assert good.column("source_row").to_pylist() == [3]
    assert rejected.column("field").to_pylist() == ["preferred", "image_b"]
    assert "expected one of 'a', 'b', 'tie', got 'left'" in rejected.column("reason")[0].as_py()


def test_bad_policy_is_refused(tmp_path):
    with pytest.raises(ValueError, match="on_bad_row"):
        load_generation_histories(_write(tmp_path / "g.jsonl", ROWS), on_bad_row="drop")
