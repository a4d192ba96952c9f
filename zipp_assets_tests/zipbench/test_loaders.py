"""The benchmark loaders on small files in each published layout (ZIP-Bench, PIP, Pick-a-Pic v2, Rapidata,
Civitai image records), their dirt, each kind of bad row and bad file, and `inspect`."""

import json
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from zipp_assets.zipbench.loaders import (
    GENERATION_SCHEMA,
    PREFERENCE_SCHEMA,
    PROMPT_HISTORY_SCHEMA,
    REJECTED_SCHEMA,
    BenchmarkFileError,
    load,
    load_generation_histories,
    load_preference_pairs,
    load_prompt_histories,
)
from zipp_assets.zipbench.loaders.cli import inspect_report, main, render_text
from zipp_assets.zipbench.loaders.images import export_images, find_image, image_stem
from zipp_assets_tests.zipbench import published as pub

ROOT = Path(__file__).resolve().parents[2]


def _reasons(result) -> Counter:
    return Counter(zip(result.rejected["field"].to_pylist(), result.rejected["kind"].to_pylist()))


# --- each published layout loads every valid row ---------------------------------------------------

def test_zipbench_parquet_loads_every_valid_row_nan_is_missing_and_big_seeds_are_kept(tmp_path):
    result = load(pub.write_zipbench(tmp_path / "train-00000-of-00001.parquet"))
    assert (result.format.name, result.detected, result.kind) == ("zipbench", True, "generations")
    assert result.table.schema == GENERATION_SCHEMA
    assert result.table.num_rows == pub.ZIPBENCH_EXPECTED["loaded"]
    assert _reasons(result) == Counter(pub.ZIPBENCH_EXPECTED["rejected"])
    assert result.duplicates.num_rows == 1 and result.duplicates["first_row"].to_pylist() == [1]
    rows = {r["record_id"]: r for r in result.table.to_pylist()}
    assert (rows["1"]["seed"], rows["1"]["steps"], rows["1"]["cfg_scale"]) == (1234567, 30, 7.0)
    assert rows["1"]["civitai_username"] == "pixel.fox" and rows["1"]["nsfw"] == "0"
    assert rows["1"]["created_at"].isoformat() == "2024-03-01T10:00:00+00:00"
    # NaN in an optional field is missing, not bad
    assert rows["2"]["seed"] is None and rows["2"]["steps"] is None and rows["2"]["negative_prompt"] is None
    # a seed above 2^53 arrives as a float: kept, and marked as having lost its low bits
    assert rows["3"]["seed"] == int(float(2**60 + 12345)) and rows["3"]["seed_exact"] is False
    assert rows["1"]["seed_exact"] is True and rows["2"]["seed_exact"] is None
    assert any("low bits are lost" in note for note in result.notes)
    # the A1111 block is cut off the negative prompt and fills what the row lacked
    assert rows["4"]["negative_prompt"] == "ugly" and rows["4"]["seed"] == 99 and rows["4"]["steps"] == 30


def test_pip_folder_of_per_user_files_marks_the_last_two_rows_of_each_user_as_test(tmp_path):
    folder = pub.write_pip_folder(tmp_path / "pip")
    result = load(folder)
    assert (result.format.name, result.kind) == ("pip", "prompt_histories")
    assert result.table.schema == PROMPT_HISTORY_SCHEMA
    assert result.table.num_rows == 3 + 4 + 3
    assert _reasons(result) == Counter({("user_id", "user differs from the file's"): 1,
                                        ("prompt", "missing required value"): 1})
    assert result.not_data == ["README.md"]
    assert {f["file"] for f in result.files} == {"1001.jsonl", "1002", "1003.jsonl"}
    rows = result.table.to_pylist()
    by_user = {}
    for r in rows:
        by_user.setdefault(r["user_id"], []).append(r)
    assert set(by_user) == {"1001", "1002", "1003"}  # the file's name, checked against the int user_id
    for user, n in (("1001", 5), ("1002", 4), ("1003", 3)):
        mine = sorted(by_user[user], key=lambda r: r["position"])
        tests = [r for r in mine if r["split"] == "test"]
        assert [r["position"] for r in tests] == [n - 2, n - 1]  # the last two rows of the file, bad or not
        assert all(r["short_prompt"] == f"castle {r['record_id']}" for r in tests)  # query kept as the short prompt
        assert all(r["prompt"].startswith("prompt ") and r["prompt"] != r["short_prompt"] for r in tests)
        assert all(r["short_prompt"] is None for r in mine if r["split"] == "train")
    first = {r["position"]: r for r in by_user["1001"]}
    assert set(first) == {0, 3, 4}  # positions 1 (another user) and 2 (no prompt) rejected, the split unmoved
    assert first[0]["resolution_power"] is None and first[3]["resolution_power"] == 1.0  # NaN is missing
    assert first[0]["nsfw"] == "0" and first[3]["nsfw"] == "true"  # 0.0 and True as published
    rejected = result.rejected.to_pylist()
    assert {(r["source_file"], r["source_row"]) for r in rejected} == {("1001.jsonl", 2), ("1001.jsonl", 3)}
    assert "expected the file's user '1001'" in next(r["reason"] for r in rejected if r["field"] == "user_id")


