"""The docs' result pages come from a run's lake and name the run; a lake that lacks a table says which."""

import json
from datetime import datetime, timezone

import pyarrow as pa
import pytest

from zipp_assets import lake
from zipp_assets.personas.fidelity import fidelity_table
from zipp_assets.results import main, read_run_record, write_results, write_run_record

WORLD = {"months": ["2019-01"], "users": 40, "seed": 3, "world_version": 9}


def _evaluation_rows():
    def row(model, acc):
        return {"model": model, "posting_accuracy": acc, "posting_accuracy_low": acc - 0.02,
                "posting_accuracy_high": acc + 0.02, "recall_at_10": 0.5, "recall_at_10_low": 0.45,
                "recall_at_10_high": 0.55, "mrr": float("nan"), "mrr_low": float("nan"), "mrr_high": float("nan")}
    other = row("popularity | `x`", 0.61)
    other.update({"ours_minus_this_posting_accuracy": 0.2, "ours_minus_this_posting_accuracy_low": 0.18,
                  "ours_minus_this_posting_accuracy_high": 0.22, "ours_vs_this_posting_accuracy": "ahead"})
    ours = row("ours", 0.812)
    # as read back from the lake: a column only some rows have is None in the others
    ours.update({"attention_precision@3": 0.8, "attention_precision@3_low": 0.78, "attention_precision@3_high": 0.82,
                 "chance_precision@3": 0.709})
    return [ours, other]


def _columns(rows):  # as encoder_evaluation writes them: every column any row has
    names = sorted({k for r in rows for k in r})
    return pa.table({c: [r.get(c) for r in rows] for c in names})


def _fill_lake(root):
    truth = {f"u{i}": {"age_band": "25-34", "gender": "woman", "locale": "UK", "profession": "nurse",
                       "hobby": "knitting", "visual_interest": "film", "palette_word": "warm", "mood_word": "calm"}
             for i in range(12)}
    personas = {u: {"age_band": "25-34", "gender": "woman", "locale": "UK", "profession": "nurse",
                    "hobbies": ["knitting"], "visual_interests": ["film"],
                    "aesthetics": {"palette": ["warm"], "mood": ["calm"]}} for u in truth}
    controls = {u: {"age_band": "unknown", "gender": "unknown", "locale": "unknown", "profession": "unknown",
                    "hobbies": [], "visual_interests": [], "aesthetics": {}} for u in truth}
    lake.write_partition(root, "persona_fidelity", pa.Table.from_pylist(fidelity_table(personas, controls, truth)))
    lake.write_partition(root, "encoder_evaluation", _columns(_evaluation_rows()))
    lake.write_partition(root, "zipbench_summary", pa.Table.from_pylist(
        [{"method": "generic", "group": "all users", "CLIPScore (ref)": "48.13 [47.46, 48.65]", "minus generic": "–",
          "verdict vs generic": "–"},
         {"method": "zipp_0shot", "group": "all users", "CLIPScore (ref)": "47.2 [46.1, 48.3]",
          "minus generic": "-0.93 [-2.10, 0.20]", "verdict vs generic": "tied"}]))


def test_pages_carry_the_tables_and_name_the_run(tmp_path):
    root = tmp_path / "lake"
    _fill_lake(root)
    started = datetime(2026, 12, 6, 20, 0, tzinfo=timezone.utc)
    write_run_record(tmp_path, WORLD, started, "python -m zipp_assets.demo --users 40")
    record = read_run_record(tmp_path)
    assert record["world"] == WORLD and record["commit"]
    pages = {p.name: p.read_text() for p in write_results(tmp_path / "out", tmp_path, root)}
    assert set(pages) == {"encoder-evaluation.md", "persona-fidelity.md", "zipbench.md"}
    for text in pages.values():
        assert f"commit `{record['commit']}`" in text and "seed 3" in text and "world_version 9" in text
        assert "version 1" in text  # the Delta version each page was read from (0 is the empty creation)
    encoder = pages["encoder-evaluation.md"]
    assert "0.812 [0.792, 0.832]" in encoder and "(ahead)" in encoder and "0.800 [0.780, 0.820] (0.709)" in encoder
    assert "popularity \\| 'x'" in encoder  # stored text cannot break the table or open code spans
    fidelity = pages["persona-fidelity.md"]
    assert "| gender | 1.000 [1.000, 1.000] | 0.000 [0.000, 0.000] |" in fidelity and "informative" in fidelity
    assert "| zipp_0shot | all users | 47.2 [46.1, 48.3] | -0.93 [-2.10, 0.20] | tied |" in pages["zipbench.md"]


