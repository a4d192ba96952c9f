"""The judge against human choices: pairs from the loaders' votes, cases with each Pick-a-Pic user's other
choices as references, agreement with intervals, raking of Rapidata's voters, the summary rows."""

import json

import numpy as np
import pytest

from zipp_assets.imaging.encoders import PixelStatsEncoder
from zipp_assets.zipbench.agreement import (
    age_band,
    agreement,
    gender,
    human_pairs,
    judge_items,
    sample_pairs,
    summary_rows,
    with_image_bytes,
)
from zipp_assets.zipbench.judge import EmbeddingJudge, Verdict, judge_pairs
from zipp_assets.zipbench.loaders import load
from zipp_assets.zipbench.loaders.images import export_images, find_image
from zipp_assets.zipbench.raking import load_demographic_targets
from zipp_assets.zipbench.scoring import embed_images
from zipp_assets_tests.zipbench import published as pub

WARM, COOL = [(230, 60 + 10 * i, 40) for i in range(8)], [(40, 70 + 10 * i, 230) for i in range(8)]


def _pickapic(tmp_path, users=(11, 12, 13), pairs_per_user=4):
    """Each user always picks the warm image, shown first or second at random; images on disk by uid."""
    rng = np.random.default_rng(0)
    rows, images = [], tmp_path / "images"
    images.mkdir()
    for user in users:
        for k in range(pairs_per_user):
            warm_first = bool(rng.integers(2))
            warm, cool = f"w{user}-{k}", f"c{user}-{k}"
            (images / f"{warm}.png").write_bytes(pub.png(WARM[k]))
            (images / f"{cool}.png").write_bytes(pub.png(COOL[k]))
            uid0, uid1 = (warm, cool) if warm_first else (cool, warm)
            rows.append({"caption": f"pair {k}", "user_id": user, "image_0_uid": uid0, "image_1_uid": uid1,
                         "label_0": 1.0 if warm_first else 0.0, "label_1": 0.0 if warm_first else 1.0,
                         "best_image_uid": warm, "ranking_id": user * 100 + k, "has_label": True,
                         "are_different": True})
    path = tmp_path / "pickapic.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return load(path).table, images


def _embed(paths):
    return embed_images(paths, PixelStatsEncoder())


def test_pairs_group_votes_and_take_the_majority(tmp_path):
    votes = load(pub.write_rapidata(tmp_path / "r.parquet")).table
    pairs = human_pairs(votes)
    assert [(p.tally, p.majority) for p in pairs] == [((2, 1, 0), "a"), ((0, 2, 0), "b"), ((0, 2, 0), "b")]
    assert all(p.annotator is None and p.cluster.startswith("pair:") for p in pairs)
    assert [p.pair_id for p in sample_pairs(pairs, 2, seed=0)] == [p.pair_id for p in sample_pairs(pairs, 2, 0)]
    assert len(sample_pairs(pairs, 2, seed=0)) == 2 and sample_pairs(pairs, 10, 0) == pairs


def test_a_users_other_choices_are_the_references_and_the_embedding_judge_agrees_with_them(tmp_path):
    votes, images = _pickapic(tmp_path)
    pairs = human_pairs(votes)
    prepared = judge_items(pairs, lambda i: find_image(images, i), _embed, references_per_user=8)
    assert len(prepared.items) == 12 and not prepared.skipped
    case = prepared.items[0][0]
    assert len(case.reference_images) == 3 and case.reference_embeddings.shape[0] == 3  # the other 3 choices
    read_case, read_a, _ = with_image_bytes(prepared.items[0])  # for a judge that looks at the pixels
    assert all(image[:8] == b"\x89PNG\r\n\x1a\n" for image in (*read_case.reference_images, read_a.image))
    verdicts = judge_pairs(EmbeddingJudge(), prepared.items)
    result = agreement(prepared.pairs, verdicts, seed=0)["pickapic-v2"]
    assert result["pairs"] == 12 and result["clusters"] == 3 and result["cluster_unit"] == "annotator"
    assert result["agreement"]["estimate"] == 1.0 and result["verdict"] == "above chance"
    assert result["decided_agreement"]["estimate"] == 1.0 and result["decided_agreement"]["low"] > 0.7  # Wilson
    assert result["judge_failures"] == 0 and result["votes_agreement"]["estimate"] == 1.0
    row = summary_rows({"pickapic-v2": result}, EmbeddingJudge.name, {"pickapic-v2": 12})[0]
    assert row["method"] == "judge vs human choices (pickapic-v2)" and row["group"] == "human preference pairs"
    assert row["judge agreement with humans"] == "1.000 [1.000, 1.000]"
    assert row["judge verdict"].startswith("above chance (same metric as CLIPScore (ref)")
    assert "12 pairs judged of 12" in row["note"] and "(Wilson)" in row["note"]