def test_pip_single_file_and_a_file_of_several_users(tmp_path):
    one = tmp_path / "42.jsonl"
    one.write_text("".join(json.dumps(r) + "\n" for r in pub.pip_user_rows("42", 4)))
    table = load_prompt_histories(one)
    assert table["split"].to_pylist() == ["train", "train", "test", "test"]
    combined = tmp_path / "all_users.jsonl"
    rows = pub.pip_user_rows("alice", 3) + pub.pip_user_rows("bob", 4)
    combined.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = load(combined)
    splits = Counter((r["user_id"], r["split"]) for r in result.table.to_pylist())
    assert splits == {("alice", "train"): 1, ("alice", "test"): 2, ("bob", "train"): 2, ("bob", "test"): 2}
    assert any("several users" in note for note in result.notes)


def test_pickapic_v2_parquet_reads_labels_ties_and_skips_unlabelled_pairs(tmp_path):
    result = load(pub.write_pickapic(tmp_path / "train-00000.parquet"))
    assert (result.format.name, result.kind) == ("pickapic-v2", "preferences")
    assert result.table.schema == PREFERENCE_SCHEMA
    assert result.table.num_rows == pub.PICKAPIC_EXPECTED["loaded"]
    assert result.skipped.num_rows == pub.PICKAPIC_EXPECTED["skipped"]
    assert result.duplicates.num_rows == pub.PICKAPIC_EXPECTED["duplicates"]
    assert _reasons(result) == Counter(pub.PICKAPIC_EXPECTED["rejected"])
    rows = result.table.to_pylist()
    assert [r["preferred"] for r in rows] == ["a", "b", "tie", "a"]
    assert [r["annotator_id"] for r in rows] == ["11", "11", "12", "12"]
    assert rows[0]["image_a"] == "u-a1" and rows[0]["image_a_url"].endswith("u-a1.png")
    assert rows[0]["prompt"] == "a red apple" and rows[0]["model_a"] == "sdxl"
    assert set(result.skipped["reason"].to_pylist()) == {"no human label (has_label is false)",
                                                         "the two images are the same (are_different is false)"}
    # JSON Lines export of the same layout: int labels (mixed int/float), no bytes
    jsonl = load_preference_pairs(pub.write_pickapic_jsonl(tmp_path / "pickapic.jsonl"))
    assert jsonl["preferred"].to_pylist() == ["a", "b", "tie", "a"]