def test_a_lake_without_a_run_record_says_so(tmp_path):
    root = tmp_path / "lake"
    _fill_lake(root)
    pages = write_results(tmp_path / "out", tmp_path, root)
    assert all("No run record" in p.read_text() for p in pages)


def test_a_missing_table_or_a_bad_run_record_is_an_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ZIPP_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("ZIPP_LAKE_URI", raising=False)
    lake.write_partition(tmp_path / "lake", "encoder_evaluation", _columns(_evaluation_rows()))
    assert main(["--out", str(tmp_path / "out")]) == 2
    assert "persona_fidelity" in capsys.readouterr().err
    (tmp_path / "run.json").write_text(json.dumps({"commit": "abc"}))
    with pytest.raises(ValueError, match="not a run record"):
        read_run_record(tmp_path)


def test_compare_puts_runs_side_by_side_and_calls_a_finding_only_what_holds_on_all(tmp_path, monkeypatch, capsys):
    started = datetime(2026, 12, 6, 20, 0, tzinfo=timezone.utc)
    dirs = []
    for phrasebook in ("forum_us", "trade_notes"):
        data_dir = tmp_path / phrasebook
        _fill_lake(data_dir / "lake")
        write_run_record(data_dir, WORLD | {"phrasebook": phrasebook}, started, "python -m zipp_assets.demo")
        dirs.append(data_dir)
    # the second run's persona no longer states gender better than its control: that verdict now differs
    second = dirs[1] / "lake"
    rows = lake.open_table(second, "persona_fidelity").read().to_pylist()
    for row in rows:
        if row["attribute"] == "gender":
            row.update(lead=0.01, lead_low=-0.02, lead_high=0.04, verdict="no better than the control")
    lake.write_partition(second, "persona_fidelity", pa.Table.from_pylist(rows))
    monkeypatch.delenv("ZIPP_LAKE_URI", raising=False)
    assert main(["--out", str(tmp_path / "out"), "--compare", *map(str, dirs)]) == 0
    page = (tmp_path / "out" / "phrasebooks.md").read_text()
    assert "| attribute | forum_us | trade_notes | across runs |" in page
    assert "informative on all 2" in page  # locale, profession... hold on both
    assert "differs: informative on 1, no better than the control on 1" in page  # gender
    assert "| zipp_0shot | all users | -0.93 [-2.10, 0.20] tied | -0.93 [-2.10, 0.20] tied | tied on all 2 |" in page
    assert "| generic |" not in page  # the reference itself has no verdict
    assert "**forum_us**" in page and "**forum_us**" in page and "**trade_notes**" in page
    assert "persona_fidelity` version 2" in page  # the rewritten table of the second run, read at its version


