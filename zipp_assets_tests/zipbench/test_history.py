"""Histories from the published files: PIP's test split becomes held-out prompts, never history; ZIP-Bench and
Civitai rows by Reddit user; every file reported. And the summary's split by prompt history."""

import numpy as np

from zipp_assets.stats import wilson_interval
from zipp_assets.zipbench.history import load_history_files
from zipp_assets.zipbench.prompts import prompts_for_user
from zipp_assets.zipbench.rewrite import examples_for
from zipp_assets.zipbench.scoring import ImageScores, history_rows, label_offline_judge
from zipp_assets_tests.zipbench import published as pub


def _ids(names):
    return {n: f"pseudo-{n}" for n in names if n != "1003"}  # 1003 is nobody in the graph


def test_pip_test_rows_are_held_out_and_train_rows_are_history(tmp_path):
    folder = pub.write_pip_folder(tmp_path / "pip", bad=False)
    zipbench = pub.write_zipbench(tmp_path / "zb.parquet")
    civitai = pub.write_civitai(tmp_path / "scrape.txt")
    out = load_history_files([zipbench, civitai, tmp_path / "absent.jsonl"], _ids,
                             [folder, pub.write_pickapic(tmp_path / "p.parquet")])
    assert set(out.heldout) == {"pseudo-1001", "pseudo-1002"}
    held = out.heldout["pseudo-1001"]
    assert [h["short_prompt"] for h in held] == ["castle 307", "castle 407"]
    assert all(h["prompt"].startswith("prompt ") for h in held)
    assert len(out.history["pseudo-1001"]) == 3 and len(out.history["pseudo-1002"]) == 2
    assert not {h["prompt"] for h in held} & set(out.history["pseudo-1001"])
    assert out.history["pseudo-Some_Redditor-1"] == ["a lighthouse at dusk, 8k", "a fox in the snow", "a red bicycle"]
    report = {r["file"]: r for r in out.report}
    assert report["pip"]["kind"] == "pip" and report["pip"]["held_out"] == 4
    assert (report["pip"]["users"], report["pip"]["users_in_graph"]) == (3, 2)
    assert report["zb.parquet"]["rejected"] == 2 and report["zb.parquet"]["duplicates"] == 1
    assert report["scrape.txt"]["not_linkable"] == 4  # Civitai records name no Reddit user
    assert report["absent.jsonl"]["status"] == "missing"
    assert report["p.parquet"]["status"] == "not a history: it holds preferences"


def test_held_out_prompts_come_first_rewritten_from_their_short_prompt():
    held = [{"prompt": "a castle on a cliff, oil painting, dramatic light", "short_prompt": "castle"},
            {"prompt": "a misty harbour at dawn, film grain", "short_prompt": None}]
    rows = prompts_for_user("u1", 4, ["a red fox, watercolor"], heldout=held)
    assert [r["category"] for r in rows[:2]] == ["held out", "held out"]
    assert rows[0]["base_prompt"] == "castle" and rows[0]["target_prompt"] == held[0]["prompt"]
    assert rows[1]["base_prompt"] == "a misty harbour at dawn" and rows[1]["source"].endswith("de-styled")
    assert rows[2]["category"] == "own history" and len(rows) == 4
    assert all("target_prompt" in r for r in rows)
    # a method's examples come from the history only, which never holds a held-out prompt
    assert held[0]["prompt"] not in examples_for("zipp_5shot", "castle", ["a red fox, watercolor"], "u1", "p")


def _scores(users_with_history: set[int], n_users: int = 40):
    rng = np.random.default_rng(0)
    rows, judgements = [], []
    for u in range(n_users):
        for method, shift in (("generic", 0.0), ("zipp_0shot", 1.0), ("zipp_3shot", 1.0)):
            lift = 3.0 if method == "zipp_3shot" and u in users_with_history else shift
            rows.append({"user_id": f"u{u}", "prompt_id": "p", "method": method, "clip_ref": 40 + lift + rng.normal(),
                         "clip_text": float("nan")})
        judgements.append({"user_id": f"u{u}", "prompt_id": "p", "method": "zipp_3shot", "opponent": "generic",
                           "winner": "zipp_3shot" if u in users_with_history else "tie", "first_order": "first",
                           "second_order": "second", "reason": None, "judge": "offline embedding judge (x)"})
    return ImageScores(rows=rows, judgements=judgements, generated_embeddings=np.zeros((0, 2)),
                       reference_embeddings=np.zeros((0, 2)), reference_user=np.zeros(0),
                       judge="offline embedding judge",
                       text_scores=False, seconds=0.0)


def test_history_methods_are_shown_for_users_with_and_without_a_history():
    users = [{"user_id": f"u{u}", "n_history_prompts": 5 if u < 8 else 0} for u in range(40)]
    rows = history_rows(_scores(set(range(8))), users, ("generic", "zipp_0shot", "zipp_3shot", "tailored_visions"))
    assert [(r["method"], r["group"], r["users"]) for r in rows] == [
        ("zipp_3shot", "with prompt history", 8), ("zipp_3shot", "without prompt history", 32)]
    with_history, without = rows
    assert with_history["verdict vs generic"] == "ahead"
    assert with_history["judge win rate vs generic"].startswith("1.000")
    assert without["note"] == "no history: no examples, so the same request as zipp_0shot"
    assert without["judge win rate vs generic"].startswith("0.500")
    labelled = label_offline_judge([dict(r) for r in rows], "offline embedding judge (cosine ...)")
    assert labelled[0]["judge verdict"] == "ahead (same metric as CLIPScore (ref), not a separate finding)"
    assert label_offline_judge([dict(r) for r in rows], "vision-language judge (x)") == rows


def test_wilson_interval():
    interval = wilson_interval(8, 10)
    assert (round(interval.low, 3), round(interval.high, 3)) == (0.49, 0.943)
    assert wilson_interval(0, 0).n == 0 and wilson_interval(10, 10).high == 1.0
