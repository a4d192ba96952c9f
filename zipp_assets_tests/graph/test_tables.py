import base64
import json
import secrets
import shutil

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from zipp_assets import lake
from zipp_assets.graph.pseudonyms import DEMO_KEY, pseudonym_key, pseudonymize
from zipp_assets.graph.tables import GraphConfig, build_graph_tables
from zipp_assets.reddit.derived import build_user_subreddit_edges
from zipp_assets.reddit.ingest import ingest_month
from zipp_assets.reddit.synthetic import MARKER, mark_synthetic_world
from zipp_assets.settings import load_settings
from zipp_assets_tests.conftest import write_dump

KEY = b"test-key"


@pytest.fixture
def graph_lake(tiny_lake, tmp_path):
    copy = tmp_path / "lake"
    shutil.copytree(tiny_lake, copy)
    return copy


def test_tables_are_indexed_pseudonymous_and_consistent(graph_lake, tiny_world):
    report = build_graph_tables(graph_lake, KEY)
    users = lake.read_table(graph_lake, "users")
    subreddits = lake.read_table(graph_lake, "subreddits")
    edges = lake.read_table(graph_lake, "graph_edges")
    assert report.users == users.num_rows > 50 and report.edges == edges.num_rows
    assert users["user_index"].to_pylist() == list(range(users.num_rows))
    assert subreddits["subreddit_index"].to_pylist() == list(range(subreddits.num_rows))
    assert pc.max(edges["user_index"]).as_py() < users.num_rows and pc.max(edges["subreddit_index"]).as_py() < subreddits.num_rows
    # No username or user key downstream of ingestion.
    names = set(pq.read_table(tiny_world / "truth" / "users.parquet")["author"].to_pylist())
    fullnames = set(pq.read_table(tiny_world / "truth" / "users.parquet")["author_fullname"].to_pylist())
    for table in (users, edges):
        assert not {"user_key", "author", "author_fullname"} & set(table.column_names)
    assert not (set(users["user_id"].to_pylist()) & (names | fullnames))
    assert all(u.startswith("u_") and len(u) == 22 for u in users["user_id"].to_pylist())
    # Bots and AutoModerator never reach the graph (their pseudonyms are absent).
    bots = pseudonymize(["AutoModerator", "RemindMeBot"], KEY)
    assert not set(bots) & set(users["user_id"].to_pylist())
    # Activity times only to the month: the first day of the month, midnight UTC, spanning the world's months.
    for column in ("first_utc", "last_utc"):
        times = users[column].to_pylist()
        assert all(t.day == 1 and (t.hour, t.minute, t.second, t.microsecond) == (0, 0, 0, 0) for t in times)
        assert all(t.utcoffset().total_seconds() == 0 for t in times)
    assert {t.strftime("%Y-%m") for t in users["first_utc"].to_pylist() + users["last_utc"].to_pylist()} == {"2017-12", "2018-01"}
    assert all(r["first_utc"] <= r["last_utc"] for r in users.to_pylist())
    # Degrees in the users table agree with the edges.
    degree = {r["user_index"]: r["subreddit_count"] for r in users.to_pylist()}
    counted: dict[int, int] = {}
    for u in edges["user_index"].to_pylist():
        counted[u] = counted.get(u, 0) + 1
    assert counted == degree


def test_held_out_split_is_deterministic_and_keeps_a_training_edge(graph_lake):
    config = GraphConfig(val_fraction=0.2, test_fraction=0.2)
    build_graph_tables(graph_lake, KEY, config)
    first = lake.read_table(graph_lake, "graph_edges").to_pylist()
    build_graph_tables(graph_lake, KEY, config)
    assert lake.read_table(graph_lake, "graph_edges").to_pylist() == first
    by_user: dict[int, list[str]] = {}
    for e in first:
        by_user.setdefault(e["user_index"], []).append(e["split"])
    assert all("train" in splits for splits in by_user.values())
    assert all(set(s) == {"train"} for s in by_user.values() if len(s) < config.min_edges_for_holdout)
    held = sum(s != "train" for splits in by_user.values() for s in splits)
    eligible = sum(len(s) for s in by_user.values() if len(s) >= config.min_edges_for_holdout)
    assert 0.2 * eligible < held < 0.6 * eligible
    assert {"val", "test"} <= {s for splits in by_user.values() for s in splits}


