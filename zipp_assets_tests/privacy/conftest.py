"""The tiny world's graph, and what an attacker holding its public dumps knows (read-only for tests)."""

import shutil

import pytest

from zipp_assets_tests.conftest import TINY_MONTHS

KEY = b"test-key"


@pytest.fixture(scope="session")
def graph_lake(tiny_lake, tmp_path_factory):
    from zipp_assets.graph.tables import build_graph_tables

    lake_dir = tmp_path_factory.mktemp("privacy_lake") / "lake"
    shutil.copytree(tiny_lake, lake_dir)
    build_graph_tables(lake_dir, KEY)
    return lake_dir


@pytest.fixture(scope="session")
def graph(graph_lake):
    from zipp_assets import lake

    return {name: lake.read_table(graph_lake, name) for name in ("users", "subreddits", "graph_edges")}


@pytest.fixture(scope="session")
def knowledge(tiny_world):
    from zipp_assets.privacy.linkage import read_dump_knowledge

    return read_dump_knowledge(tiny_world / "raw" / "reddit", TINY_MONTHS)
