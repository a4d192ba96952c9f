"""The lake on an S3-compatible object store (moto's server on loopback): the ingestion, graph and
encoder assets of the tiny world run with ZIPP_LAKE_URI=s3://... and give what a local lake gives."""

from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import torch

from zipp_assets import lake
from zipp_assets.encoder.assets import encoder_assets
from zipp_assets.graph.assets import graph_assets
from zipp_assets.imaging.resources import ImageEncoderResource
from zipp_assets.reddit.assets import reddit_assets
from zipp_assets.resources import ZippLake
from zipp_assets_tests.conftest import TINY_MONTHS
from zipp_assets_tests.moto_server import BUCKET, moto_s3

SMALL = {"hidden": 16, "heads": 2, "fanouts": [5, 5], "batch_size": 64, "epochs": 2, "patience": 1, "min_epochs": 1,
         "negatives": 4, "seed": 3}
# (table, key columns that order its rows)
TABLES = [("reddit_comments", ["id"]), ("reddit_comments_quarantine", ["file", "line"]), ("reddit_submissions", ["id"]),
          ("reddit_submissions_quarantine", ["file", "line"]), ("reddit_image_posts", ["post_id", "image_index"]),
          ("reddit_user_subreddit_edges", ["user_key", "subreddit", "month"]), ("users", ["user_index"]),
          ("subreddits", ["subreddit_index"]), ("graph_edges", ["user_index", "subreddit_index"]),
          ("image_embeddings", ["url_key"]), ("user_visual_profiles", ["user_index"]),
          ("user_embeddings", ["user_index"]), ("user_top_subreddits", ["user_index", "rank"])]
FLOAT_COLUMNS = {"embedding", "visual_embedding", "weight", "profile"}  # computed by training: compared to a tolerance


@pytest.fixture
def s3_bucket(monkeypatch, tmp_path):
    """A moto S3 server on loopback with one bucket; the AWS_* variables the lake reads point at it."""
    with moto_s3(tmp_path / "moto.log", monkeypatch):
        yield f"s3://{BUCKET}/lake"


def _run_pipeline(data_dir: Path, tiny_world: Path, lake_uri: str = "") -> None:
    (data_dir / "raw").symlink_to(tiny_world / "raw")
    resources = {"lake": ZippLake(data_dir=str(data_dir), lake_uri=lake_uri, quarantine_max_fraction=0.01),
                 "image_encoder": ImageEncoderResource()}
    instance = dg.DagsterInstance.ephemeral()
    for month in TINY_MONTHS:
        assert dg.materialize(reddit_assets, partition_key=month, resources=resources, instance=instance).success
    assert dg.materialize(graph_assets, resources=resources, instance=instance).success
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # training repeats to the bit on one thread
    try:
        assert dg.materialize(encoder_assets, selection=["persona_encoder", "user_embeddings", "user_top_subreddits"],
                              resources=resources, instance=instance,
                              run_config={"ops": {"persona_encoder": {"config": SMALL}}}).success
    finally:
        torch.set_num_threads(threads)


def _rows(root, table: str, keys: list[str]) -> list[dict]:
    data = lake.read_table(root, table)
    return data.sort_by([(k, "ascending") for k in keys]).to_pylist()


@pytest.mark.slow
def test_the_pipeline_on_an_object_store_equals_a_local_run(s3_bucket, tiny_world, tmp_path, monkeypatch):
    monkeypatch.setenv("ZIPP_PSEUDONYM_KEY", "test-key")
    monkeypatch.setenv("ZIPP_SCRATCH_DIR", str(tmp_path / "scratch"))
    local_dir, remote_dir = tmp_path / "local", tmp_path / "remote"
    local_dir.mkdir()
    remote_dir.mkdir()
    _run_pipeline(local_dir, tiny_world)
    _run_pipeline(remote_dir, tiny_world, s3_bucket)

    assert not (remote_dir / "lake").exists()  # nothing of the lake was written locally
    assert {t for t, _ in TABLES} <= set(lake.list_tables(s3_bucket))
    for table, keys in TABLES:
        local, remote = _rows(local_dir / "lake", table, keys), _rows(s3_bucket, table, keys)
        assert len(local) == len(remote) and (local or "quarantine" in table), table
        for a, b in zip(local, remote):
            exact = {k: v for k, v in a.items() if k not in FLOAT_COLUMNS}
            assert exact == {k: v for k, v in b.items() if k not in FLOAT_COLUMNS}, table
            for column in FLOAT_COLUMNS & a.keys():
                assert np.allclose(np.asarray(a[column], np.float64), np.asarray(b[column], np.float64), atol=1e-5), \
                    (table, column)
    # Versions, build ids and time travel work there as here.
    users = lake.open_tables(s3_bucket, ["users", "subreddits", "graph_edges"])["users"]
    assert users.build_id() is not None
    # version 0 is the table's empty creation, version 1 its first month
    assert lake.open_table(s3_bucket, "reddit_comments", 1).read().num_rows < lake.read_table(s3_bucket, "reddit_comments").num_rows
    removed = lake.vacuum(s3_bucket, retention_hours=0, datasets=["reddit_comments"], longest_run_hours=0)
    assert removed == {"reddit_comments": []}  # months are added, never replaced here: nothing unreferenced
    assert lake.read_table(s3_bucket, "reddit_comments").num_rows == len(_rows(local_dir / "lake", "reddit_comments", ["id"]))
