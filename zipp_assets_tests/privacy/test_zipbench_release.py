"""A ZIPBench release: benchmark users k-anonymous (on having own prompts too), no pseudonym, seed or
reference key, no verbatim comment or own prompt; blocked by privacy_audit over the limit."""

import hashlib
import json

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from zipp_assets import lake
from zipp_assets.personas.schema import AGE_BANDS, Persona
from zipp_assets.personas.shards import SHARD_KEYS, shard_of
from zipp_assets.privacy.export import word_runs
from zipp_assets.privacy.kanonymity import group_sizes
from zipp_assets.privacy.zipbench_release import (
    EXPORTED_COLUMNS,
    OWN_PROMPT,
    PROMPT_SET_SOURCE,
    QUOTES_EVIDENCE,
    QUOTES_OWN_PROMPTS,
    TABLES,
    USER_GROUP,
    build_zipbench_release,
    zipbench_release_risk,
)
from zipp_assets.zipbench.history import HISTORY_SCHEMA
from zipp_assets.zipbench.prompts import PROMPT_SET_VERSION, prompt_seed
from zipp_assets.zipbench.rewrite import REWRITES_SCHEMA
from zipp_assets_tests.privacy.conftest import SNIPPET, materialize_privacy

OWN = "a watercolour of my grandmother's lighthouse cottage at dusk in cornwall"  # on the user's Civitai page
METHODS = ("generic", "zipp_0shot", "tailored_visions")


def _qi(user_id: str, subreddits: list[str], comments_bin: int = 2) -> dict:
    return {"user_id": user_id, "subreddits": subreddits, "comments_bin": comments_bin, "submissions_bin": 0,
            "active_months": 1, "first_month": "2019-01", "last_month": "2019-02"}


def _benchmark(users: list[str], with_history: set[str], evidence: dict[str, str]) -> dict:
    """Rows of the zipbench tables: two public prompts per user, one of the user's own where it has a
    history; every method rewrites each; zipp_0shot quotes the evidence, tailored_visions the own prompt."""
    prompts, rewrites, scores, judgements, own = [], [], [], [], {}
    for user in users:
        mine = [("animal-1", "animal", "a fox in the snow", PROMPT_SET_VERSION),
                ("city-2", "city", "a tram at night", PROMPT_SET_VERSION)]
        if user in with_history:
            own[user] = [OWN + f" {user}"]
            mine.append((f"own-{hashlib.sha256(own[user][0].encode()).hexdigest()[:10]}", "own history", own[user][0],
                         "own history, de-styled"))
        for prompt_id, category, base, source in mine:
            prompts.append({"user_id": user, "shard": shard_of(user), "prompt_id": prompt_id, "category": category,
                            "base_prompt": base, "source": source, "target_prompt": None,
                            "seed": prompt_seed(user, prompt_id)})
            for method in METHODS:
                final = {"generic": base, "zipp_0shot": f"{base}, {evidence[user][-60:]}",
                         "tailored_visions": f"{base}, {own[user][0]}" if user in own else f"{base}, soft light"}[method]
                rewrites.append({"user_id": user, "prompt_id": prompt_id, "shard": shard_of(user), "method": method,
                                 "seed": prompt_seed(user, prompt_id), "category": category, "base_prompt": base,
                                 "persona_user_id": user, "n_examples": 0, "rewritten_prompt": final, "ok": True,
                                 "error": None, "model": "template", "template_version": "rewrite-v1",
                                 "llm_prompt_tokens": 0, "llm_completion_tokens": 0, "final_prompt": final,
                                 "truncated": False, "prompt_tokens": len(final.split())})
                scores.append({"user_id": user, "prompt_id": prompt_id, "method": method, "shard": shard_of(user),
                               "clip_ref": 70.0, "clip_text": 30.0})
                if method != "generic":
                    judgements.append({"user_id": user, "prompt_id": prompt_id, "method": method,
                                       "opponent": "generic", "winner": method, "judge": "embedding"})
    return {"prompts": prompts, "rewrites": rewrites, "scores": scores, "judgements": judgements, "own": own}


def _exported_text(release) -> str:
    return json.dumps({part: release.tables[part].select(EXPORTED_COLUMNS[part]).to_pylist() for part in TABLES},
                      default=str)


