"""Shared fixtures: tiny synthetic worlds generated once per session, and dump-writing helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import zstandard

os.environ.setdefault("DGLBACKEND", "pytorch")

from zipp_assets.simworld.world import DumpWriter, WorldConfig, generate_world  # noqa: E402

TINY_MONTHS = ("2017-12", "2018-01")


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """A small world over two months on both sides of author_fullname's introduction."""
    root = tmp_path_factory.mktemp("tiny_world")
    config = WorldConfig(users=150, months=TINY_MONTHS, seed=7, malformed_rate=0.002, comments_per_user_month=5)
    generate_world(config, root / "raw", root / "truth")
    return root


def write_dump(path: Path, lines: list[bytes], frames: int = 1) -> Path:
    """Write NDJSON lines as a dump: one streamed frame with the 2 GiB window like the real files,
    or several independent frames."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if frames == 1:
        with DumpWriter(path) as writer:
            for line in lines:
                writer.write_line(line)
    else:
        compressor = zstandard.ZstdCompressor()
        step = max(1, len(lines) // frames)
        chunks = [b"".join(line + b"\n" for line in lines[i : i + step]) for i in range(0, len(lines), step)]
        path.write_bytes(b"".join(compressor.compress(chunk) for chunk in chunks))
    return path


@pytest.fixture(scope="session")
def tiny_lake(tiny_world, tmp_path_factory) -> Path:
    """The tiny world's months ingested, with image posts and monthly edges (read-only for tests)."""
    from zipp_assets.reddit.derived import build_image_posts, build_user_subreddit_edges
    from zipp_assets.reddit.ingest import ingest_month

    lake_dir = tmp_path_factory.mktemp("tiny_lake")
    for month in TINY_MONTHS:
        for kind in ("comments", "submissions"):
            ingest_month(lake_dir, tiny_world / "raw" / "reddit", kind, month)
        build_image_posts(lake_dir, month)
        build_user_subreddit_edges(lake_dir, month)
    return lake_dir


ENCODER_LAKE_KEY = b"test-key"


@pytest.fixture(scope="session")
def encoder_lake(tiny_lake, tiny_world, tmp_path_factory):
    """The tiny world's graph tables, image embeddings and visual profiles (encoder and personas tests)."""
    import shutil

    from zipp_assets.graph.images import ImageLoader
    from zipp_assets.graph.tables import build_graph_tables
    from zipp_assets.graph.visual import build_visual_profiles, embed_images
    from zipp_assets.imaging.encoders import PixelStatsEncoder

    lake_dir = tmp_path_factory.mktemp("encoder_lake") / "lake"
    shutil.copytree(tiny_lake, lake_dir)
    build_graph_tables(lake_dir, ENCODER_LAKE_KEY)
    cache = tiny_world / "raw" / "images"
    embed_images(lake_dir, ImageLoader(cache, [cache]), PixelStatsEncoder())
    build_visual_profiles(lake_dir, PixelStatsEncoder.name, ENCODER_LAKE_KEY)
    return lake_dir


@pytest.fixture(scope="session")
def graph_data(encoder_lake):
    from zipp_assets.encoder.data import load_graph_data
    from zipp_assets.imaging.encoders import PixelStatsEncoder

    return load_graph_data(encoder_lake, PixelStatsEncoder.name)


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory) -> Path:
    """A tiny random StableDiffusionPipeline saved as a local folder (read-only for tests)."""
    from zipp_assets_tests.imaging.tiny_sd import save_tiny_sd

    return save_tiny_sd(tmp_path_factory.mktemp("tiny_sd"))


@pytest.fixture(scope="session")
def embedded_lake(encoder_lake, graph_data, tmp_path_factory):
    """The encoder lake plus user embeddings and attention from a one-epoch model (personas, ZIPBench)."""
    import dataclasses
    import shutil

    from zipp_assets.encoder.inference import embed_users_to_lake
    from zipp_assets.encoder.train import TrainConfig, train

    lake_dir = tmp_path_factory.mktemp("persona_lake") / "lake"
    shutil.copytree(encoder_lake, lake_dir)
    config = TrainConfig(hidden=16, heads=2, fanouts=(5, 5), batch_size=256, epochs=1, negatives=4, max_batches_per_epoch=2)
    model = train(graph_data, dataclasses.replace(config, min_epochs=1)).model
    embed_users_to_lake(model, graph_data.message_graph(), graph_data, lake_dir, top_k=5)
    return lake_dir
