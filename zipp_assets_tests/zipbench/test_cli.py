"""README's ZIPBench backfill: all shards of one method from the CLI, as a subprocess, into a persistent instance."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from zipp_assets import lake
from zipp_assets.imaging.resources import ImageEncoderResource, ImageGeneratorResource
from zipp_assets.llm.resources import LLMResource
from zipp_assets.personas.shards import SHARD_KEYS
from zipp_assets.resources import ZippLake
from zipp_assets.zipbench.assets import zipbench_assets

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_backfill_every_shard_of_one_method_from_the_cli(benchmark_data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("ZIPP_PSEUDONYM_KEY", "test-key")
    data = tmp_path / "data"
    shutil.copytree(benchmark_data_dir, data, symlinks=True)
    home = data / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    resources = {"lake": ZippLake(data_dir=str(data)), "image_encoder": ImageEncoderResource(), "llm": LLMResource(),
                 "image_generator": ImageGeneratorResource()}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert dg.materialize(zipbench_assets[:2], resources=resources, instance=instance,
                              run_config={"ops": {"zipbench_users": {"config": {"n_users": 20}},
                                                  "zipbench_prompts": {"config": {"prompts_per_user": 2}}}}).success
    env = {**os.environ, "ZIPP_DATA_DIR": str(data), "DAGSTER_HOME": str(home)}
    # README's command: every shard of zipp_0shot, rewrites then images, in one run.
    command = [sys.executable, "-m", "dagster_dg_cli.cli", "launch", "-m", "zipp_assets.definitions",
               "--assets", "zipbench_rewrites,zipbench_images", "--partition-range",
               f"zipp_0shot|{SHARD_KEYS[0]}...zipp_0shot|{SHARD_KEYS[-1]}"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "SupersessionWarning" not in done.stdout + done.stderr  # dg launch, not the superseded command
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for key in ("zipbench_rewrites", "zipbench_images"):
            assert instance.get_materialized_partitions(dg.AssetKey(key)) == {f"zipp_0shot|{s}" for s in SHARD_KEYS}
    manifest = lake.read_table(data / "lake", "zipbench_images").to_pylist()
    assert len(manifest) == 20 * 2 and {m["method"] for m in manifest} == {"zipp_0shot"}
    images = sorted((data / "zipbench" / "images" / "zipp_0shot").rglob("*.png"))
    assert len(images) == 40
    # One partition again, as README shows: finished images are kept, not regenerated.
    stamps = {p: p.stat().st_mtime_ns for p in images}
    shard = manifest[0]["shard"]
    single = [*command[:-2], "--partition", f"zipp_0shot|{shard}"]
    again = subprocess.run(single, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in images} == stamps
