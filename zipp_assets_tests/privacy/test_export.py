"""Releases: k-anonymous on the quasi-identifiers, no verbatim snippet, no pseudonym; and the audit
that blocks a release over the limit, as Dagster assets on the tiny world."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from zipp_assets.personas.schema import AGE_BANDS, Persona
from zipp_assets.privacy.export import (
    EXPORTED_COLUMNS,
    build_persona_release,
    min_group_size,
    release_risk,
    word_runs,
)
from zipp_assets.privacy.kanonymity import group_sizes
from zipp_assets_tests.privacy.conftest import SNIPPET, materialize_privacy as _materialize

def _qi(user_id: str, subreddits: list[str], comments_bin: int = 2) -> dict:
    return {"user_id": user_id, "subreddits": subreddits, "comments_bin": comments_bin, "submissions_bin": 0,
            "active_months": 1, "first_month": "2019-01", "last_month": "2019-02"}


def _persona(user_id: str, **fields) -> dict:
    return {"user_id": user_id, "persona": Persona(**fields).model_dump()}


def test_a_release_is_k_anonymous_and_carries_no_snippet_summary_or_pseudonym():
    users = [f"u_{i:020x}" for i in range(40)]
    quasi = [_qi(u, ["aww", "pics"] if i % 2 else ["aww"]) for i, u in enumerate(users)]
    quasi[0] = _qi(users[0], ["aww", "rare_hobby_sub"], comments_bin=9)  # singled out until generalised
    personas = [_persona(u, age_band=AGE_BANDS[i % 3], summary=f"I am user {i}", hobbies=["cycling"]) for i, u in enumerate(users)]
    personas[3] = _persona(users[3], profession=SNIPPET[:70], summary=SNIPPET)  # quotes its own evidence
    evidence = {u: f'COMMENTS:\n- [r/aww] "{SNIPPET}"' if u == users[3] else "COMMENTS:\n- [r/aww] \"cute\"" for u in users}
    release = build_persona_release(personas, quasi, evidence, k=5, seed=1)
    rows = release.table.to_pylist()
    assert release.suppressed < 5 and len(rows) == 40 - release.suppressed
    assert min(group_sizes(rows, ("generalisation", "quasi_identifier"))) >= 5
    assert not any("rare_hobby_sub" in r["quasi_identifier"] or "rare_hobby_sub" in r["named_subreddits"] for r in rows)
    exported = release.table.select(EXPORTED_COLUMNS)
    assert "user_id" not in exported.column_names
    text = json.dumps(exported.to_pylist())
    assert not any(u in text for u in users)
    assert "summary" not in text and "I am user" not in text
    assert not word_runs(text) & word_runs(SNIPPET)  # no run of six words of the snippet anywhere
    assert release.dropped_verbatim_values == 1
    assert release_risk(release.table, 5, None, evidence).within_limit


def test_release_risk_is_over_the_limit_for_small_groups_quotes_or_unique_dump_matches():
    rows = [{"user_id": f"u{i}", "release_id": f"r{i}", "generalisation": "activity, years",
             "quasi_identifier": "comments 3-6" if i < 5 else "comments 7-14", "named_subreddits": [],
             "persona_json": json.dumps({"profession": "nurse"}), "dropped_verbatim_values": 0} for i in range(7)]
    table = pa.Table.from_pylist(rows)
    risk = release_risk(table, 5)
    assert not risk.within_limit and risk.smallest_group == 2 and risk.rows_below_k == 2 and risk.worst_risk == 0.5
    anonymous = table.filter(pa.array([i < 5 for i in range(7)]))
    assert release_risk(anonymous, 5).within_limit
    quoting = release_risk(anonymous, 5, evidence_text={"u1": "I work as a nurse and the profession suits me"})
    assert quoting.within_limit  # one word in common is not a quotation
    quoted = anonymous.set_column(5, "persona_json", pa.array([json.dumps({"profession": SNIPPET})] * 5))
    assert not release_risk(quoted, 5, evidence_text={"u2": SNIPPET}).within_limit
    # The attacker finds a released value held by one author of the dumps: over the limit.
    authors = [{"subreddits": [], "comments_bin": 2, "submissions_bin": 0, "active_months": 1,
                "first_month": "2019-01", "last_month": "2019-01"}]
    row = {"user_id": "u", "release_id": "r", "generalisation": "activity, years",
           "quasi_identifier": "comments 3-6, posts 0, 1 active month(s); 2019..2019", "named_subreddits": [],
           "persona_json": "{}", "dropped_verbatim_values": 0}
    risk = release_risk(pa.Table.from_pylist([row] * 5), 5, authors)
    assert risk.smallest_group == 5 and risk.fewest_dump_authors == 1 and not risk.within_limit


@pytest.mark.parametrize("value", ["1", "0", "-3", "five", "2.5", ""])
def test_the_release_k_from_the_environment_must_be_a_whole_number_of_at_least_two(value):
    with pytest.raises(ValueError, match="ZIPP_EXPORT_MIN_GROUP_SIZE"):
        min_group_size({"ZIPP_EXPORT_MIN_GROUP_SIZE": value})
    assert min_group_size({}) == 5 and min_group_size({"ZIPP_EXPORT_MIN_GROUP_SIZE": " 12 "}) == 12


# --- the assets -----------------------------------------------------------------------------------

def test_the_audit_reports_uniqueness_and_linkage_and_lets_a_k_anonymous_release_out(persona_data_dir, graph, monkeypatch):
    monkeypatch.setenv("ZIPP_PSEUDONYM_KEY", "test-key")  # the key the graph was built with
    result = _materialize(persona_data_dir, ["persona_release_candidate", "privacy_audit", "persona_release"], k=5)
    assert result.success
    audit = result.asset_materializations_for_node("privacy_audit")[0].metadata
    assert audit["users"].value == graph["users"].num_rows
    assert "subreddit set and activity" in audit["uniqueness"].value
    assert audit["subreddit_set_unique_share"].value > 0.8  # the lake is not anonymous: docs/privacy.md
    assert "graph_edges columns" in audit["linkage_attack"].value and "subreddit set only" in audit["linkage_attack"].value
    check = result.get_asset_check_evaluations()[0]
    assert check.passed and check.metadata["smallest_group"].value >= 5
    assert check.metadata["fewest_dump_authors"].value >= 5
    files = list((persona_data_dir / "exports" / "persona_release").glob("*.parquet"))
    assert len(files) == 1
    released = pq.read_table(files[0])
    assert released.column_names == EXPORTED_COLUMNS and released.num_rows > graph["users"].num_rows - 5
    assert min(group_sizes(released.to_pylist(), ("generalisation", "quasi_identifier"))) >= 5
    text = json.dumps(released.to_pylist())
    assert SNIPPET.split()[0] + " " + SNIPPET.split()[1] not in text and "county hospital" not in text
    assert not any(u in text for u in graph["users"]["user_id"].to_pylist())


def test_a_release_over_the_risk_limit_is_blocked_and_persona_release_alone_refuses_it(persona_data_dir, monkeypatch):
    monkeypatch.setenv("ZIPP_PSEUDONYM_KEY", "test-key")
    # A candidate made for k=2, audited for k=40: groups of 2 to 39 are over the limit.
    assert _materialize(persona_data_dir, ["persona_release_candidate"], k=2).success
    result = _materialize(persona_data_dir, ["privacy_audit", "persona_release"], k=40)
    assert not result.success  # the blocking check stops the run before persona_release
    check = result.get_asset_check_evaluations()[0]
    assert not check.passed and check.metadata["smallest_group"].value < 40
    assert not result.asset_materializations_for_node("persona_release")
    assert not (persona_data_dir / "exports").exists()
    # Alone, persona_release finds no passing audit of this candidate and writes nothing.
    alone = _materialize(persona_data_dir, ["persona_release"], k=40)
    assert not alone.success and not (persona_data_dir / "exports").exists()
    failure = [e for e in alone.all_events if e.is_step_failure][0]
    assert "no passing privacy_audit" in str(failure.event_specific_data.error)
