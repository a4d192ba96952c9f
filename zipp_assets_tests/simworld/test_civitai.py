import hashlib
import json
import math
import random
import subprocess
import sys
from collections import Counter, defaultdict

import pyarrow.parquet as pq
import pytest

from zipp_assets.reddit.dumps import iter_line_blocks
from zipp_assets.simworld import phrasebook
from zipp_assets.simworld.civitai import HISTORY_FILE, SUBJECTS, style_clauses
from zipp_assets.simworld.world import WorldConfig, generate_world
from zipp_assets.zipbench.loaders import load_generation_histories

TRUTH_COLUMN = {"palette": "palette_word", "look": "look_phrase", "lighting": "lighting_word", "mood": "mood_word",
                "texture": "texture_word"}


@pytest.fixture(scope="module")
def linked_world(tmp_path_factory):
    """A world where half the image-posting users have a history, so shares and matches are measurable."""
    root = tmp_path_factory.mktemp("civitai_world")
    config = WorldConfig(users=400, months=("2019-01",), seed=5, write_images=False, prompt_history_share=0.5,
                         prompts_per_user=(3, 12))
    generate_world(config, root / "raw", root / "truth")
    return root, config


def _tree_digest(folder, skip=()):
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not set(p.relative_to(folder).parts) & set(skip)):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def test_histories_leave_dumps_images_and_truth_byte_identical(tmp_path):
    for name, share in (("without", 0.0), ("with", 0.6)):
        config = WorldConfig(users=60, months=("2018-01",), seed=11, malformed_rate=0.01, prompt_history_share=share)
        generate_world(config, tmp_path / name / "raw", tmp_path / name / "truth")
    assert not (tmp_path / "without" / "raw" / HISTORY_FILE).exists()
    assert (tmp_path / "with" / "raw" / HISTORY_FILE).stat().st_size > 0
    assert any(p.is_file() for p in (tmp_path / "with" / "raw" / "images").rglob("*"))
    for part in ("raw", "truth"):
        without, with_ = (_tree_digest(tmp_path / run / part, skip={"zipbench"}) for run in ("without", "with"))
        assert without == with_, part


def test_history_file_loads_with_no_bad_rows(linked_world):
    root, config = linked_world
    path = root / "raw" / "zipbench" / "civitai_generations.jsonl"
    rows, rejected = load_generation_histories(path, on_bad_row="skip")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert rejected.num_rows == 0 and rows.num_rows == len(lines) > 0
    assert set(json.loads(lines[0])) == {"prompt", "negativePrompt", "url", "seed", "steps", "sampler", "cfgScale",
                                         "width", "height", "civitai_username", "reddit_username"}
    records = rows.to_pylist()
    per_user = Counter(r["reddit_username"] for r in records)
    low, high = config.prompts_per_user
    assert all(low <= n <= high for n in per_user.values())
    handles = defaultdict(set)
    for r in records:
        handles[r["reddit_username"]].add(r["civitai_username"])
    assert all(len(h) == 1 for h in handles.values())  # one Civitai account per linked Reddit user
    all_handles = [next(iter(h)) for h in handles.values()]
    assert len(set(all_handles)) == len(all_handles)
    assert not any(h == name for name, hs in handles.items() for h in hs)
    truth_names = {u["author"] for u in pq.read_table(root / "truth" / "users.parquet").to_pylist()}
    assert set(per_user) <= truth_names
    categories = Counter(next(c for c, subjects in SUBJECTS.items() if r["prompt"].startswith(subjects))
                         for r in records)
    assert set(categories) == set(SUBJECTS)
    assert any(r["negative_prompt"] is None for r in records) and any(r["negative_prompt"] for r in records)


def _image_posters(reddit_dir):
    """Authors of submissions carrying an image of their own, read from the dumps."""
    authors = set()
    for path in reddit_dir.glob("RS_*.zst"):
        for block in iter_line_blocks(path):
            for line in block.data.split(b"\n"):
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if record.get("post_hint") == "image" or record.get("is_gallery"):
                    authors.add(record["author"])
    return authors


def test_share_of_image_posters_with_a_history_is_near_the_config(linked_world):
    root, config = linked_world
    rows = load_generation_histories(root / "raw" / HISTORY_FILE)
    linked = set(rows.column("reddit_username").to_pylist())
    posters = _image_posters(root / "raw" / "reddit")
    assert linked <= posters  # only people who post images link an account
    share, n = config.prompt_history_share, len(posters)
    assert n > 100
    assert abs(len(linked) / n - share) < 4 * math.sqrt(share * (1 - share) / n)


def test_style_words_follow_the_users_planted_taste(linked_world):
    root, _ = linked_world
    truth = {u["author"]: u for u in pq.read_table(root / "truth" / "users.parquet").to_pylist()}
    rows = load_generation_histories(root / "raw" / HISTORY_FILE).to_pylist()
    clauses = style_clauses(phrasebook.load())
    rng = random.Random(0)
    names = list(truth)
    own = other = styled = plain = 0
    for row in rows:
        found = [clauses[c.strip()] for c in row["prompt"].split(",") if c.strip() in clauses]
        if not found:
            plain += 1
            continue
        styled += 1
        own += all(truth[row["reddit_username"]][TRUTH_COLUMN[a]] == label for a, label in found)
        stranger = truth[rng.choice(names)]
        other += all(stranger[TRUTH_COLUMN[a]] == label for a, label in found)
    # Most styled prompts carry only the user's own words (per-prompt variation flips a few near
    # level boundaries); a stranger's taste explains few of them; some prompts carry no style at all.
    assert own / styled > 0.6
    assert other / styled < 0.3
    assert 0.05 < plain / len(rows) < 0.4


def test_no_linked_users_means_no_file_and_stale_files_go(tmp_path):
    stale = tmp_path / "raw" / HISTORY_FILE
    stale.parent.mkdir(parents=True)
    stale.write_text('{"prompt": "old", "reddit_username": "someone"}\n')
    generate_world(WorldConfig(users=30, months=("2019-01",), seed=1, write_images=False, prompt_history_share=0.0),
                   tmp_path / "raw")
    assert not stale.exists()


def test_bad_history_config_is_refused(tmp_path):
    with pytest.raises(ValueError, match="prompt_history_share"):
        WorldConfig(prompt_history_share=1.5)
    for bad in ((0, 3), (5, 2)):
        with pytest.raises(ValueError, match="prompts_per_user"):
            WorldConfig(prompts_per_user=bad)
    cli = subprocess.run([sys.executable, "-m", "zipp_assets.simworld", "generate", "--out", str(tmp_path),
                          "--prompt-history-share", "-0.1"], capture_output=True, text=True)
    assert cli.returncode == 2 and "prompt_history_share" in cli.stderr
