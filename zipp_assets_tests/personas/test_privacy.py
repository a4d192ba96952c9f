"""No username leaves ingestion: every string in every table downstream of it, and in the metadata
of the runs that write personas, is scanned for the usernames and account ids the dumps held."""

import re
import shutil

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from zipp_assets.imaging.resources import ImageEncoderResource
from zipp_assets.llm.resources import LLMResource
from zipp_assets.personas.assets import persona_assets
from zipp_assets.personas.shards import SHARD_KEYS
from zipp_assets.resources import ZippLake

# Usernames live in these tables, by design; everything else in the lake is downstream of them.
INGESTION_TABLES = {"reddit_comments", "reddit_comments_quarantine", "reddit_submissions",
                    "reddit_submissions_quarantine", "reddit_image_posts", "reddit_user_subreddit_edges"}
NOT_NAMES = {"[deleted]", "[removed]"}
WORD = re.compile(r"[A-Za-z0-9_-]{3,}")  # the characters a Reddit username may hold


def _strings(array) -> list[str]:
    """Every string in an Arrow array, looking inside lists, structs and dictionaries."""
    if isinstance(array, pa.ChunkedArray):
        return [s for chunk in array.chunks for s in _strings(chunk)]
    kind = array.type
    if pa.types.is_dictionary(kind):
        return _strings(array.dictionary)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return [s for s in array.to_pylist() if s is not None]
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return _strings(array.flatten())
    if pa.types.is_struct(kind):
        return [s for i in range(kind.num_fields) for s in _strings(array.field(i))]
    return []


def _tables(lake_dir) -> dict[str, list]:
    """Every Parquet file of every table, by table (older versions' files too: stricter)."""
    tables: dict[str, list] = {}
    for path in sorted(lake_dir.rglob("*.parquet")):
        parts = path.relative_to(lake_dir).parts
        if not any(p.startswith(("_delta_log", ".")) for p in parts):
            tables.setdefault(parts[0], []).append(path)
    return tables


def _leaks(texts, names: set[str]) -> set[str]:
    found = set()
    for text in texts:
        if text in names:
            found.add(text)
        found |= {w for w in WORD.findall(text) if w in names}
    return found


def test_no_username_downstream_of_ingestion(embedded_lake, tiny_world, tmp_path, monkeypatch):
    monkeypatch.setenv("ZIPP_PSEUDONYM_KEY", "test-key")  # the key the lake was built with
    data_dir = tmp_path / "data"
    shutil.copytree(embedded_lake, data_dir / "lake")
    (data_dir / "truth").symlink_to(tiny_world / "truth")
    resources = {"lake": ZippLake(data_dir=str(data_dir)), "image_encoder": ImageEncoderResource(), "llm": LLMResource()}
    evidence, personas, fidelity, _drift = persona_assets
    instance = dg.DagsterInstance.ephemeral()
    runs = [
        dg.materialize([evidence, personas], resources=resources, instance=instance,
                       tags={ASSET_PARTITION_RANGE_START_TAG: SHARD_KEYS[0], ASSET_PARTITION_RANGE_END_TAG: SHARD_KEYS[-1]}),
        dg.materialize([fidelity], resources=resources, instance=instance),
    ]
    assert all(run.success for run in runs)

    tables = _tables(data_dir / "lake")
    names = set()
    for table in INGESTION_TABLES & {"reddit_comments", "reddit_submissions"}:
        for path in tables[table]:
            for column in ("author", "author_fullname", "user_key"):
                names |= set(_strings(pq.read_table(path, columns=[column])[column]))
    names -= NOT_NAMES
    assert len(names) > 100

    downstream = sorted(set(tables) - INGESTION_TABLES)
    assert {"users", "graph_edges", "user_visual_profiles", "persona_evidence", "personas"} <= set(downstream)
    scanned, leaks = 0, {}
    for table in downstream:
        for path in tables[table]:
            data = pq.read_table(path)
            for column in data.column_names:
                texts = _strings(data[column])
                scanned += len(texts)
                found = _leaks(texts, names)
                if found:
                    leaks[f"{table}.{column}"] = sorted(found)[:5]
    assert scanned > 1000
    assert not leaks, leaks

    metadata_texts = [str(value.value) for run in runs for event in run.get_asset_materialization_events()
                      for value in event.event_specific_data.materialization.metadata.values()]
    assert not _leaks(metadata_texts, names)
