import json

import msgspec
import pyarrow as pa
import pytest

from zipp_assets.reddit.dumps import LineBlock
from zipp_assets.reddit.parse import Quarantine, comments_table, submissions_table


def _block(lines: list[bytes], first_line: int = 1, first_offset: int = 0) -> LineBlock:
    return LineBlock(b"\n".join(lines), first_line, first_offset, 0)


def _comment(**fields) -> bytes:
    record = {"id": "c1", "author": "alice", "subreddit": "pics", "created_utc": 1546300800, "body": "hi",
              "link_id": "t3_p1", "parent_id": "t3_p1", "score": 3}
    record.update(fields)
    return json.dumps({k: v for k, v in record.items() if v is not ...}).encode()


def _parse(lines):
    quarantine = Quarantine()
    table = comments_table(_block(lines), "RC_2019-01.zst", quarantine)
    return table, quarantine.to_table().to_pylist()


def test_type_drift_between_eras_is_normalised():
    lines = [
        _comment(id="a", created_utc="1546300800", edited=False),  # string timestamp, bool edited
        _comment(id="b", created_utc=1546300801.0, edited=1546300900.5),  # float timestamp, timestamp edited
        _comment(id="t1_c", score="7", author_fullname="t2_xyz"),  # prefixed id, numeric string score
        _comment(id="d", author="[deleted]", body="[removed]"),
        _comment(id="e", _meta={"retrieved_2nd_on": 1}, extra=[1, 2, {"x": None}]),  # Arctic Shift extras
    ]
    table, quarantined = _parse(lines)
    assert quarantined == []
    rows = {r["id"]: r for r in table.to_pylist()}
    assert set(rows) == {"a", "b", "c", "d", "e"}
    assert rows["a"]["created_utc"].timestamp() == 1546300800 and rows["a"]["edited"] is False
    assert rows["b"]["created_utc"].timestamp() == 1546300801 and rows["b"]["edited"] is True
    assert rows["c"]["score"] == 7 and rows["c"]["user_key"] == "t2_xyz"
    assert rows["a"]["user_key"] == "alice"  # no author_fullname in older dumps: keyed by name
    assert rows["d"]["user_key"] is None


def test_a_generated_month_parses_like_plain_json_loads(tiny_world):
    from zipp_assets.reddit.dumps import iter_line_blocks

    block = next(iter_line_blocks(tiny_world / "raw" / "reddit" / "RC_2018-01.zst"))
    quarantine = Quarantine()
    table = comments_table(block, "f", quarantine)
    expected = {}
    for line in block.data.split(b"\n"):
        try:
            obj = json.loads(line)
            expected[obj["id"]] = obj
        except (ValueError, KeyError, TypeError):
            continue
    rows = table.to_pylist()
    assert len(rows) + len(quarantine) == block.data.count(b"\n") + 1 and len(rows) > 100
    for row in rows:
        obj = expected[row["id"]]
        assert row["body"] == obj["body"] and row["author"] == obj["author"] and row["subreddit"] == obj["subreddit"]
        assert row["created_utc"].timestamp() == int(float(obj["created_utc"]))
        assert row["edited"] == bool(obj["edited"]) and row["score"] == obj["score"]
        assert row["user_key"] == (None if obj["author"] == "[deleted]" else obj.get("author_fullname") or obj["author"])


@pytest.mark.parametrize(
    "line, reason",
    [
        (b'{"id": "x", "author": "a", "subreddit": "s", "created_utc": 15463', "DecodeError"),  # truncated
        (b"not json at all", "DecodeError"),
        (b"\xff\xfe" + _comment()[2:], "DecodeError"),  # not UTF-8
        (_comment(id=...), "missing required field `id`"),
        (_comment(subreddit=17), "Expected `str`, got `int` - at `$.subreddit`"),
        (_comment(author={"name": "x"}), "Expected `str`, got `object` - at `$.author`"),
        (_comment(created_utc="yesterday"), "at `$.created_utc`"),
        (_comment(created_utc=12), "not a plausible creation time"),
        (_comment(id=""), "empty `id`"),
        (b"[1, 2, 3]", "Expected `object`, got `array`"),
        (b"", "empty line"),
    ],
)
def test_bad_lines_go_to_quarantine_with_reason_line_and_offset(line, reason):
    good = [_comment(id="g1"), _comment(id="g2")]
    lines = [good[0], line, good[1]]
    table, quarantined = _parse(lines)
    assert table["id"].to_pylist() == ["g1", "g2"]
    assert len(quarantined) == 1
    row = quarantined[0]
    assert reason in row["reason"]
    assert row["file"] == "RC_2019-01.zst"
    assert row["line"] == 2
    assert row["byte_offset"] == len(good[0]) + 1


def test_text_the_fast_decoder_rejects_is_repaired_not_lost():
    lone_surrogate = b'{"id": "s", "author": "a", "subreddit": "s", "created_utc": 1546300800, "body": "half \\ud83d emoji"}'
    bad_bytes = b'{"id": "u", "author": "a", "subreddit": "s", "created_utc": 1546300800, "body": "caf\xe9"}'
    table, quarantined = _parse([_comment(id="g"), lone_surrogate, bad_bytes])
    assert quarantined == []
    bodies = dict(zip(table["id"].to_pylist(), table["body"].to_pylist()))
    assert bodies["s"] == "half ? emoji"
    assert bodies["u"] == "caf\ufffd"
    pa.table({"b": list(bodies.values())}).validate(full=True)