def test_a_zipbench_release_is_k_anonymous_and_carries_no_verbatim_text_pseudonym_or_seed():
    users = [f"u_{i:020x}" for i in range(40)]
    with_history = set(users[::3])  # 14 users with a prompt history of their own
    quasi = [_qi(u, ["aww", "pics"] if i % 2 else ["aww"]) for i, u in enumerate(users)]
    quasi[0] = _qi(users[0], ["aww", "rare_hobby_sub"], comments_bin=9)
    evidence = {u: f'COMMENTS:\n- [r/aww] "{SNIPPET} {u}"' for u in users}
    personas = {u: Persona(age_band=AGE_BANDS[i % 3], summary=SNIPPET, hobbies=["cycling"]).model_dump()
                for i, u in enumerate(users)}
    personas[users[4]]["profession"] = SNIPPET[:70]  # quotes its own evidence
    bench = _benchmark(users, with_history, evidence)
    release = build_zipbench_release([{"user_id": u} for u in users], personas, quasi, evidence, bench["own"],
                                     bench["prompts"], bench["rewrites"], bench["scores"], bench["judgements"],
                                     k=5, seed=3)
    released = release.tables["users"].to_pylist()
    assert release.candidates == 40 and len(released) == 40 - release.suppressed and release.suppressed < 5
    # k-anonymous on the quasi-identifier and on having own prompts: no group of fewer than 5 either way
    assert min(group_sizes(released, USER_GROUP)) >= 5
    assert {r["own_prompts"] for r in released} == {True, False}
    assert all(r["own_prompts"] == (r["user_id"] in with_history) for r in released)
    assert not any("rare_hobby_sub" in r["quasi_identifier"] for r in released)
    # Every prompt, rewrite and score row belongs to a released user, under its release id only.
    release_ids = {r["release_id"] for r in released}
    for part in ("prompts", "scores"):
        assert set(release.tables[part]["release_id"].to_pylist()) == release_ids
    kept = {r["user_id"] for r in released}
    assert release.tables["prompts"].num_rows == sum(1 for r in bench["rewrites"] if r["user_id"] in kept)
    assert release.tables["scores"].num_rows == sum(1 for s in bench["scores"] if s["user_id"] in kept)
    text = _exported_text(release)
    # No pseudonym, seed or hash of an own prompt leaves; no run of six words of a comment or own prompt.
    assert not any(u in text for u in users)
    assert not any(str(p["seed"]) in text for p in bench["prompts"])
    assert not any(p["prompt_id"] in text for p in bench["prompts"] if p["prompt_id"].startswith("own-"))
    assert not word_runs(text) & word_runs(SNIPPET) and not word_runs(text) & word_runs(OWN)
    assert "grandmother" not in text and "county hospital" not in text
    assert release.dropped_verbatim_values >= 1
    own_rows = [p for p in release.tables["prompts"].to_pylist() if p["text_withheld"] == OWN_PROMPT]
    assert own_rows and all(p["base_prompt"] is None and p["final_prompt"] is None and p["category"] == "own"
                            and p["prompt_id"].startswith("own-") for p in own_rows)
    by_method = {}
    for p in release.tables["prompts"].to_pylist():
        if p["source"] == PROMPT_SET_SOURCE:
            by_method.setdefault(p["method"], set()).add(p["text_withheld"])
    # Public prompts stay; their rewrites quoting a comment or the user's own prompt are withheld.
    assert by_method["generic"] == {None} and by_method["zipp_0shot"] == {QUOTES_EVIDENCE}
    assert by_method["tailored_visions"] == {None, QUOTES_OWN_PROMPTS}
    public = [p for p in release.tables["prompts"].to_pylist() if p["method"] == "generic"
              and p["source"] == PROMPT_SET_SOURCE]
    assert {p["final_prompt"] for p in public} == {"a fox in the snow", "a tram at night"}
    assert {s["judge_winner"] for s in release.tables["scores"].to_pylist()} == {None, "zipp_0shot", "tailored_visions"}
    assert zipbench_release_risk(release.tables, 5, None, evidence, bench["own"]).within_limit