def test_rapidata_parquet_gives_one_row_per_vote_with_the_annotators_demographics(tmp_path):
    result = load(pub.write_rapidata(tmp_path / "train_0001.parquet"))
    assert (result.format.name, result.kind) == ("rapidata", "preferences")
    assert result.table.num_rows == pub.RAPIDATA_EXPECTED["loaded_votes"]
    assert len(set(result.table["pair_id"].to_pylist())) == pub.RAPIDATA_EXPECTED["pairs"]
    assert _reasons(result) == Counter(pub.RAPIDATA_EXPECTED["rejected"])
    votes = result.table.to_pylist()
    first = [v for v in votes if v["prompt"] == "a green meadow"]
    assert [v["preferred"] for v in first] == ["a", "a", "b"]
    assert [(v["age"], v["gender"], v["country"]) for v in first] == [("25-34", "Female", "US"),
                                                                     ("45-54", "Male", "US"),
                                                                     ("Unknown", "Other", "US")]
    assert first[0]["annotator_score"] == 0.8 and first[0]["occupation"] == "Healthcare"
    assert first[0]["image_a"] == "flux_1.png" and first[0]["model_b"] == "dalle3"
    frog = [v for v in votes if v["prompt"] == "a green frog"]
    assert [v["preferred"] for v in frog] == ["b", "b"]  # votes named by model
    bottle = [v for v in votes if v["prompt"] == "a green bottle"]
    assert [v["preferred"] for v in bottle] == ["b", "b"] and all(v["age"] is None for v in bottle)
    assert any("counts differ" in n for n in result.notes) and any("without detailed_results" in n
                                                                    for n in result.notes)
    assert "votedFor" not in "".join(result.rejected["reason"].to_pylist())  # reasons name the annotator, not keys
    assert "annotator 1: expected a vote naming image1 or image2, got 'midjourney_4.png'" in \
        result.rejected["reason"].to_pylist()


def test_rapidata_jsonl_with_images_as_paths_and_details_as_a_list(tmp_path):
    rows = [{"prompt": "p", "image1": "imgs/a.png", "image2": "imgs/b.png", "votes_image1": 1, "votes_image2": 0,
             "model1": "m", "model2": "m", "detailed_results": [{"votedFor": "a.png", "userDetails": {"age": "65+"}}]}]
    path = tmp_path / "rapidata.jsonl"
    path.write_text(json.dumps(rows[0]) + "\n")
    table = load_preference_pairs(path)
    assert table.to_pylist()[0]["preferred"] == "a" and table.to_pylist()[0]["age"] == "65+"


def test_civitai_records_as_json_lines_under_a_txt_name(tmp_path):
    result = load(pub.write_civitai(tmp_path / "gallery_scrape.txt"))
    assert (result.format.name, result.kind, result.files[0]["container"]) == ("civitai-images", "generations",
                                                                              "JSON Lines")
    assert result.table.num_rows == pub.CIVITAI_EXPECTED["loaded"]
    assert result.skipped.num_rows == 1 and result.duplicates.num_rows == 1
    assert _reasons(result) == Counter(pub.CIVITAI_EXPECTED["rejected"])
    rows = {r["record_id"]: r for r in result.table.to_pylist()}
    assert rows["1"]["cfg_scale"] == 7.0 and rows["2"]["cfg_scale"] == 6.5  # int or float
    assert rows["1"]["model"] == "dreamshaper_8" and rows["1"]["civitai_username"] == "gallery_owner"
    assert rows["1"]["reddit_username"] is None and rows["1"]["nsfw"] == "false"
    assert rows["2"]["seed"] is None and rows["2"]["sampler"] is None  # nulls are missing
    tram = rows["3"]  # the unparsed A1111 block: split off, and the settings the record lacked taken from it
    assert tram["negative_prompt"] == "lowres, bad hands"
    assert (tram["seed"], tram["steps"], tram["sampler"], tram["cfg_scale"]) == (3141592, 30, "DPM++ 2M Karras", 7.5)
    assert (tram["width"], tram["height"], tram["model"]) == (512, 768, "dreamshaper_8")  # the record's own kept
    assert rows["6"]["width"] is None and rows["6"]["nsfw"] is None


def test_gzip_and_no_extension_are_read_from_their_bytes(tmp_path):
    import gzip

    data = "".join(json.dumps(r) + "\n" for r in pub.civitai_records()).encode()
    (tmp_path / "scrape.jsonl.gz").write_bytes(gzip.compress(data))
    (tmp_path / "scrape").write_bytes(data)
    for name in ("scrape.jsonl.gz", "scrape"):
        assert load(tmp_path / name).table.num_rows == pub.CIVITAI_EXPECTED["loaded"]


# --- formats named and detected --------------------------------------------------------------------

def test_a_named_format_that_the_file_is_not_says_so(tmp_path):
    path = pub.write_civitai(tmp_path / "scrape.txt")
    with pytest.raises(BenchmarkFileError, match=r"not a pickapic-v2 file .*lacks caption, image_0_uid"):
        load(path, "pickapic-v2")
    with pytest.raises(ValueError, match="unknown format 'parquet'"):
        load(path, "parquet")
    assert load(path, "civitai-images").detected is False