def test_a_build_in_buckets_of_users_writes_the_same_tables_as_one_bucket(graph_lake):
    whole = build_graph_tables(graph_lake, KEY)
    tables = {name: lake.read_table(graph_lake, name).to_pylist() for name in ("users", "subreddits", "graph_edges")}
    in_buckets = build_graph_tables(graph_lake, KEY, GraphConfig(rows_per_bucket=40))
    assert whole.buckets == 1 and in_buckets.buckets > 10  # several buckets, each with few users
    assert whole.aliased_keys > 0  # author-keyed months merged onto fullnames, across buckets too
    for name, rows in tables.items():
        assert lake.read_table(graph_lake, name).to_pylist() == rows, name
    assert (in_buckets.split_counts, in_buckets.edges, in_buckets.users, in_buckets.users_dropped) == (
        whole.split_counts, whole.edges, whole.users, whole.users_dropped)
    assert {"pairs", "filters", "edges", "users"} <= set(in_buckets.step_seconds)
    with pytest.raises(ValueError, match="rows_per_bucket"):
        GraphConfig(rows_per_bucket=0)


def test_a_graph_build_keeps_its_scratch_in_locked_folders_under_the_scratch_dir(graph_lake, tmp_path, monkeypatch):
    """The buckets' Parquet and DuckDB's spill go to ZIPP_SCRATCH_DIR in folders the build locks (so a
    killed build's are swept by the next writer), and are gone when the build ends."""
    from zipp_assets import staging

    monkeypatch.setenv("ZIPP_SCRATCH_DIR", str(tmp_path / "scratch"))
    used = []
    enter = staging.Scratch.__enter__

    def record(scratch):
        used.append(scratch.folder)
        assert (scratch.folder / ".lock").is_file()
        return enter(scratch)

    monkeypatch.setattr(staging.Scratch, "__enter__", record)
    build_graph_tables(graph_lake, KEY, GraphConfig(rows_per_bucket=40))
    assert len(used) >= 2 and all(folder.parent == tmp_path / "scratch" for folder in used)
    assert not any(folder.exists() for folder in used)


def test_split_of_a_link_survives_adding_a_month(tiny_world, tmp_path):
    # A backfill: 2018-01 (keyed by author_fullname) first, then the older 2017-12 (keyed by author),
    # whose users are mapped onto their fullnames, so pseudonyms and splits stay put.
    raw = tiny_world / "raw" / "reddit"
    lake_dir = tmp_path / "lake"
    for kind in ("comments", "submissions"):
        ingest_month(lake_dir, raw, kind, "2018-01")
    build_user_subreddit_edges(lake_dir, "2018-01")

    def keyed():
        build_graph_tables(lake_dir, KEY, GraphConfig(min_subreddit_users=1, min_user_interactions=1))
        users = dict(zip(*[lake.read_table(lake_dir, "users")[c].to_pylist() for c in ("user_index", "user_id")]))
        subs = dict(zip(*[lake.read_table(lake_dir, "subreddits")[c].to_pylist() for c in ("subreddit_index", "subreddit")]))
        return {(users[e["user_index"]], subs[e["subreddit_index"]]): e["split"] for e in lake.read_table(lake_dir, "graph_edges").to_pylist()}

    before = keyed()
    for kind in ("comments", "submissions"):
        ingest_month(lake_dir, raw, kind, "2017-12")
    build_user_subreddit_edges(lake_dir, "2017-12")
    after = keyed()
    shared = before.keys() & after.keys()
    same = sum(before[k] == after[k] for k in shared)
    assert len(shared) > 100 and same / len(shared) > 0.95


