import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from zipp_assets import lake
from zipp_assets.graph.images import ImageLoader
from zipp_assets.graph.pseudonyms import pseudonymize
from zipp_assets.graph.tables import build_graph_tables
from zipp_assets.graph.visual import FAILURES, PROFILES, build_visual_profiles, embed_images, encoder_slug
from zipp_assets.imaging.encoders import PixelStatsEncoder

KEY = b"test-key"


@pytest.fixture
def visual_lake(tiny_lake, tiny_world, tmp_path):
    copy = tmp_path / "lake"
    shutil.copytree(tiny_lake, copy)
    cache = tmp_path / "images"
    shutil.copytree(tiny_world / "raw" / "images", cache)
    build_graph_tables(copy, KEY)
    return copy, cache


def test_embedding_is_incremental_and_records_failures_once(visual_lake):
    lake_dir, cache = visual_lake
    files = sorted(p for p in cache.rglob("*") if p.is_file())
    files[0].write_bytes(b"corrupted")  # one cached image is broken...
    loader = ImageLoader(cache, [cache])
    first = embed_images(lake_dir, loader, PixelStatsEncoder(), chunk_size=64)
    assert first.embedded + first.failed == first.candidates > 50
    assert first.failed == 1 and first.failure_reasons == {"not an image": 1}
    failures = lake.read_table(lake_dir, FAILURES).to_pylist()
    assert failures[0]["reason"].startswith("not an image")
    second = embed_images(lake_dir, loader, PixelStatsEncoder())
    assert (second.embedded, second.failed, second.known_failures) == (0, 0, 1)  # never retried in a loop
    files[0].write_bytes(files[1].read_bytes())  # ...until it is repaired and a retry is asked for
    third = embed_images(lake_dir, loader, PixelStatsEncoder(), retry_failed=True)
    assert (third.embedded, third.failed) == (1, 0)


def test_a_killed_run_resumes_where_it_stopped(visual_lake):
    lake_dir, cache = visual_lake

    class Dying(PixelStatsEncoder):
        calls = 0

        def encode(self, images):
            Dying.calls += 1
            if Dying.calls == 3:
                raise KeyboardInterrupt("killed")
            return super().encode(images)

    with pytest.raises(KeyboardInterrupt):
        embed_images(lake_dir, ImageLoader(cache, [cache]), Dying(), chunk_size=32)
    resumed = embed_images(lake_dir, ImageLoader(cache, [cache]), PixelStatsEncoder(), chunk_size=32)
    assert resumed.already_embedded == 64
    assert resumed.already_embedded + resumed.embedded == resumed.candidates
    keys = lake.read_table(lake_dir, "image_embeddings", [{"encoder": encoder_slug(PixelStatsEncoder.name)}])["url_key"]
    assert len(keys) == len(set(keys.to_pylist()))


def test_profiles_keep_heldout_images_apart_and_follow_planted_styles(visual_lake, tiny_world):
    lake_dir, cache = visual_lake
    embed_images(lake_dir, ImageLoader(cache, [cache]), PixelStatsEncoder())
    report = build_visual_profiles(lake_dir, PixelStatsEncoder.name, KEY)
    profiles = lake.read_table(lake_dir, PROFILES).to_pylist()
    assert report.users == sum(p["n_train_images"] > 0 for p in profiles) > 30 and report.heldout_images > 0
    users = set(lake.read_table(lake_dir, "users")["user_id"].to_pylist())
    assert {p["user_id"] for p in profiles} <= users
    for p in profiles:
        assert len(p["heldout_url_keys"]) == p["n_heldout_images"]
        assert abs(np.linalg.norm(p["profile"]) - (1 if p["n_train_images"] else 0)) < 1e-4
    # Users of the same planted primary community look more alike than users of different ones.
    truth = pq.read_table(tiny_world / "truth" / "users.parquet").to_pylist()
    community = {pid: t["primary_community"] for t, pid in zip(truth, pseudonymize([t["author_fullname"] for t in truth], KEY))}
    community |= {pid: t["primary_community"] for t, pid in zip(truth, pseudonymize([t["author"] for t in truth], KEY))}
    labelled = [(community[p["user_id"]], np.array(p["profile"])) for p in profiles if p["user_id"] in community]
    labels = np.array([c for c, _ in labelled])
    vectors = np.stack([v for _, v in labelled])
    similarity = vectors @ vectors.T
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~np.eye(len(labels), dtype=bool)
    assert similarity[same & off_diagonal].mean() > similarity[~same].mean() + 0.05
    again = build_visual_profiles(lake_dir, PixelStatsEncoder.name, KEY)
    assert again.heldout_images == report.heldout_images  # the held-out images are stable