def test_a_file_of_no_known_format_and_a_folder_of_mixed_formats(tmp_path):
    path = tmp_path / "other.jsonl"
    path.write_text('{"title": "x", "body": "y"}\n')
    with pytest.raises(BenchmarkFileError, match=r"not a file of any known format .*its columns: title, body"):
        load(path)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    pub.write_civitai(mixed / "a.jsonl")
    pub.write_pickapic(mixed / "b.parquet")
    with pytest.raises(BenchmarkFileError, match="files in different formats"):
        load(mixed)


def test_the_one_table_loaders_refuse_another_table(tmp_path):
    path = pub.write_pickapic(tmp_path / "p.parquet")
    with pytest.raises(BenchmarkFileError, match="expected generation histories, got a pickapic-v2 file"):
        load_generation_histories(path)
    rows, rejected = load_preference_pairs(path, on_bad_row="skip")
    assert rows.num_rows == 4 and rejected.schema == REJECTED_SCHEMA
    with pytest.raises(BenchmarkFileError, match=r"p\.parquet, row 8, field 'label_0': expected labels"):
        load_preference_pairs(path)


# --- bad files ---------------------------------------------------------------------------------------

def test_missing_empty_and_unreadable_files(tmp_path):
    with pytest.raises(BenchmarkFileError, match="no such file"):
        load(tmp_path / "absent.jsonl")
    for name, content in (("e.jsonl", b""), ("e2.jsonl", b"\n  \n"), ("e.json", b"[]"), ("e.csv", b"")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(BenchmarkFileError, match="empty file"):
            load(tmp_path / name)
    (tmp_path / "obj.json").write_text('{\n "prompt": "x",\n "reddit_username": "a"\n}\n')
    with pytest.raises(BenchmarkFileError, match="got one JSON object"):
        load(tmp_path / "obj.json")
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 not really parquet")
    with pytest.raises(BenchmarkFileError, match="expected a Parquet file"):
        load(tmp_path / "junk.parquet")
    (tmp_path / "text.txt").write_text("hello world\n")
    with pytest.raises(BenchmarkFileError, match="expected JSON Lines, a JSON array, Parquet"):
        load(tmp_path / "text.txt")
    (tmp_path / "bad.json").write_text('[\n{"prompt": "x",\n "reddit_username": }\n]')
    with pytest.raises(BenchmarkFileError, match=r"bad\.json, line 3: expected a JSON array"):
        load(tmp_path / "bad.json")
    (tmp_path / "latin1.csv").write_bytes(b"prompt,reddit_username\nok,alice\ncaf\xe9,bob\n")
    with pytest.raises(BenchmarkFileError, match=r"line 3: expected UTF-8 text, found byte 0xe9"):
        load(tmp_path / "latin1.csv")
    (tmp_path / "dup.csv").write_text("prompt,reddit_username,Reddit_Username\nx,a,b\n")
    with pytest.raises(BenchmarkFileError, match="distinct column names"):
        load(tmp_path / "dup.csv")
    empty = tmp_path / "nothing"
    empty.mkdir()
    (empty / "README.md").write_text("x")
    with pytest.raises(BenchmarkFileError, match="expected data files in the folder, got none"):
        load(empty)


def test_a_folder_keeps_going_past_an_unreadable_file_unless_asked_to_raise(tmp_path):
    folder = pub.write_pip_folder(tmp_path / "pip", bad=False)
    (folder / "broken.jsonl").write_bytes(b"\x00\x01 binary junk")
    result = load(folder)
    assert result.table.num_rows == 5 + 4 + 3 - 0 and \
        [f["status"] for f in result.files if f["file"] == "broken.jsonl"] == ["refused"]
    with pytest.raises(BenchmarkFileError, match="broken.jsonl"):
        load(folder, on_bad_row="raise")


# --- bad rows: each kind, raised with file, row and field; skipped with reasons ----------------------

def _zipbench(**overrides):
    row = {"imageId": 1, "prompt": "a lighthouse", "reddit_username": "a", "seed": 5, "steps": 20, "width": 512}
    row.update(overrides)
    return json.dumps(row).encode()


BAD_LINES = [
    # (line text, field at fault or None, kind, what the reason says)
    (b'{"prompt": "x", "reddit_username": "a"', None, "malformed JSON", "malformed JSON"),
    (_zipbench(prompt=None), "prompt", "missing required value", "expected a value, got none"),
    (_zipbench(prompt="   "), "prompt", "missing required value", "expected a value, got none"),
    (_zipbench(prompt=17), "prompt", "not text", "expected text, got int 17"),
    (_zipbench(seed="abc"), "seed", "not an integer", "expected an integer seed, got text 'abc'"),
    (_zipbench(seed=-7), "seed", "integer out of range", "within 0..2^64-1"),
    (_zipbench(seed=2**64), "seed", "integer out of range", "within 0..2^64-1"),
    (_zipbench(steps=7.5), "steps", "not an integer", "expected an integer, got float 7.5"),
    (_zipbench(steps=True), "steps", "not an integer", "expected an integer, got a boolean"),
    (_zipbench(cfgScale="Infinity"), "cfg_scale", "not a number", "expected a finite number"),
    (_zipbench(width=-512), "width", "integer out of range", "within 1..65536, got -512"),
    (_zipbench(reddit_username="../../etc/passwd"), "reddit_username", "not a user name", "expected a user name"),
    (_zipbench(reddit_username=["a"]), "reddit_username", "not a user name", "got a list"),
    (_zipbench(cfgScale=7, cfg=8), "cfg_scale", "two columns for one field", "expected one column for it"),
    (_zipbench(createdAt="yesterday"), "created_at", "not a time", "expected an ISO 8601 time"),
    (b'{"prompt": "caf\xe9", "reddit_username": "a"}', None, "not UTF-8", "expected UTF-8 text, found byte 0xe9"),
    (b'["prompt", "x"]', None, "not an object", "expected an object, got a list"),
    (b'"just text"', None, "not an object", "expected an object, got text"),
]


@pytest.mark.parametrize("line,field,kind,says", BAD_LINES)
def test_each_bad_row_raises_naming_file_line_and_field(tmp_path, line, field, kind, says):
    path = tmp_path / "gens.jsonl"
    path.write_bytes(_zipbench() + b"\n\n" + line + b"\n")
    with pytest.raises(BenchmarkFileError) as excinfo:
        load(path, "zipbench", on_bad_row="raise")
    error = excinfo.value
    assert (error.row, error.field) == (3, field)  # the blank line still counts
    assert str(path) in str(error) and "line 3" in str(error) and says in str(error)


def test_skip_returns_every_bad_row_with_its_reason_and_kind(tmp_path):
    path = tmp_path / "gens.jsonl"
    lines = [_zipbench()] + [line for line, *_ in BAD_LINES]
    path.write_bytes(b"\n".join(lines) + b"\n")
    result = load(path, "zipbench")
    assert result.table.num_rows == 1 and result.table["source_row"].to_pylist() == [1]
    assert result.rejected.num_rows == len(BAD_LINES)  # nothing dropped silently
    assert result.rejected["source_row"].to_pylist() == list(range(2, len(lines) + 1))
    assert result.rejected["field"].to_pylist() == [f for _, f, _, _ in BAD_LINES]
    assert result.rejected["kind"].to_pylist() == [k for _, _, k, _ in BAD_LINES]
    for reason, (_, _, _, says) in zip(result.rejected["reason"].to_pylist(), BAD_LINES):
        assert says in reason
    assert all(raw and len(raw) <= 500 for raw in result.rejected["raw"].to_pylist())


@pytest.mark.parametrize("record,field,kind", [
    ({"caption": "c", "image_0_uid": "x", "image_1_uid": "x", "label_0": 1, "label_1": 0}, "image_1_uid",
     "the same image twice"),
    ({"caption": "c", "image_0_uid": "x", "image_1_uid": "y", "label_0": 2, "label_1": -1}, "label_0",
     "number out of range"),
    ({"caption": "c", "image_0_uid": "x", "image_1_uid": "y", "best_image_uid": "z"}, "best_image_uid",
     "best image is neither"),
    ({"caption": None, "image_0_uid": "x", "image_1_uid": "y", "label_0": 1}, "prompt", "missing required value"),
    ({"caption": "c", "image_0_uid": "x", "image_1_uid": "y", "label_0": 1, "user_id": "../x"}, "annotator_id",
     "not a user name"),
])
def test_bad_pickapic_rows(tmp_path, record, field, kind):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(record) + "\n")
    result = load(path, "pickapic-v2")
    assert _reasons(result) == Counter({(field, kind): 1})


