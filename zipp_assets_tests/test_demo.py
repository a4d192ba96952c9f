"""The demo's world: generated in the phrasebook asked for, and regenerated when a different one is asked."""

import json

import pytest

from zipp_assets import demo
from zipp_assets.settings import load_settings
from zipp_assets.simworld.world import WORLD_VERSION


def test_the_world_speaks_the_phrasebook_asked_for_and_a_new_one_regenerates_it(tmp_path, monkeypatch):
    monkeypatch.setenv("ZIPP_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("ZIPP_LAKE_URI", raising=False)
    generated = []
    real_generate = demo.generate_world
    monkeypatch.setattr(demo, "generate_world", lambda config, *a, **k: (generated.append(config.phrasebook),
                                                                         real_generate(config, *a, **k))[1])
    world = demo.ensure_world(("2019-01",), 30, 1, "trade_notes")
    assert world == {"months": ["2019-01"], "users": 30, "seed": 1, "world_version": WORLD_VERSION,
                     "phrasebook": "trade_notes"}
    stamp = load_settings().raw_dir / "simworld.json"
    assert json.loads(stamp.read_text())["phrasebook"] == "trade_notes"
    demo.ensure_world(("2019-01",), 30, 1, "trade_notes")  # the same world: kept
    demo.ensure_world(("2019-01",), 30, 1, "british_chat")  # other words: generated again
    assert generated == ["trade_notes", "british_chat"]


def test_an_unknown_phrasebook_is_refused_before_anything_runs(capsys):
    with pytest.raises(SystemExit):
        demo.main(["--phrasebook", "klingon", "--users", "10"])
    assert "invalid choice: 'klingon'" in capsys.readouterr().err


def test_a_skipped_asset_is_left_out_of_its_group_only_and_the_selection_resolves():
    import dagster as dg

    from zipp_assets.definitions import defs

    assert demo.group_selection("graph", ["encoder_evaluation"]) == "group:graph"
    selection = demo.group_selection("encoder", ["encoder_evaluation"])
    assert selection == "group:encoder and not key:encoder_evaluation"
    keys = {k.to_user_string() for k in dg.AssetSelection.from_string(selection).resolve(defs.resolve_asset_graph())}
    everything = {k.to_user_string() for k in dg.AssetSelection.from_string("group:encoder").resolve(defs.resolve_asset_graph())}
    assert everything - keys == {"encoder_evaluation"} and "persona_encoder" in keys


def test_only_assets_nothing_downstream_reads_may_be_skipped():
    from zipp_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    for key in demo.SKIPPABLE:
        assert not graph.get(dg_key(key)).child_keys, key  # nothing in the pipeline reads it


def dg_key(name):
    import dagster as dg

    return dg.AssetKey(name)