def test_the_zipbench_release_risk_counts_groups_below_k_and_any_verbatim_text():
    users = [f"u{i}" for i in range(10)]
    evidence = {u: f'"{SNIPPET}"' for u in users}
    bench = _benchmark(users, set(users[:5]), evidence)
    release = build_zipbench_release([{"user_id": u} for u in users], {u: Persona().model_dump() for u in users},
                                     [_qi(u, ["aww"]) for u in users], evidence, bench["own"], bench["prompts"],
                                     bench["rewrites"], bench["scores"], bench["judgements"], k=5, seed=1)
    assert zipbench_release_risk(release.tables, 5, None, evidence, bench["own"]).within_limit
    # A release made for k=5 is over the limit of k=6.
    assert not zipbench_release_risk(release.tables, 6, None, evidence, bench["own"]).within_limit
    # Text put back into the prompts table (a quoting rewrite, an own prompt) is counted, and over the limit.
    prompts = release.tables["prompts"]
    for column, reason in (("final_prompt", QUOTES_EVIDENCE), ("base_prompt", OWN_PROMPT)):
        where = pc.equal(prompts["text_withheld"], reason)
        source = next(r["final_prompt"] for r in bench["rewrites"] if r["method"] == "zipp_0shot") \
            if column == "final_prompt" else OWN
        put_back = prompts.set_column(prompts.schema.get_field_index(column), column,
                                      pc.if_else(where, pa.scalar(source), prompts[column]))
        risk = zipbench_release_risk({**release.tables, "prompts": put_back}, 5, None, evidence, bench["own"])
        assert risk.verbatim_values == pc.sum(where.cast(pa.int64())).as_py() > 0 and not risk.within_limit
    # Its users' groups are attacked with the dumps' authors under each part's own generaliser.
    one_author = [{"subreddits": ["aww"], "comments_bin": 2, "submissions_bin": 0, "active_months": 1,
                   "first_month": "2019-01", "last_month": "2019-02"}]
    risk = zipbench_release_risk(release.tables, 5, one_author, evidence, bench["own"])
    assert risk.fewest_dump_authors == 1 and not risk.within_limit


# --- the assets -----------------------------------------------------------------------------------

@pytest.fixture
def zipbench_data_dir(persona_data_dir, graph):
    """The persona data folder plus ZIPBench tables for every graph user (a third with own prompts)."""
    root = persona_data_dir / "lake"
    users = graph["users"]["user_id"].to_pylist()
    evidence = {r["user_id"]: r["evidence_text"] for r in lake.read_table(root, "persona_evidence").to_pylist()}
    bench = _benchmark(users, set(users[::3]), evidence)
    lake.write_partition(root, "zipbench_users", pa.Table.from_pylist(
        [{"user_id": u, "shard": shard_of(u), "reference_url_keys": [f"key{i}"], "n_history_prompts": len(bench["own"].get(u, []))}
         for i, u in enumerate(users)]))
    lake.write_partition(root, "zipbench_history", pa.Table.from_pylist(
        [{"user_id": u, "position": 0, "prompt": texts[0], "split": "train", "short_prompt": None}
         for u, texts in bench["own"].items()], schema=HISTORY_SCHEMA))
    lake.write_partition(root, "zipbench_prompts", pa.Table.from_pylist(bench["prompts"]))
    rewrites = pa.Table.from_pylist(bench["rewrites"], schema=REWRITES_SCHEMA)
    for method in METHODS:
        for shard in SHARD_KEYS:
            part = rewrites.filter(pc.and_(pc.equal(rewrites["method"], method), pc.equal(rewrites["shard"], shard)))
            lake.write_partition(root, "zipbench_rewrites", part, {"method": method, "shard": shard})
    lake.write_partition(root, "zipbench_scores", pa.Table.from_pylist(bench["scores"]))
    lake.write_partition(root, "zipbench_judgements", pa.Table.from_pylist(bench["judgements"]))
    lake.write_partition(root, "zipbench_summary", pa.table({"method": list(METHODS), "group": ["all users"] * 3,
                                                             "CLIPScore (ref)": ["70.0 [69, 71]"] * 3}))
    return persona_data_dir, bench