@pytest.mark.parametrize("record,field,kind", [
    ({"prompt": "p", "image1": "a.png", "image2": "a.png", "votes_image1": 1}, "image2", "the same image twice"),
    ({"prompt": "p", "image1": {"bytes": None, "path": None}, "image2": "b.png", "votes_image1": 1}, "image1",
     "no image"),
    ({"prompt": "p", "image1": "a.png", "image2": "b.png", "detailed_results": {"x": 1}}, "detailed_results",
     "not a list"),
    ({"prompt": "p", "image1": "a.png", "image2": "b.png", "detailed_results": ["a.png"]}, "detailed_results",
     "annotator entry unreadable"),
    ({"prompt": "p", "image1": "a.png", "image2": "b.png", "votes_image1": -1}, "votes_image1",
     "integer out of range"),
    ({"prompt": "p", "image1": "a.png", "image2": "b.png", "model1": "m", "model2": "m",
      "detailed_results": [{"votedFor": "m"}]}, "detailed_results", "vote names neither image"),
])
def test_bad_rapidata_rows(tmp_path, record, field, kind):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(record) + "\n")
    result = load(path, "rapidata")
    assert _reasons(result) == Counter({(field, kind): 1})


@pytest.mark.parametrize("record,field,kind", [
    ({"id": 1, "url": "u", "meta": "not json"}, "meta", "not an object"),
    ({"id": 1, "url": "u", "meta": [1, 2]}, "meta", "not an object"),
    ({"id": {"a": 1}, "url": "u", "meta": {"prompt": "p"}}, "record_id", "not an id"),
    ({"id": 1, "url": "u", "meta": {"prompt": "p", "steps": 0}}, "steps", "integer out of range"),
    ({"id": 1, "url": "u", "meta": {"prompt": "p"}, "createdAt": "not a date"}, "created_at", "not a time"),
])
def test_bad_civitai_rows(tmp_path, record, field, kind):
    path = tmp_path / "c.txt"
    path.write_text(json.dumps(record) + "\n")
    result = load(path, "civitai-images")
    assert _reasons(result) == Counter({(field, kind): 1})