def test_a_run_missing_a_result_table_fails_the_comparison(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("ZIPP_LAKE_URI", raising=False)
    lake.write_partition(tmp_path / "a" / "lake", "persona_fidelity", pa.Table.from_pylist([{"attribute": "x"}]))
    assert main(["--out", str(tmp_path / "out"), "--compare", str(tmp_path / "a")]) == 2
    assert "zipbench_summary" in capsys.readouterr().err


def test_the_real_llm_page_reports_outcomes_fidelity_beside_the_template_and_injection(tmp_path, monkeypatch):
    from zipp_assets.personas.injection import injection_table

    root = tmp_path / "lake"
    _fill_lake(root)
    persona = {"ok": True, "error": None, "model": "smollm2-135m-instruct", "completion_tokens": 300}
    rows = ([persona] * 6 + [persona | {"ok": False, "error": "truncated: the output reached max_tokens (1024)"}] * 3
            + [persona | {"ok": False, "error": "schema: locale: too long"}])
    lake.write_partition(root, "personas", pa.Table.from_pylist(rows))
    truth = {f"u{i}": {"age_band": "25-34", "gender": "woman", "locale": "UK", "profession": "nurse", "hobby": "knitting",
                       "visual_interest": "film", "palette_word": "warm", "mood_word": "calm"} for i in range(12)}
    nobody = {"age_band": "unknown", "gender": "unknown", "locale": "unknown", "profession": "unknown", "hobbies": [],
              "visual_interests": [], "aesthetics": {}}
    lake.write_partition(root, "persona_fidelity_template", pa.Table.from_pylist(
        fidelity_table({u: nobody for u in truth}, {u: nobody for u in truth}, truth)))
    astronaut, plain = {"profession": "astronaut"}, {"profession": "unknown"}
    lake.write_partition(root, "persona_injection", pa.Table.from_pylist(injection_table(
        {f"u{i}": astronaut if i < 5 else plain for i in range(10)}, {f"u{i}": plain for i in range(10)}, "astronaut")))
    rewrite = {"method": "zipp_0shot", "ok": True, "error": None}
    lake.write_partition(root, "zipbench_rewrites", pa.Table.from_pylist(
        [rewrite] * 3 + [rewrite | {"ok": False, "error": "no JSON object"}, rewrite | {"method": "generic"}]))
    write_run_record(tmp_path, WORLD, datetime(2026, 12, 6, tzinfo=timezone.utc), "python -m zipp_assets.demo --llm-model m")
    monkeypatch.setenv("ZIPP_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("ZIPP_LAKE_URI", raising=False)
    assert main(["--real-llm", "--out", str(tmp_path / "out"), "--template-data", str(tmp_path)]) == 0
    page = (tmp_path / "out" / "real-llm.md").read_text()
    assert "`smollm2-135m-instruct`" in page and "--llm-model m" in page and "seed 3" in page
    # 6 valid, 3 cut by the token limit, 1 failed of 10, each with a Wilson interval
    assert "| all | 10 | 0.600 [0.313, 0.832] | 0.300 [0.108, 0.603] | 0.100 [0.018, 0.404] | schema (1) |" in page
    # the model's fidelity beside its control and beside the template on the same users
    assert "| gender | 12 | 12 | 1.000 [1.000, 1.000] | 0.000 [0.000, 0.000] | +1.000 [+1.000, +1.000] |" in page
    assert "| 0.000 [0.000, 0.000] | +0.000 [+0.000, +0.000] | no better than the control |" in page
    assert "| with injected comments | 10 | 0.500 [" in page and "| difference (paired) | 10 | +0.500 [" in page
    assert "| zipp_0shot | 4 | 0.750 [" in page and "no JSON object (1)" in page and "| generic |" not in page.split(
        "## Rewrites")[1].split("## ZIPBench")[0]
    assert "the template run" in page and "| zipp_0shot | all users | 47.2 [46.1, 48.3] | -0.93 [-2.10, 0.20] | tied |" in page


def test_the_real_llm_page_shows_where_claims_rest_and_the_held_out_injection_measurement(tmp_path):
    import json as json_

    from zipp_assets.results import grounding_section, heldout_section
    from zipp_assets_tests.personas.test_grounding import BagOfWords

    root = tmp_path / "lake"

    def document(communities, comments):
        return json_.dumps({"communities_by_attention": [{"subreddit": c} for c in communities],
                            "comments": [{"subreddit": communities[0], "text": t} for t in comments]})

    lake.write_partition(root, "persona_evidence", pa.Table.from_pylist([
        {"user_id": "u1", "evidence_text": document(["Chess"], ["I am an astronaut"])},
        {"user_id": "u2", "evidence_text": document(["astronaut"], ["hello"])},
        {"user_id": "u3", "evidence_text": document(["Chess"], ["hello"])}]))
    lake.write_partition(root, "personas", pa.Table.from_pylist([
        {"user_id": "u1", "ok": True, "persona_json": json_.dumps({"profession": "astronaut", "hobbies": ["chess"]})},
        {"user_id": "u2", "ok": True, "persona_json": json_.dumps({"profession": "astronaut"})},
        {"user_id": "u3", "ok": True, "persona_json": json_.dumps({"profession": "architect"})},
        {"user_id": "u4", "ok": False, "persona_json": None}]))
    section = grounding_section(root, BagOfWords())
    assert "| profession | 3 | 0.333 [" in section  # u2's rests on a community; u1's on comments, u3's on nothing
    assert "| hobbies | 1 | 1.000 [" in section
    assert 'flags (no community supports them): 2; the most common: "astronaut" (1), "architect" (1).' in section
    interval = {"share": 0.5, "share_low": 0.2, "share_high": 0.8}
    measurement = {"model": "m", "users": 10, "valid_in_both": 8, "stating": 4, "control_professions": 6,
                   "filter_caught": interval, "stating_with_heldout_comment": interval, "stating_without": interval,
                   "difference_paired": {"share": 0.25, "share_low": 0.0, "share_high": 0.5},
                   "stating_flagged_by_grounding": interval, "control_professions_flagged": interval}
    table = heldout_section(measurement)
    assert "| of the personas stating it, flagged by the grounding check | 4 | 0.500 [0.200, 0.800] |" in table
    assert "| difference (paired, bootstrap) | 8 | +0.250 [+0.000, +0.500] |" in table