def test_submissions_carry_image_urls_and_quarantine_bad_lines():
    post = {"id": "t3_p1", "author": "bob", "subreddit": "pics", "created_utc": 1546300800, "title": "t",
            "url": "https://i.redd.it/x.png", "post_hint": "image", "over_18": False,
            "preview": {"images": [{"source": {"url": "https://preview.redd.it/x.png?a=1&amp;b=2"}}]}}
    gallery = {"id": "p2", "author": "bob", "subreddit": "pics", "created_utc": "1546300800", "title": "g",
               "is_gallery": True, "url": "https://www.reddit.com/gallery/p2",
               "media_metadata": {"m1": {"status": "valid", "e": "Image", "m": "image/png", "s": {"u": "https://preview.redd.it/m1.png?x=1&amp;y=2"}}}}
    no_title = {"id": "p3", "author": "bob", "subreddit": "pics", "created_utc": 1546300800}
    quarantine = Quarantine()
    lines = [json.dumps(x).encode() for x in (post, gallery, no_title)]
    table = submissions_table(_block(lines, first_line=10, first_offset=100), "RS_2019-01.zst", quarantine)
    rows = {r["id"]: r for r in table.to_pylist()}
    assert rows["p1"]["image_urls"] == ["https://i.redd.it/x.png"] and rows["p1"]["image_sources"] == ["direct"]
    assert rows["p2"]["image_urls"] == ["https://preview.redd.it/m1.png?x=1&y=2"]
    assert quarantine.line == [12] and "missing required field `title`" in quarantine.reason[0]
    assert quarantine.byte_offset == [100 + len(lines[0]) + 1 + len(lines[1]) + 1]


def test_quarantine_excerpt_is_bounded_text():
    huge = b'{"id": ' + b"9" * 10_000
    _, quarantined = _parse([huge])
    assert len(quarantined[0]["excerpt"]) == 200
    with pytest.raises(msgspec.DecodeError):
        msgspec.json.decode(huge)


_NESTED_FIELDS = {
    "preview": {"images": [{"source": {"url": "https://preview.redd.it/p.png?a=1&amp;b=2"}}]},
    "media_metadata": {"m1": {"status": "valid", "e": "Image", "m": "image/png", "s": {"u": "https://preview.redd.it/m1.png"}}},
    "gallery_data": {"items": [{"media_id": "m1"}]},
    "crosspost_parent_list": [{"url": "https://i.redd.it/parent.jpg", "post_hint": "image"}],
}
# Text only the strict decoder rejects, as it sits in a dump line (JSON text, so bytes).
_BAD_TEXT = {"lone surrogate": b"half \\ud83d emoji", "stray byte": b"caf\xe9"}


@pytest.mark.parametrize("nested", ["preview", "media_metadata", "gallery_data", "crosspost_parent_list"])
@pytest.mark.parametrize("as_null", [False, True], ids=["object", "null"])
@pytest.mark.parametrize("bad_text", list(_BAD_TEXT))
def test_submissions_with_nested_json_and_bad_text_are_repaired_not_lost(nested, as_null, bad_text):
    post = {"id": "p1", "author": "bob", "subreddit": "pics", "created_utc": 1546300800, "title": "TITLE",
            "url": "https://i.redd.it/x.png", "post_hint": "image", "is_gallery": nested == "media_metadata",
            nested: None if as_null else _NESTED_FIELDS[nested]}
    line = json.dumps(post).encode().replace(b"TITLE", _BAD_TEXT[bad_text])
    good = json.dumps(post | {"id": "p0", "title": "fine"}).encode()
    quarantine = Quarantine()
    table = submissions_table(_block([good, line]), "RS_2019-01.zst", quarantine)
    assert quarantine.reason == []
    rows = {r["id"]: r for r in table.to_pylist()}
    assert rows["p1"]["title"] == {"lone surrogate": "half ? emoji", "stray byte": "caf\ufffd"}[bad_text]
    # The repaired post carries the same image URLs as the same post with clean text.
    assert rows["p1"]["image_urls"] == rows["p0"]["image_urls"]
    if nested != "gallery_data" and not as_null:
        assert len(rows["p1"]["image_urls"]) >= 1


def test_a_comment_score_outside_int64_is_quarantined_with_a_reason_not_null():
    table, quarantined = _parse([
        _comment(id="max", score=2**63 - 1), _comment(id="min", score=-(2**63)),
        _comment(id="big", score=2**63), _comment(id="huge", score=10**30), _comment(id="low", score=-(2**63) - 1),
        _comment(id="text", score=str(2**64)),
    ])
    assert dict(zip(table["id"].to_pylist(), table["score"].to_pylist())) == {"max": 2**63 - 1, "min": -(2**63)}
    assert [r["line"] for r in quarantined] == [3, 4, 5, 6]
    assert all("at `$.score`" in r["reason"] for r in quarantined), quarantined


@pytest.mark.parametrize("field", ["score", "num_comments"])
@pytest.mark.parametrize("value", [2**63, 2**64, -(2**63) - 1])
@pytest.mark.parametrize("clean_text", [True, False], ids=["fast path", "repair path"])
def test_a_submission_count_outside_int64_is_quarantined_not_a_failed_month(field, value, clean_text):
    post = {"id": "p1", "author": "bob", "subreddit": "pics", "created_utc": 1546300800, "title": "TITLE",
            field: value}
    bad = json.dumps(post).encode().replace(b"TITLE", b"t" if clean_text else _BAD_TEXT["stray byte"])
    good = json.dumps(post | {"id": "p2", field: 2**63 - 1}).encode()
    quarantine = Quarantine()
    table = submissions_table(_block([good, bad]), "RS_2019-01.zst", quarantine)
    assert table["id"].to_pylist() == ["p2"] and table[field].to_pylist() == [2**63 - 1]
    assert quarantine.line == [2] and f"at `$.{field}`" in quarantine.reason[0]