def test_csv_rows_too_many_cells_and_empty_cells(tmp_path):
    (tmp_path / "g.csv").write_text("prompt,reddit_username,seed\nok,alice,\nok,bob,1,extra\n,carol,3\nok,dave,nan\n")
    result = load(tmp_path / "g.csv")
    assert result.table["reddit_username"].to_pylist() == ["alice", "dave"]
    assert result.table["seed"].to_pylist() == [None, None]  # an empty cell and 'nan' are missing
    assert _reasons(result) == Counter({(None, "too many cells"): 1, ("prompt", "missing required value"): 1})


# --- inspect ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("writer,name,fmt,table,loaded", [
    (pub.write_zipbench, "zb.parquet", "zipbench", "generations", 4),
    (pub.write_pickapic, "pap.parquet", "pickapic-v2", "preferences", 4),
    (pub.write_rapidata, "rd.parquet", "rapidata", "preferences", 7),
    (pub.write_civitai, "scrape.txt", "civitai-images", "generations", 4),
])
def test_inspect_reports_each_layout(tmp_path, writer, name, fmt, table, loaded):
    report = inspect_report(writer(tmp_path / name))
    assert (report["format"], report["table"], report["rows_loaded"]) == (fmt, table, loaded)
    assert report["format_by"] == "detected from the columns"
    assert report["rejected_total"] == sum(g["count"] for g in report["rejected"]) > 0
    for group in report["rejected"]:
        assert group["examples"] and all(e["file"] == name and e["row"] >= 1 for e in group["examples"])
    text = render_text(report)
    assert f"format: {fmt} (detected from the columns)" in text and f"loaded: {loaded} row(s)" in text
    assert "rejected, by field and reason:" in text and "e.g." in text
    json.dumps(report, default=str)  # --json works


