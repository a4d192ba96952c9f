import io
import json
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import zstandard
from PIL import Image

from zipp_assets.reddit.dumps import iter_line_blocks
from zipp_assets.simworld.world import WorldConfig, generate_world, parse_month_range


def _records(path):
    lines = [line for block in iter_line_blocks(path) for line in block.data.split(b"\n")]
    parsed, broken = [], 0
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            broken += 1
    return parsed, broken


def test_dump_files_look_like_the_real_ones(tiny_world):
    reddit = tiny_world / "raw" / "reddit"
    assert sorted(p.name for p in reddit.iterdir()) == ["RC_2017-12.zst", "RC_2018-01.zst", "RS_2017-12.zst", "RS_2018-01.zst"]
    with pytest.raises(zstandard.ZstdError, match="too much memory"):
        zstandard.ZstdDecompressor().stream_reader(open(reddit / "RC_2018-01.zst", "rb")).read(100)
    old, _ = _records(reddit / "RC_2017-12.zst")
    new, _ = _records(reddit / "RC_2018-01.zst")
    assert not any("author_fullname" in r for r in old)
    assert all("author_fullname" in r for r in new if r.get("author") not in ("[deleted]",) and "id" in r)
    assert all(r["link_id"].startswith("t3_") and r["parent_id"][:3] in ("t1_", "t3_") for r in new if "link_id" in r)
    assert any(isinstance(r.get("created_utc"), str) for r in new)
    assert {type(r.get("edited")) for r in new} >= {bool, float}
    authors = {r.get("author") for r in new}
    assert {"[deleted]", "AutoModerator"} <= authors
    assert any(r.get("author", "").endswith("Bot") for r in new)
    assert any(any(ord(ch) > 127 for ch in r.get("body", "")) for r in new)


def test_submissions_carry_images_galleries_crossposts_and_nsfw(tiny_world):
    posts, _ = _records(tiny_world / "raw" / "reddit" / "RS_2018-01.zst")
    assert any(p.get("is_gallery") and p.get("media_metadata") for p in posts)
    assert any(p.get("crosspost_parent_list") for p in posts)
    assert any(p.get("over_18") for p in posts)
    assert any("i.redd.it" in (p.get("url") or "") for p in posts)
    assert any("&amp;" in json.dumps(p.get("preview", "")) for p in posts)


def test_malformed_lines_are_planted(tmp_path):
    config = WorldConfig(users=120, months=("2019-01",), seed=3, malformed_rate=0.05, write_images=False)
    report = generate_world(config, tmp_path / "raw")
    _, broken = _records(tmp_path / "raw" / "reddit" / "RC_2019-01.zst")
    assert report[0]["malformed"] > 0 and broken > 0


def test_truth_and_images_follow_the_planted_styles(tiny_world):
    truth = tiny_world / "truth"
    users = pq.read_table(truth / "users.parquet").to_pylist()
    communities = pq.read_table(truth / "communities.parquet").to_pylist()
    assert len(users) == 150
    assert all(1 <= len(u["communities"]) <= 3 and abs(sum(u["community_weights"]) - 1) < 1e-6 for u in users)
    assert len(communities) == 12 and all(c["subreddits"] for c in communities)
    new_columns = {"age", "locale", "profession", "hobby", "visual_interest", "trait_subreddits", "personal_share",
                   "palette_word", "lighting_word", "mood_word", "texture_word", "look_phrase"}
    for part in ("taste_", "community_taste_", "personal_taste_"):
        new_columns |= {part + f for f in ("hue", "saturation", "brightness", "contrast", "pattern", "frequency")}
    assert new_columns <= set(users[0])
    assert {"contrast", "visual_interest"} <= set(communities[0])
    subreddits = pq.read_table(truth / "subreddits.parquet").to_pylist()
    assert {"kind", "trait"} <= set(subreddits[0])
    pngs = list((tiny_world / "raw" / "images").rglob("*"))
    files = [p for p in pngs if p.is_file()]
    assert files
    image = Image.open(io.BytesIO(files[0].read_bytes()))
    assert image.format == "PNG" and image.size == (32, 32)


def test_generation_is_deterministic_and_arctic_shift_style_sorts_keys(tmp_path):
    config = WorldConfig(users=60, months=("2023-05",), seed=11)
    generate_world(config, tmp_path / "a", tmp_path / "a" / "truth")
    generate_world(config, tmp_path / "b", tmp_path / "b" / "truth")
    for name in ("RC_2023-05.zst", "RS_2023-05.zst"):
        assert (tmp_path / "a" / "reddit" / name).read_bytes() == (tmp_path / "b" / "reddit" / name).read_bytes()
    for name in ("users", "communities", "subreddits", "bots"):
        truth = [(tmp_path / run / "truth" / f"{name}.parquet").read_bytes() for run in ("a", "b")]
        assert truth[0] == truth[1]

    def images(run):
        folder = tmp_path / run / "images"
        return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}

    assert images("a") and images("a") == images("b")
    generate_world(WorldConfig(users=60, months=("2023-05",), seed=12, write_images=False), tmp_path / "c")
    dumps = [(tmp_path / run / "reddit" / "RC_2023-05.zst").read_bytes() for run in ("a", "c")]
    assert dumps[0] != dumps[1]
    records, _ = _records(tmp_path / "a" / "reddit" / "RC_2023-05.zst")
    first = records[0]
    assert "_meta" in first and list(first) == sorted(first)


