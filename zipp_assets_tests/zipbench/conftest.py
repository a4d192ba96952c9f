"""ZIPBench test fixtures: the LLM tests' fake OpenAI-compatible server on loopback (for the vision-language
judge) and their guard that keeps every socket of this folder's tests on loopback; a benchmark data folder."""

import shutil

import pytest

from zipp_assets_tests.conftest import ENCODER_LAKE_KEY
from zipp_assets_tests.llm.conftest import fake_server, loopback_only  # noqa: F401


@pytest.fixture(scope="session")
def benchmark_data_dir(embedded_lake, tiny_world, tmp_path_factory):
    """A data folder over the tiny world: raw (dumps, images, prompt histories) and a lake holding the
    encoder's outputs and personas for every shard (template backend). Tests copy it before writing."""
    from zipp_assets.llm.template import TemplateLLM
    from zipp_assets.llm.tokens import token_counter
    from zipp_assets.personas.descriptors import pixel_stats_descriptors
    from zipp_assets.personas.evidence import EvidenceConfig, build_evidence
    from zipp_assets.personas.shards import SHARD_KEYS
    from zipp_assets.personas.template_rules import template_persona
    from zipp_assets.personas.verbalize import verbalize_shard

    data = tmp_path_factory.mktemp("benchmark") / "data"
    shutil.copytree(embedded_lake, data / "lake")
    shutil.copytree(tiny_world / "raw", data / "raw", symlinks=True)
    lake_dir = data / "lake"
    build_evidence(lake_dir, ENCODER_LAKE_KEY, SHARD_KEYS, EvidenceConfig(), token_counter("template"),
                   pixel_stats_descriptors, {"encoder": _slug()})
    llm = TemplateLLM(template_persona)
    for shard in SHARD_KEYS:
        verbalize_shard(lake_dir, shard, llm, llm.model, data / "work")
    return data


def _slug():
    from zipp_assets.graph.visual import encoder_slug
    from zipp_assets.imaging.encoders import PixelStatsEncoder

    return encoder_slug(PixelStatsEncoder.name)