def test_inspect_a_pip_folder_and_a_refused_file(tmp_path, capsys):
    folder = pub.write_pip_folder(tmp_path / "pip")
    assert main(["inspect", str(folder), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["is_folder"] and report["format"] == "pip" and report["rows_loaded"] == 10
    assert report["summary"] == {"rows": 10, "users": 3, "train_rows": 4, "test_rows": 6, "with_short_prompt": 6,
                                 "test_rows_with_short_prompt": 6}
    assert {g["kind"]: g["count"] for g in report["rejected"]} == {"user differs from the file's": 1,
                                                                   "missing required value": 1}
    assert report["not_data_files"] == ["README.md"]
    assert main(["inspect", str(folder)]) == 0
    text = capsys.readouterr().out
    assert "a folder of 3 data file(s)" in text and "1001.jsonl line 2" in text and "not data (skipped): README.md" \
        in text
    civitai = pub.write_civitai(tmp_path / "scrape.txt")
    assert main(["inspect", str(civitai), "--format", "rapidata"]) == 1
    assert "not a rapidata file" in capsys.readouterr().out
    assert main(["formats"]) == 0 and "pickapic-v2" in capsys.readouterr().out


def test_inspect_runs_as_a_module(tmp_path):
    path = pub.write_civitai(tmp_path / "scrape.txt")
    done = subprocess.run([sys.executable, "-m", "zipp_assets.zipbench.loaders", "inspect", str(path), "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["rows_loaded"] == 4 and report["skipped_total"] == 1 and report["duplicates_total"] == 1


# --- images ---------------------------------------------------------------------------------------------

def test_export_images_writes_parquet_image_bytes_where_the_judge_finds_them(tmp_path):
    out = tmp_path / "images"
    counts = export_images(pub.write_pickapic(tmp_path / "p.parquet"), out)
    assert counts["written"] == 16 and counts["kept"] == 2  # 9 rows x 2 images, one row twice
    assert find_image(out, "u-a1").suffix == ".jpg" and find_image(out, "nope") is None
    counts = export_images(pub.write_rapidata(tmp_path / "r.parquet"), out)
    assert counts["written"] == 10
    assert find_image(out, "flux_1.png").name == "flux_1.png"
    assert image_stem("https://x.example/a/b/c.png?x=1") == "c" and image_stem("flux/1.png") == "flux__1"
    assert image_stem("../../etc/passwd") == "etc__passwd"
    (tmp_path / "outside.png").write_bytes(pub.png((1, 2, 3)))
    assert find_image(out, "../outside.png") is None  # an id never reaches outside the root


def test_big_parquet_files_are_read_in_batches_without_their_image_bytes(tmp_path, monkeypatch):
    from zipp_assets.zipbench.loaders import containers

    read_columns = []
    original = pq.ParquetFile.iter_batches

    def spy(self, *args, columns=None, **kwargs):
        read_columns.append(tuple(columns or ()))
        return original(self, *args, columns=columns, **kwargs)

    monkeypatch.setattr(containers.pq.ParquetFile, "iter_batches", spy)
    load(pub.write_pickapic(tmp_path / "p.parquet"))
    load(pub.write_rapidata(tmp_path / "r.parquet"))
    assert read_columns and not any({"jpg_0", "jpg_1", "image1", "image2"} & set(cols) for cols in read_columns)


def test_seed_values_and_nan_text():
    from zipp_assets.zipbench.loaders import values as v

    assert v.seed(math.nan) == (None, True) and v.seed(-1) == (None, True) and v.seed("12") == (12, True)
    assert v.seed(float(2**53)) == (2**53, False) and v.seed(2**53 + 1) == (2**53 + 1, True)
    assert v.integer(1, 10)("7.0") == 7 and v.integer(1, 10)("NaN") is None
    assert v.user_name(1001.0) == "1001" and v.user_name("u/Name_1") == "Name_1"
    assert v.timestamp(1_700_000_000_000).year == 2023  # epoch milliseconds
    assert pa.array([2**64 - 1], pa.uint64()).to_pylist() == [2**64 - 1]
