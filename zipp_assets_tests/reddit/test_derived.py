import json

import duckdb
import pytest

from zipp_assets import lake
from zipp_assets.reddit.authors import is_person
from zipp_assets.reddit.derived import build_image_posts, build_user_subreddit_edges
from zipp_assets.reddit.ingest import ingest_month
from zipp_assets_tests.conftest import write_dump


@pytest.mark.parametrize("name, person", [("alice", True), ("AutoModerator", False), ("RemindMeBot", False),
                                          ("sneakpeek_bot", False), ("converter-bot", False), ("[deleted]", False),
                                          ("Abbot", True), ("robot", True), (None, False)])
def test_who_counts_as_a_person(name, person):
    assert is_person(name) is person


def test_edges_count_people_only(tmp_path):
    raw, lake_dir = tmp_path / "raw", tmp_path / "lake"
    t = 1546300800

    def comment(i, author, sub, score=1, fullname=None):
        record = {"id": f"c{i}", "author": author, "subreddit": sub, "created_utc": t + i, "score": score}
        if fullname:
            record["author_fullname"] = fullname
        return json.dumps(record).encode()

    comments = [
        comment(1, "alice", "pics", 5, "t2_a"), comment(2, "alice", "pics", -2, "t2_a"), comment(3, "alice", "art", 1, "t2_a"),
        comment(4, "bob", "pics"), comment(5, "AutoModerator", "pics"), comment(6, "RemindMeBot", "art"),
        comment(7, "[deleted]", "pics"),
    ]
    submissions = [
        json.dumps({"id": "p1", "author": "alice", "author_fullname": "t2_a", "subreddit": "pics", "created_utc": t + 100,
                    "title": "x", "score": 10, "url": "https://i.redd.it/a.png"}).encode(),
        json.dumps({"id": "p2", "author": "[deleted]", "subreddit": "pics", "created_utc": t + 101, "title": "y",
                    "url": "https://i.redd.it/b.png"}).encode(),
        json.dumps({"id": "p3", "author": "carol_bot", "subreddit": "art", "created_utc": t + 102, "title": "z",
                    "url": "https://i.redd.it/c.png"}).encode(),
    ]
    write_dump(raw / "RC_2019-01.zst", comments)
    write_dump(raw / "RS_2019-01.zst", submissions)
    ingest_month(lake_dir, raw, "comments", "2019-01")
    ingest_month(lake_dir, raw, "submissions", "2019-01")
    report = build_user_subreddit_edges(lake_dir, "2019-01")
    assert report.rows_in == 10
    edges = {(r["user_key"], r["subreddit"]): r for r in lake.read_table(lake_dir, "reddit_user_subreddit_edges").to_pylist()}
    assert set(edges) == {("t2_a", "pics"), ("t2_a", "art"), ("bob", "pics")}
    pics = edges[("t2_a", "pics")]
    assert (pics["comment_count"], pics["submission_count"], pics["score_sum"]) == (2, 1, 13)
    assert pics["first_utc"].timestamp() == t + 1 and pics["last_utc"].timestamp() == t + 100

    images = build_image_posts(lake_dir, "2019-01")
    rows = lake.read_table(lake_dir, "reddit_image_posts").to_pylist()
    assert images.rows_out == 1 and [r["post_id"] for r in rows] == ["p1"]
    assert rows[0]["user_key"] == "t2_a" and rows[0]["image_source"] == "direct"


def test_image_posts_match_the_submissions_of_people(tiny_world, tmp_path):
    raw, lake_dir = tiny_world / "raw" / "reddit", tmp_path / "lake"
    ingest_month(lake_dir, raw, "submissions", "2018-01")
    build_image_posts(lake_dir, "2018-01")
    submissions = lake.read_table(lake_dir, "reddit_submissions", [{"month": "2018-01"}])  # noqa: F841 (DuckDB reads it)
    expected = duckdb.sql("SELECT sum(len(image_urls)) FROM submissions WHERE user_key IS NOT NULL").fetchall()[0][0]
    images = lake.read_table(lake_dir, "reddit_image_posts")
    assert images.num_rows == expected > 20
    cache = tiny_world / "raw" / "images"
    from zipp_assets.reddit.image_urls import image_cache_path

    found = sum(image_cache_path(cache, u).exists() for u in images["image_url"].to_pylist())
    assert found == images.num_rows  # every image the world posted is in the cache under its URL key


def test_derived_tables_need_their_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="no table 'reddit_submissions'"):
        build_image_posts(tmp_path, "2019-04")


def test_a_month_that_was_never_ingested_is_an_error_not_an_empty_month(tiny_world, tmp_path):
    lake_dir = tmp_path / "lake"
    ingest_month(lake_dir, tiny_world / "raw" / "reddit", "submissions", "2018-01")
    with pytest.raises(lake.PartitionNotFound, match="reddit_submissions .* no partition month=2017-12"):
        build_image_posts(lake_dir, "2017-12")


def test_a_month_whose_rows_and_quarantine_disagree_is_refused(tiny_world, tmp_path):
    lake_dir = tmp_path / "lake"
    report = ingest_month(lake_dir, tiny_world / "raw" / "reddit", "submissions", "2018-01")
    assert report.build_id == lake.format_build(lake.open_table(lake_dir, "reddit_submissions_quarantine").build_id({"month": "2018-01"}))
    # As if a writer had died between the two commits of a later ingestion: the rows moved on alone.
    rows = lake.read_table(lake_dir, "reddit_submissions", [{"month": "2018-01"}])
    lake.write_partition(lake_dir, "reddit_submissions", rows, {"month": "2018-01"})
    with pytest.raises(lake.BuildMismatch, match="reddit_submissions .*reddit_submissions_quarantine"):
        build_image_posts(lake_dir, "2018-01")