def test_the_zipbench_release_leaves_the_lake_after_a_passing_audit_without_verbatim_text(zipbench_data_dir, graph,
                                                                                          monkeypatch):
    data_dir, bench = zipbench_data_dir
    monkeypatch.setenv("ZIPP_PSEUDONYM_KEY", "test-key")  # the key the graph was built with
    result = materialize_privacy(data_dir, ["zipbench_release_candidate", "privacy_audit", "zipbench_release"], k=5)
    assert result.success
    check = result.get_asset_check_evaluations()[0]
    assert check.passed and check.metadata["zipbench_release"].value["fewest_dump_authors"] >= 5
    folders = list((data_dir / "exports" / "zipbench_release").iterdir())
    assert [f.name for f in folders] == [f"v{lake.open_table(data_dir / 'lake', 'zipbench_release_candidate').version}"]
    files = {f.stem: pq.read_table(f) for f in folders[0].glob("*.parquet")}
    assert set(files) == {"users", "prompts", "scores", "summary"}
    assert all(files[part].column_names == EXPORTED_COLUMNS[part] for part in TABLES)
    users = files["users"].to_pylist()
    assert len(users) > graph["users"].num_rows - 10 and min(group_sizes(users, USER_GROUP)) >= 5
    text = json.dumps({name: table.to_pylist() for name, table in files.items()}, default=str)
    assert not any(u in text for u in graph["users"]["user_id"].to_pylist())
    assert "county hospital" not in text and "grandmother" not in text and "key0" not in text
    assert files["summary"].num_rows == 3


def test_a_zipbench_release_over_the_risk_limit_is_blocked_and_zipbench_release_alone_refuses_it(zipbench_data_dir,
                                                                                                 monkeypatch):
    data_dir, _ = zipbench_data_dir
    monkeypatch.setenv("ZIPP_PSEUDONYM_KEY", "test-key")
    # A candidate made for k=2, audited for k=40: groups of 2 to 39 are over the limit.
    assert materialize_privacy(data_dir, ["zipbench_release_candidate"], k=2).success
    result = materialize_privacy(data_dir, ["privacy_audit", "zipbench_release"], k=40, linkage_attack=False)
    assert not result.success  # the blocking check stops the run before zipbench_release
    check = result.get_asset_check_evaluations()[0]
    assert not check.passed and check.metadata["zipbench_release"].value["smallest_group"] < 40
    assert not result.asset_materializations_for_node("zipbench_release")
    assert not (data_dir / "exports").exists()
    # Alone, zipbench_release finds no passing audit of this candidate and writes nothing.
    alone = materialize_privacy(data_dir, ["zipbench_release"], k=40)
    assert not alone.success and not (data_dir / "exports").exists()
    failure = [e for e in alone.all_events if e.is_step_failure][0]
    assert "no passing privacy_audit" in str(failure.event_specific_data.error)
    # A passing audit of an older candidate does not let a newer one out.
    assert materialize_privacy(data_dir, ["privacy_audit"], k=2, linkage_attack=False).success
    assert materialize_privacy(data_dir, ["zipbench_release_candidate"], k=2).success
    stale = materialize_privacy(data_dir, ["zipbench_release"], k=2)
    assert not stale.success and not (data_dir / "exports").exists()


def test_the_demo_releases_personas_before_zipbench_and_the_zipbench_release_after_its_summary():
    """The demo materializes the persona release before ZIPBench exists and the ZIPBench release as its
    own step after the benchmark summary: neither step may need what runs after it."""
    from zipp_assets import demo
    from zipp_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    names = {key.to_user_string() for key in graph.get_all_asset_keys()}

    def upstream(name: str) -> set[str]:
        seen, todo = set(), [name]
        while todo:
            for parent in graph.get(dg.AssetKey(todo.pop())).parent_keys:
                if parent.to_user_string() not in seen:
                    seen.add(parent.to_user_string())
                    todo.append(parent.to_user_string())
        return seen

    persona_step, zipbench_step = demo.PRIVACY_ASSETS.split(","), demo.ZIPBENCH_RELEASE.split(",")
    assert set(persona_step + zipbench_step) <= names and "zipbench_release" in zipbench_step
    # Before ZIPBench: the persona step reaches ZIPBench only through the candidate the audit measures when
    # it exists (test_export's audit runs on a lake without one).
    needed = set().union(*(upstream(name) for name in persona_step)) - set(persona_step)
    optional = {"zipbench_release_candidate"} | upstream("zipbench_release_candidate")
    assert "zipbench_release_candidate" not in persona_step
    assert not {n for n in needed - optional if n.startswith("zipbench")}, needed
    assert {"zipbench_summary", "zipbench_scores", "zipbench_rewrites"} <= upstream("zipbench_release_candidate")
    steps = demo.main.__code__.co_names
    assert steps.index("BENCHMARK_SUMMARY") < steps.index("ZIPBENCH_RELEASE")