class Contrarian:
    """Always picks the image people did not pick (it is told which through the candidates' method)."""

    name = "contrarian"

    def __init__(self, majority):
        self.majority = majority

    def compare_many(self, items):
        out = []
        for case, first, _ in items:
            wrong = "b" if self.majority[case.case_id] == "a" else "a"
            out.append(Verdict("first" if first.method == wrong else "second"))
        return out


def test_a_judge_that_always_disagrees_is_below_chance_and_ties_count_half(tmp_path):
    votes, images = _pickapic(tmp_path, users=(11, 12, 13, 14, 15, 16))
    pairs = human_pairs(votes)
    prepared = judge_items(pairs, lambda i: find_image(images, i), _embed)
    verdicts = judge_pairs(Contrarian({p.pair_id: p.majority for p in pairs}), prepared.items)
    result = agreement(prepared.pairs, verdicts, seed=0)["pickapic-v2"]
    assert result["agreement"]["estimate"] == 0.0 and result["verdict"] == "below chance"

    class AlwaysFirst:
        name = "always first"

        def compare_many(self, items):
            return [Verdict("first") for _ in items]

    ties = agreement(prepared.pairs, judge_pairs(AlwaysFirst(), prepared.items))["pickapic-v2"]
    assert ties["agreement"]["estimate"] == 0.5 and ties["judge_ties"] == 24 and ties["verdict"] == "at chance"


def test_missing_images_and_human_ties_are_left_out_and_counted(tmp_path):
    votes, images = _pickapic(tmp_path, users=(11,))
    (images / "w11-0.png").unlink()
    tie = tmp_path / "tie.jsonl"
    tie.write_text(json.dumps({"caption": "t", "user_id": 9, "image_0_uid": "w11-1", "image_1_uid": "c11-1",
                               "label_0": 0.5, "label_1": 0.5}) + "\n")
    pairs = human_pairs(votes) + human_pairs(load(tie).table)
    prepared = judge_items(pairs, lambda i: find_image(images, i), _embed)
    assert len(prepared.items) == 3
    assert prepared.skipped == {"an image is not on disk under the image root": 1,
                                "people tied (no majority to agree with)": 1}


def test_rapidata_voters_are_raked_to_the_targets_and_the_ceiling_is_reported(tmp_path):
    path = pub.write_rapidata(tmp_path / "r.parquet")
    export_images(path, tmp_path / "images")
    pairs = human_pairs(load(path).table)
    prepared = judge_items(pairs, lambda i: find_image(tmp_path / "images", i), _embed)
    assert len(prepared.items) == 3 and all(case.reference_embeddings is None for case, _, _ in prepared.items)
    verdicts = judge_pairs(EmbeddingJudge(), prepared.items)
    assert all(v.failed and "no reference embeddings" in v.verdict_ab.reason for v in verdicts)  # said, not hidden
    result = agreement(prepared.pairs, verdicts, load_demographic_targets(), seed=0)["rapidata"]
    assert result["cluster_unit"] == "pair" and result["votes"] == 7 and result["judge_failures"] == 3
    assert result["votes_agreement_reweighted"]["estimate"] == pytest.approx(0.5)
    assert result["raking"]["converged"] and result["raking"]["users"] == 7
    assert result["ages_not_in_target_bands"] == {"18-29": 1}
    assert result["human_ceiling"]["estimate"] == pytest.approx((2 / 3 + 1 + 1) / 3)
    row = summary_rows({"rapidata": result}, "vl judge")[0]
    assert "IPF-reweighted" in row["note"] and "human ceiling" in row["note"]
    assert "(same metric" not in row["judge verdict"]