@pytest.mark.parametrize("rows_per_bucket", [16_000_000, 2])
def test_filters_drop_light_and_nsfw_only_users(tmp_path, rows_per_bucket):
    raw, lake_dir = tmp_path / "raw", tmp_path / "lake"
    t = 1546300800
    comments, posts = [], []
    for i, author in enumerate(["heavy"] * 5 + ["light"] + ["nsfw"] * 4 + ["other1", "other2", "other3"] * 2):
        comments.append(json.dumps({"id": f"c{i}", "author": author, "subreddit": "pics", "created_utc": t + i}).encode())
    posts.append(json.dumps({"id": "p1", "author": "nsfw", "subreddit": "pics", "created_utc": t, "title": "x", "over_18": True}).encode())
    posts.append(json.dumps({"id": "p2", "author": "heavy", "subreddit": "pics", "created_utc": t, "title": "y", "over_18": True}).encode())
    posts.append(json.dumps({"id": "p3", "author": "heavy", "subreddit": "pics", "created_utc": t, "title": "z", "over_18": False}).encode())
    write_dump(raw / "RC_2019-01.zst", comments)
    write_dump(raw / "RS_2019-01.zst", posts)
    for kind in ("comments", "submissions"):
        ingest_month(lake_dir, raw, kind, "2019-01")
    build_user_subreddit_edges(lake_dir, "2019-01")
    report = build_graph_tables(lake_dir, KEY, GraphConfig(min_user_interactions=2, min_subreddit_users=2,
                                                           rows_per_bucket=rows_per_bucket))
    kept = set(lake.read_table(lake_dir, "users")["user_id"].to_pylist())
    assert kept == set(pseudonymize(["heavy", "other1", "other2", "other3"], KEY))
    assert report.users_dropped == 2


def test_bad_configuration_and_missing_inputs(tmp_path):
    with pytest.raises(ValueError):
        GraphConfig(val_fraction=0.6, test_fraction=0.5)
    with pytest.raises(ValueError):
        GraphConfig(min_edges_for_holdout=1)
    with pytest.raises(FileNotFoundError, match="reddit_user_subreddit_edges"):
        build_graph_tables(tmp_path, KEY)


def test_pseudonym_key_is_required_in_production(tmp_path):
    settings = load_settings({"ZIPP_PROFILE": "production", "ZIPP_DATA_DIR": str(tmp_path)})
    with pytest.raises(RuntimeError, match="ZIPP_PSEUDONYM_KEY"):
        pseudonym_key(settings, {})
    with pytest.raises(RuntimeError, match="not the public demo key"):
        pseudonym_key(settings, {"ZIPP_PSEUDONYM_KEY": DEMO_KEY})
    assert pseudonymize(["a"], b"k1") != pseudonymize(["a"], b"k2")


@pytest.mark.parametrize("secret, reason", [
    ("s3cret", "encodes 4 bytes, fewer than 32"),
    ("correct horse battery staple, a long passphrase", "neither hex nor base64"),
    ("ab" * 31, "encodes 31 bytes"),  # 62 hex digits: one byte short
    (base64.b64encode(bytes(range(31))).decode(), "encodes 31 bytes"),
    ("00" * 32, "only 1 distinct values: not random"),
    (("0123456789abcdef" * 4), "only 8 distinct values"),
])
def test_production_refuses_a_pseudonym_key_of_fewer_than_32_random_bytes(tmp_path, secret, reason):
    settings = load_settings({"ZIPP_PROFILE": "production", "ZIPP_DATA_DIR": str(tmp_path)})
    with pytest.raises(RuntimeError, match=f"refused in the production profile: .*{reason}.*secrets.token_hex"):
        pseudonym_key(settings, {"ZIPP_PSEUDONYM_KEY": secret})


