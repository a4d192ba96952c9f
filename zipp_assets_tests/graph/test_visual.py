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
    folder = lake.partition_dir(lake_dir, "image_embeddings", {"encoder": encoder_slug(PixelStatsEncoder.name)})
    keys = pq.read_table(folder)["url_key"].to_pylist()
    assert len(keys) == len(set(keys))


def test_profiles_keep_heldout_images_apart_and_follow_planted_styles(visual_lake, tiny_world):
    lake_dir, cache = visual_lake
    embed_images(lake_dir, ImageLoader(cache, [cache]), PixelStatsEncoder())
    report = build_visual_profiles(lake_dir, PixelStatsEncoder.name, KEY)
    profiles = lake.read_table(lake_dir, PROFILES).to_pylist()
    assert report.users == len(profiles) > 30 and report.heldout_images > 0
    users = set(lake.read_table(lake_dir, "users")["user_id"].to_pylist())
    assert {p["user_id"] for p in profiles} <= users
    for p in profiles:
        assert p["n_train_images"] >= 1 and len(p["heldout_url_keys"]) == p["n_heldout_images"]
        assert abs(np.linalg.norm(p["profile"]) - 1) < 1e-4
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


def test_profiles_need_embeddings_first(visual_lake):
    lake_dir, _ = visual_lake
    with pytest.raises(FileNotFoundError, match="no image embeddings"):
        build_visual_profiles(lake_dir, "never-run-encoder", KEY)
