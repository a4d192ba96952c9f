"""The tiny world's graph, what an attacker holding its public dumps knows (read-only for tests), and
a data folder with a persona and evidence per graph user for the privacy assets."""

import shutil

import pytest

from zipp_assets_tests.conftest import TINY_MONTHS

KEY = b"test-key"
SNIPPET = "honestly the night shift at the county hospital ward is wearing me down lately"


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


@pytest.fixture
def persona_data_dir(graph_lake, graph, tiny_world, tmp_path):
    """A data folder: the tiny world's dumps, its graph, and a persona with evidence per graph user."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from zipp_assets import lake
    from zipp_assets.personas.evidence import EVIDENCE, EVIDENCE_SCHEMA
    from zipp_assets.personas.schema import AGE_BANDS, Persona
    from zipp_assets.personas.shards import SHARD_KEYS, shard_of
    from zipp_assets.personas.verbalize import PERSONAS, PERSONAS_SCHEMA

    data_dir = tmp_path / "data"
    shutil.copytree(graph_lake, data_dir / "lake")
    (data_dir / "raw").symlink_to(tiny_world / "raw")
    users = graph["users"]["user_id"].to_pylist()
    personas, evidence = [], []
    for i, user in enumerate(users):
        quote = f"{SNIPPET} number {i}"
        persona = Persona(age_band=AGE_BANDS[i % 4], profession=quote[:80] if i % 10 == 0 else "teacher",
                          summary=quote, hobbies=["cycling"])
        personas.append({"user_index": i, "user_id": user, "shard": shard_of(user), "ok": True,
                         "persona_json": persona.model_dump_json(), "summary": persona.summary})
        evidence.append({"user_index": i, "user_id": user, "shard": shard_of(user),
                         "evidence_text": f'COMMENTS:\n- [r/aww] "{quote}"'})
    for name, rows, schema in ((PERSONAS, personas, PERSONAS_SCHEMA), (EVIDENCE, evidence, EVIDENCE_SCHEMA)):
        table = pa.Table.from_pylist(rows, schema=schema)
        for shard in SHARD_KEYS:
            part = table.filter(pc.equal(table["shard"], shard))
            lake.write_partition(data_dir / "lake", name, part, {"shard": shard})
    return data_dir


def materialize_privacy(data_dir, selection, k: int, **config):
    """The privacy assets of `selection` in one run with the release's k (and any other PrivacyConfig)."""
    import dagster as dg

    from zipp_assets.privacy.assets import privacy_assets
    from zipp_assets.resources import ZippLake

    config = {"min_group_size": k, **config}
    return dg.materialize(
        [a for a in privacy_assets if a.key.path[-1] in selection], resources={"lake": ZippLake(data_dir=str(data_dir))},
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False,
        run_config={"ops": {name: {"config": config} for name in selection}})