def test_a_key_of_32_random_bytes_is_used_as_the_bytes_its_hex_or_base64_encodes(tmp_path):
    key = secrets.token_bytes(32)
    for profile in ("production", "demo"):
        settings = load_settings({"ZIPP_PROFILE": profile, "ZIPP_DATA_DIR": str(tmp_path)})
        for text in (key.hex(), key.hex().upper(), base64.b64encode(key).decode(),
                     base64.urlsafe_b64encode(key).decode().rstrip("="), f"  {key.hex()}\n"):
            assert pseudonym_key(settings, {"ZIPP_PSEUDONYM_KEY": text}) == key
    # The demo profile still takes a short test key, as text; production never does.
    demo = load_settings({"ZIPP_DATA_DIR": str(tmp_path)})
    assert pseudonym_key(demo, {"ZIPP_PSEUDONYM_KEY": "s3cret"}) == b"s3cret"


def _world_copy(tiny_world, data_dir):
    shutil.copytree(tiny_world / "raw" / "reddit", data_dir / "raw" / "reddit")
    return load_settings({"ZIPP_DATA_DIR": str(data_dir)})  # the demo profile


def test_the_public_demo_key_is_accepted_only_on_a_marked_synthetic_world(tiny_world, tmp_path):
    settings = _world_copy(tiny_world, tmp_path)
    reddit = settings.reddit_raw_dir
    with pytest.raises(RuntimeError, match="only for a synthetic world.*no SYNTHETIC_WORLD.json"):
        pseudonym_key(settings, {})  # unmarked dumps, even in the demo profile
    mark_synthetic_world(reddit, generator="test")
    with pytest.warns(UserWarning, match="public demo"):
        assert pseudonym_key(settings, {}) == DEMO_KEY.encode()
    assert pseudonym_key(settings, {"ZIPP_PSEUDONYM_KEY": "s3cret"}) == b"s3cret"
    with pytest.warns(UserWarning, match="public demo"):
        assert pseudonym_key(settings, {"ZIPP_PSEUDONYM_KEY": DEMO_KEY}) == DEMO_KEY.encode()


@pytest.mark.parametrize("change", ["real month added", "dump changed", "dump in a subfolder", "marker of another world"])
def test_the_public_demo_key_is_refused_when_any_dump_is_not_the_synthetic_one(tiny_world, tmp_path, change):
    settings = _world_copy(tiny_world, tmp_path)
    reddit = settings.reddit_raw_dir
    mark_synthetic_world(reddit, generator="test")
    if change == "real month added":
        write_dump(reddit / "RC_2018-02.zst", [b'{"id": "x", "author": "someone_real"}'])
        reason = "RC_2018-02.zst is not listed"
    elif change == "dump changed":
        original = (reddit / "RS_2018-01.zst").read_bytes()
        (reddit / "RS_2018-01.zst").write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # same size
        reason = "RS_2018-01.zst differs"
    elif change == "dump in a subfolder":
        write_dump(reddit / "comments" / "RC_2016-01.zst", [b"{}"])
        reason = "comments/RC_2016-01.zst is not listed"
    else:
        other = tmp_path / "other"
        write_dump(other / "RC_2017-12.zst", [b"{}"])
        mark_synthetic_world(other, generator="test")
        (reddit / MARKER).write_bytes((other / MARKER).read_bytes())
        reason = "RC_2017-12.zst differs"
    with pytest.raises(RuntimeError, match=reason):
        pseudonym_key(settings, {})
    with pytest.raises(RuntimeError, match=reason):
        pseudonym_key(settings, {"ZIPP_PSEUDONYM_KEY": DEMO_KEY})  # naming the public key changes nothing