def test_early_era_schema(tmp_path):
    generate_world(WorldConfig(users=40, months=("2007-06",), seed=1, write_images=False), tmp_path)
    records, _ = _records(tmp_path / "reddit" / "RC_2007-06.zst")
    assert all(isinstance(r["created_utc"], str) for r in records if "created_utc" in r)
    assert not any("author_fullname" in r for r in records)


def test_month_ranges_and_bad_config():
    assert parse_month_range("2019-11:2020-02") == ("2019-11", "2019-12", "2020-01", "2020-02")
    assert parse_month_range("2019-05") == ("2019-05",)
    with pytest.raises(ValueError):
        parse_month_range("2019-05:2019-01")
    with pytest.raises(ValueError):
        WorldConfig(users=0)
    with pytest.raises(ValueError):
        WorldConfig(months=("2019-13",))


def test_cli_generates_and_rejects_bad_flags(tmp_path):
    ok = subprocess.run(
        [sys.executable, "-m", "zipp_assets.simworld", "generate", "--out", str(tmp_path / "raw"), "--users", "30",
         "--months", "2019-01", "--seed", "2", "--no-images"],
        capture_output=True, text=True, check=True,
    )
    assert "2019-01" in ok.stdout and (tmp_path / "raw" / "reddit" / "RC_2019-01.zst").exists()
    assert (tmp_path / "truth" / "users.parquet").exists()
    bad = subprocess.run([sys.executable, "-m", "zipp_assets.simworld", "generate", "--out", str(tmp_path), "--months", "2019-14"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "2019-14" in bad.stderr
    bad_share = subprocess.run([sys.executable, "-m", "zipp_assets.simworld", "generate", "--out", str(tmp_path),
                                "--personal-share", "1.5"], capture_output=True, text=True)
    assert bad_share.returncode == 2 and "personal_share" in bad_share.stderr


# The default world's dumps, decompressed, for WORLD_VERSION (40 users, 2019-01, seed 3, forum_us). A change
# here means the same config writes a different world: bump WORLD_VERSION and record the new digest.
DEFAULT_DUMP_DIGEST = {4: "ab8b5756587f8877e391294894b5b5e6eb68f3bdeebaf21649b0f94c71b83ae5"}


def _dump_digest(raw):
    import hashlib

    digest = hashlib.sha256()
    for name in ("RS_2019-01.zst", "RC_2019-01.zst"):
        for block in iter_line_blocks(raw / "reddit" / name):
            digest.update(block.data)
    return digest.hexdigest()


def test_the_default_world_writes_the_recorded_dumps(tmp_path):
    from zipp_assets.simworld.world import WORLD_VERSION

    generate_world(WorldConfig(users=40, months=("2019-01",), seed=3, write_images=False), tmp_path / "raw")
    assert WorldConfig().taste_aligned_share == 0.0 and WorldConfig().phrasebook == "forum_us"
    assert _dump_digest(tmp_path / "raw") == DEFAULT_DUMP_DIGEST[WORLD_VERSION]


def test_taste_aligned_share_sends_activity_to_the_community_nearest_personal_taste(tmp_path):
    results = {}
    for share in (0.0, 0.5):
        config = WorldConfig(users=150, months=("2019-01",), seed=8, write_images=False, malformed_rate=0.0,
                             taste_aligned_share=share)
        generate_world(config, tmp_path / str(share) / "raw", tmp_path / str(share) / "truth")
        truth = pq.read_table(tmp_path / str(share) / "truth" / "users.parquet").to_pylist()
        communities = pq.read_table(tmp_path / str(share) / "truth" / "communities.parquet").to_pylist()
        subreddit_of = {s: c["community"] for c in communities for s in c["subreddits"]}
        outsiders = {u["author"]: u["taste_community"] for u in truth if u["taste_community"] not in u["communities"]}
        reddit = tmp_path / str(share) / "raw" / "reddit"
        records = [r for m in ("RC", "RS") for r in _records(reddit / f"{m}_2019-01.zst")[0]]
        in_communities = [(r["author"], subreddit_of[r["subreddit"]]) for r in records
                          if r.get("author") in outsiders and r.get("subreddit") in subreddit_of]
        results[share] = (np.mean([c == outsiders[a] for a, c in in_communities]), truth)
    assert results[0.0][0] == 0.0  # at 0 nobody posts outside their communities
    assert 0.35 < results[0.5][0] < 0.65, results[0.5][0]  # about half of the community activity moves
    planted = [{k: v for k, v in u.items() if k != "taste_aligned_share"} for u in results[0.0][1]]
    assert planted == [{k: v for k, v in u.items() if k != "taste_aligned_share"} for u in results[0.5][1]]
    with pytest.raises(ValueError, match="taste_aligned_share must be within 0..1"):
        WorldConfig(taste_aligned_share=1.5)
