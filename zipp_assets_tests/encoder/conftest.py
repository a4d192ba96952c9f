import shutil

import pytest

from zipp_assets.graph.images import ImageLoader
from zipp_assets.graph.tables import build_graph_tables
from zipp_assets.graph.visual import build_visual_profiles, embed_images
from zipp_assets.imaging.encoders import PixelStatsEncoder

KEY = b"test-key"


@pytest.fixture(scope="session")
def encoder_lake(tiny_lake, tiny_world, tmp_path_factory):
    """The tiny world's graph tables, image embeddings and visual profiles."""
    lake_dir = tmp_path_factory.mktemp("encoder_lake") / "lake"
    shutil.copytree(tiny_lake, lake_dir)
    build_graph_tables(lake_dir, KEY)
    cache = tiny_world / "raw" / "images"
    embed_images(lake_dir, ImageLoader(cache, [cache]), PixelStatsEncoder())
    build_visual_profiles(lake_dir, PixelStatsEncoder.name, KEY)
    return lake_dir


@pytest.fixture(scope="session")
def graph_data(encoder_lake):
    from zipp_assets.encoder.data import load_graph_data

    return load_graph_data(encoder_lake, PixelStatsEncoder.name)