def test_graph_group_materializes_with_metadata_and_check(graph_lake, tiny_world, monkeypatch):
    import dagster as dg

    from zipp_assets.graph.assets import graph_assets
    from zipp_assets.imaging.resources import ImageEncoderResource
    from zipp_assets.resources import ZippLake

    monkeypatch.setenv("ZIPP_PSEUDONYM_KEY", "k")
    data_dir = graph_lake.parent / "data"
    data_dir.mkdir()
    (data_dir / "lake").symlink_to(graph_lake)
    (data_dir / "raw").symlink_to(tiny_world / "raw")
    resources = {"lake": ZippLake(data_dir=str(data_dir)), "image_encoder": ImageEncoderResource()}
    result = dg.materialize(graph_assets, resources=resources, instance=dg.DagsterInstance.ephemeral())
    assert result.success
    assert all(c.passed for c in result.get_asset_check_evaluations())
    metadata = {m.asset_key.to_user_string(): m.metadata for m in
                (e.event_specific_data.materialization for e in result.get_asset_materialization_events())}
    assert metadata["graph_edges"]["rows"].value == sum(metadata["graph_edges"][f"{s}_edges"].value for s in ("train", "val", "test"))
    assert "data:image/png;base64," in metadata["graph_edges"]["degree_plot"].value
    assert metadata["graph_edges"]["user_buckets"].value == 1
    assert {"pairs", "edges", "commit"} <= set(metadata["graph_edges"]["step_seconds"].value)
    embeddings = metadata["image_embeddings"]
    assert embeddings["embedded_now"].value == embeddings["candidates"].value > 50
    assert "offline stand-in, not CLIP" in embeddings["encoder"].value
    assert metadata["user_visual_profiles"]["users"].value > 30


def test_one_person_is_one_user_across_the_author_fullname_boundary(graph_lake, tiny_world):
    """2017-12 keys people by `author`, 2018-01 by `author_fullname`: one person active in both
    months must be one user, with the activity of both months."""
    report = build_graph_tables(graph_lake, KEY, GraphConfig(min_subreddit_users=1, min_user_interactions=1))
    assert report.aliased_keys > 20 and report.ambiguous_keys == 0
    truth = pq.read_table(tiny_world / "truth" / "users.parquet").to_pylist()
    by_name = dict(zip(pseudonymize([t["author"] for t in truth], KEY), truth))
    by_fullname = dict(zip(pseudonymize([t["author_fullname"] for t in truth], KEY), truth))
    users = lake.read_table(graph_lake, "users").to_pylist()
    persons = [(by_name.get(u["user_id"]) or by_fullname.get(u["user_id"]))["author"] for u in users
               if u["user_id"] in by_name or u["user_id"] in by_fullname]
    assert len(persons) == len(set(persons)) > 50
    # A person seen in both months is keyed by the fullname and counted active in two months.
    comments = lake.read_table(graph_lake, "reddit_comments", columns=["author", "author_fullname"]).to_pylist()
    in_december = {c["author"] for c in comments if c["author_fullname"] is None}
    in_january = {c["author"] for c in comments if c["author_fullname"] is not None}
    both = {u["user_id"]: u for u in users if u["user_id"] in by_fullname and by_fullname[u["user_id"]]["author"] in in_december & in_january}
    assert len(both) > 20 and all(u["active_months"] == 2 for u in both.values())
    assert not any(u["user_id"] in by_name and by_name[u["user_id"]]["author"] in in_january for u in users)


def test_an_ingested_month_without_edges_is_an_error_not_a_month_left_out(tiny_world, tmp_path):
    raw, lake_dir = tiny_world / "raw" / "reddit", tmp_path / "lake"
    for month in ("2017-12", "2018-01"):
        for kind in ("comments", "submissions"):
            ingest_month(lake_dir, raw, kind, month)
    build_user_subreddit_edges(lake_dir, "2018-01")
    with pytest.raises(lake.PartitionNotFound, match="2017-12 are ingested but have no reddit_user_subreddit_edges"):
        build_graph_tables(lake_dir, KEY)
    build_user_subreddit_edges(lake_dir, "2017-12")
    assert build_graph_tables(lake_dir, KEY).months == ["2017-12", "2018-01"]
    tables = lake.open_tables(lake_dir, ["users", "subreddits", "graph_edges"])  # one build
    assert len({t.build_id() for t in tables.values()}) == 1
