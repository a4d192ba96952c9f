"""A small synthetic world through the pipeline's own code, offline (no Dagster): the shared first half
of the benches that measure something on a world with planted truth (`phrasebook_fidelity.py`,
`encoder_sweep.py`).

`build_world_lake` generates the world and runs ingest, image posts, user-subreddit edges, graph tables,
PixelStats image embeddings and visual profiles, the same functions the assets call, into `root`.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("DGLBACKEND", "pytorch")


def build_world_lake(config, root: Path, key: bytes) -> Path:
    """Generate `config`'s world under root/raw and root/truth and build its lake under root/lake
    (ingest, graph tables with `key` for pseudonyms and the held-out split, PixelStats embeddings and
    visual profiles). Returns the lake folder."""
    from zipp_assets.graph.images import ImageLoader
    from zipp_assets.graph.tables import build_graph_tables
    from zipp_assets.graph.visual import build_visual_profiles, embed_images
    from zipp_assets.imaging.encoders import PixelStatsEncoder
    from zipp_assets.reddit.derived import build_image_posts, build_user_subreddit_edges
    from zipp_assets.reddit.ingest import ingest_month
    from zipp_assets.simworld.world import generate_world

    root = Path(root)
    generate_world(config, root / "raw", root / "truth")
    lake_dir = root / "lake"
    for month in config.months:
        for kind in ("comments", "submissions"):
            ingest_month(lake_dir, root / "raw" / "reddit", kind, month)
        build_image_posts(lake_dir, month)
        build_user_subreddit_edges(lake_dir, month)
    build_graph_tables(lake_dir, key)
    cache = root / "raw" / "images"
    embed_images(lake_dir, ImageLoader(cache, [cache]), PixelStatsEncoder())
    build_visual_profiles(lake_dir, PixelStatsEncoder.name, key)
    return lake_dir


def image_embeddings(lake_dir: Path, encoder_name: str) -> dict:
    """url_key -> embedding of every embedded image, as `encoder_evaluation` reads them."""
    import numpy as np

    from zipp_assets.graph.visual import embeddings_of

    table = embeddings_of(lake_dir, encoder_name).to_table(columns=["url_key", "embedding"])
    if table.num_rows == 0:
        return {}
    return dict(zip(table["url_key"].to_pylist(), np.stack(table["embedding"].to_numpy(zero_copy_only=False))))