def test_profiles_use_only_images_of_training_links(visual_lake):
    """ImageAlign's targets must not reveal held-out links: an image posted in a subreddit whose
    link is held out (validation or test) is never in the profile, only among the held-out images."""
    lake_dir, cache = visual_lake
    embed_images(lake_dir, ImageLoader(cache, [cache]), PixelStatsEncoder())
    build_visual_profiles(lake_dir, PixelStatsEncoder.name, KEY)
    users = dict(zip(*[lake.read_table(lake_dir, "users")[c].to_pylist() for c in ("user_id", "user_index")]))
    subreddits = dict(zip(*[lake.read_table(lake_dir, "subreddits")[c].to_pylist() for c in ("subreddit", "subreddit_index")]))
    split = {(e["user_index"], e["subreddit_index"]): e["split"] for e in lake.read_table(lake_dir, "graph_edges").to_pylist()}
    posts = [p for p in lake.read_table(lake_dir, "reddit_image_posts").to_pylist() if not p["over_18"]]
    ids = dict(zip({p["user_key"] for p in posts}, pseudonymize(list({p["user_key"] for p in posts}), KEY)))
    images_of: dict[int, dict[str, set]] = {}
    for p in posts:
        user = users.get(ids[p["user_key"]])
        if user is not None and p["user_key"].startswith("t2_"):  # fullname-keyed: its pseudonym is the graph's
            images_of.setdefault(user, {}).setdefault(p["url_key"], set()).add(split.get((user, subreddits.get(p["subreddit"]))))
    embedded = lake.read_table(lake_dir, "image_embeddings", [{"encoder": encoder_slug(PixelStatsEncoder.name)}])
    vectors = {r["url_key"]: np.array(r["embedding"]) for r in embedded.to_pylist()}
    checked_heldout_links = 0
    for profile in lake.read_table(lake_dir, PROFILES).to_pylist():
        mine = images_of.get(profile["user_index"], {})
        heldout = set(profile["heldout_url_keys"])
        for url_key, splits in mine.items():
            if splits != {"train"}:
                assert url_key in heldout, (url_key, splits)
                checked_heldout_links += 1
        in_profile = [vectors[k] for k in mine if k not in heldout and k in vectors]
        if in_profile and len(in_profile) == profile["n_train_images"]:
            mean = np.mean(in_profile, axis=0)
            assert np.allclose(profile["profile"], mean / np.linalg.norm(mean), atol=1e-5)
    assert checked_heldout_links > 5


def test_profiles_need_embeddings_first(visual_lake):
    lake_dir, _ = visual_lake
    with pytest.raises(FileNotFoundError, match="no image embeddings"):
        build_visual_profiles(lake_dir, "never-run-encoder", KEY)


def test_profiles_carry_the_graph_build_and_refuse_a_graph_half_rebuilt(visual_lake):
    lake_dir, cache = visual_lake
    embed_images(lake_dir, ImageLoader(cache, [cache]), PixelStatsEncoder())
    build_visual_profiles(lake_dir, PixelStatsEncoder.name, KEY)
    graph_build = lake.open_table(lake_dir, "users").build_id()
    assert lake.open_table(lake_dir, PROFILES).build_id({"encoder": encoder_slug(PixelStatsEncoder.name)}) == graph_build
    # users rewritten alone, as by a graph build killed after its first commit
    lake.write_partition(lake_dir, "users", lake.read_table(lake_dir, "users"))
    with pytest.raises(lake.BuildMismatch, match="users .* subreddits .* graph_edges"):
        build_visual_profiles(lake_dir, PixelStatsEncoder.name, KEY)