def test_demographics_map_onto_the_target_levels():
    assert age_band("25-34") == ("25-34", True) and age_band("0-17") == ("13-17", True)
    assert age_band("Unknown") == ("unknown", True) and age_band("18-29") == ("unknown", False)
    assert age_band(None) == ("unknown", True) and age_band("65+") == ("65+", True)
    assert (gender("Female"), gender("male"), gender("Other"), gender(None), gender("x")) == \
        ("female", "male", "nonbinary", "unknown", "unknown")


def test_no_pairs_give_one_row_saying_why():
    rows = summary_rows({}, "judge", note="no preference files configured (preference_files)")
    assert rows == [{"method": "judge vs human choices", "group": "human preference pairs", "users": "0",
                     "judge agreement with humans": "–", "judge verdict": "–",
                     "note": "no preference files configured (preference_files)"}]


def test_the_agreement_asset_with_a_vision_language_judge(fake_server, tmp_path):
    """The asset end to end: a Pick-a-Pic file, its images on disk, and a vision-language judge (the fake
    OpenAI-compatible server on loopback, answering for whichever candidate is red)."""
    import dagster as dg

    from zipp_assets import lake
    from zipp_assets.imaging.resources import ImageEncoderResource
    from zipp_assets.llm.resources import LLMResource
    from zipp_assets.resources import ZippLake
    from zipp_assets.zipbench.assets import zipbench_human_agreement
    from zipp_assets_tests.zipbench.test_judge import BLUE, RED, prefer_red

    prefer_red(fake_server)
    raw = tmp_path / "data" / "raw" / "zipbench"
    images = raw / "preference_images"
    images.mkdir(parents=True)
    rows = []
    for k in range(6):
        red_first = k % 2 == 0
        (images / f"r{k}.png").write_bytes(RED)
        (images / f"b{k}.png").write_bytes(BLUE)
        uid0, uid1 = (f"r{k}", f"b{k}") if red_first else (f"b{k}", f"r{k}")
        rows.append({"caption": f"c{k}", "user_id": k % 3, "image_0_uid": uid0, "image_1_uid": uid1,
                     "label_0": float(red_first), "label_1": float(not red_first), "ranking_id": k})
    (raw / "pap.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    resources = {"lake": ZippLake(data_dir=str(tmp_path / "data")), "image_encoder": ImageEncoderResource(),
                 "llm": LLMResource(backend="openai", base_url=fake_server.base_url, model=fake_server.model,
                                    retries=0)}
    result = dg.materialize([zipbench_human_agreement], resources=resources, instance=dg.DagsterInstance.ephemeral(),
                            run_config={"ops": {"zipbench_human_agreement": {"config": {
                                "preference_files": ["zipbench/pap.jsonl", "zipbench/absent.parquet"],
                                "judge": "vision_language"}}}})
    assert result.success
    table = lake.read_table(tmp_path / "data" / "lake", "zipbench_human_agreement").to_pylist()
    row = json.loads(next(r["json"] for r in table if r["table"] == "summary_row"))
    assert row["judge agreement with humans"] == "1.000 [1.000, 1.000]" and row["judge verdict"] == "above chance"
    assert "vision-language judge" in row["note"] and fake_server.record.calls == 12  # 6 pairs, both orders
    pairs = lake.read_table(tmp_path / "data" / "lake", "zipbench_human_pairs").to_pylist()
    assert len(pairs) == 6 and all(p["judge_winner"] == p["human"] for p in pairs)


def test_the_agreement_asset_without_preference_files_says_so(tmp_path):
    import dagster as dg

    from zipp_assets import lake
    from zipp_assets.imaging.resources import ImageEncoderResource
    from zipp_assets.llm.resources import LLMResource
    from zipp_assets.resources import ZippLake
    from zipp_assets.zipbench.assets import zipbench_human_agreement

    resources = {"lake": ZippLake(data_dir=str(tmp_path / "data")), "image_encoder": ImageEncoderResource(),
                 "llm": LLMResource()}
    assert dg.materialize([zipbench_human_agreement], resources=resources,
                          instance=dg.DagsterInstance.ephemeral()).success  # the demo's case
    table = lake.read_table(tmp_path / "data" / "lake", "zipbench_human_agreement").to_pylist()
    assert [json.loads(r["json"])["note"] for r in table] == ["no preference files configured (preference_files)"]
    assert lake.read_table(tmp_path / "data" / "lake", "zipbench_human_pairs").num_rows == 0
