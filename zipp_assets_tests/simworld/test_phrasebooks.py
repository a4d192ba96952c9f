"""Phrasebooks: the world's words as data, validated on load; the same world in other words."""

import json
import re
import subprocess
import sys
from itertools import combinations

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from zipp_assets.reddit.dumps import iter_line_blocks
from zipp_assets.simworld import phrasebook
from zipp_assets.simworld.phrasebook import PhrasebookError, available, load
from zipp_assets.simworld.world import WorldConfig, generate_world

BOOKS = available()


def _records(path):
    out = []
    for block in iter_line_blocks(path):
        for line in block.data.split(b"\n"):
            if line.strip():
                out.append(json.loads(line))
    return out


def _world(root, name):
    config = WorldConfig(users=80, months=("2019-01",), seed=7, write_images=False, malformed_rate=0.0,
                         phrasebook=name)
    generate_world(config, root / "raw", root / "truth")
    comments = _records(root / "raw" / "reddit" / "RC_2019-01.zst")
    posts = _records(root / "raw" / "reddit" / "RS_2019-01.zst")
    truth = {name: pq.read_table(root / "truth" / f"{name}.parquet") for name in ("users", "subreddits")}
    return comments, posts, truth


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    return {name: _world(tmp_path_factory.mktemp(name), name) for name in BOOKS}


def test_at_least_three_phrasebooks_ship_and_the_default_is_one_of_them():
    assert len(BOOKS) >= 3 and WorldConfig().phrasebook in BOOKS
    for name in BOOKS:
        book = load(name)
        assert book.name == name and book.sources.strip() and book.description.strip()


def test_a_phrasebook_changes_the_words_and_nothing_else(worlds):
    base_comments, base_posts, base_truth = worlds[BOOKS[0]]
    numbers = [c for c in base_truth["users"].column_names if not c.endswith(("_word", "_phrase"))
               and c != "trait_subreddits"]
    for name in BOOKS[1:]:
        comments, posts, truth = worlds[name]
        assert truth["users"].select(numbers).equals(base_truth["users"].select(numbers)), name
        assert [len(x) for x in (comments, posts)] == [len(base_comments), len(base_posts)]
        for ours, theirs in ((comments, base_comments), (posts, base_posts)):
            for a, b in zip(ours, theirs):
                assert (a["id"], a["author"], a["created_utc"], a["subreddit_id"]) == \
                       (b["id"], b["author"], b["created_utc"], b["subreddit_id"])
        # Same subreddits in the same places, under other names; different words throughout.
        kinds = [(r["kind"], r["trait"], r["community"]) for r in truth["subreddits"].to_pylist()]
        assert kinds == [(r["kind"], r["trait"], r["community"]) for r in base_truth["subreddits"].to_pylist()]
        names = set(truth["subreddits"]["subreddit"].to_pylist())
        assert not names & set(base_truth["subreddits"]["subreddit"].to_pylist())
        same = sum(a.get("body") == b.get("body") for a, b in zip(comments, base_comments)
                   if a.get("author") not in ("[deleted]",))
        assert same < 0.05 * len(comments), (name, same)


def _human_bodies(comments, truth):
    humans = set(truth["users"]["author"].to_pylist())
    return [(c["subreddit"], c["body"]) for c in comments if c.get("author") in humans]


@pytest.mark.parametrize("name", BOOKS)
def test_comments_are_sentences_on_topic_with_real_looking_lengths(worlds, name):
    comments, _, truth = worlds[name]
    book = load(name)
    bodies = _human_bodies(comments, truth)
    ascii_bodies = [re.sub(r"\s*[^\x00-\x7f].*$", "", b) for _, b in bodies]  # drop the non-ASCII dirt
    ended = np.mean([bool(re.search(r"[.!?]$", b)) for b in ascii_bodies if b])
    assert ended > 0.95, ended
    lengths = np.array([len(b.split()) for _, b in bodies])
    # Log-normal with median 15 words: the median lands near it, with a long right tail.
    assert 10 <= np.median(lengths) <= 22 and np.percentile(lengths, 90) > 2 * np.median(lengths), lengths
    theme_of = {r["subreddit"]: r for r in truth["subreddits"].to_pylist()}
    themed = [(s, b) for s, b in bodies if theme_of[s]["kind"] == "theme"]
    theme_topics = {theme: entry["topics"] for theme, entry in book.themes.items()}
    # A theme subreddit's comments talk about that theme's topics (community index -> theme order).
    theme_names = list(book.themes)
    on_topic = [any(t.lower() in b.lower() for t in theme_topics[theme_names[theme_of[s]["community"]]])
                for s, b in themed]
    assert np.mean(on_topic) > 0.7, np.mean(on_topic)
    other = [any(t.lower() in b.lower() for t in theme_topics[theme_names[(theme_of[s]["community"] + 1) % 12]])
             for s, b in themed]
    assert np.mean(other) < 0.1


def _content_words(book):
    """Every word the phrasebook writes (values only, not keys or its description)."""
    text = []

    def walk(node):
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        elif isinstance(node, str):
            text.append(node)

    data = yaml.safe_load(book.path.read_text(encoding="utf-8"))
    walk({k: v for k, v in data.items() if k not in ("description", "sources", "name")})
    words = set(re.findall(r"[a-z][a-z'-]{3,}", re.sub(r"\{[a-z_]+\}", " ", " ".join(text).lower())))
    return words


def test_phrasebooks_share_little_vocabulary():
    """Words of four letters or more that two phrasebooks both write: a small share of either's."""
    vocab = {name: _content_words(load(name)) for name in BOOKS}
    for a, b in combinations(BOOKS, 2):
        shared = vocab[a] & vocab[b]
        jaccard = len(shared) / len(vocab[a] | vocab[b])
        assert jaccard < 0.3, (a, b, round(jaccard, 3), sorted(shared))
    # Their taste words (the labels a remark carries, the levels' names) share almost nothing.
    labels = {name: set(phrasebook.taste_phrases({"taste": load(name).taste})) for name in BOOKS}
    for a, b in combinations(BOOKS, 2):
        assert not labels[a] & labels[b], (a, b)


# --- bad input --------------------------------------------------------------------------------------


def _good():
    return yaml.safe_load(load("forum_us").path.read_text(encoding="utf-8"))


def _write(tmp_path, data, name="book.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def _broken(**changes):
    def apply(data):
        for dotted, value in changes.items():
            keys = dotted.split("__")
            node = data
            for key in keys[:-1]:
                node = node[key]
            if value is _DELETE:
                del node[keys[-1]]
            else:
                node[keys[-1]] = value
        return data
    return apply


_DELETE = object()
BAD = [
    (_broken(taste__hues=_DELETE), r"taste: missing 'hues'"),
    (_broken(colour=1), r"top level: unknown 'colour'"),
    (_broken(format=2), r"format: must be 1"),
    (_broken(taste__saturation__mid=True), r"taste.saturation.mid: must be non-empty text"),
    (_broken(taste__hues__teal="blue"), r"taste.hues: gives two levels the same words"),
    (_broken(taste__remarks__mood=["I like {phrase} and {phrase}."]), r"\{phrase\} exactly once"),
    (_broken(taste__remarks__mood=["I like {colour}."]), r"unknown slot\(s\) \{colour\}"),
    (_broken(taste__remarks__mood=["I like {phrase."]), r"taste.remarks.mood\[0\]"),
    (_broken(comments__sentences=["Nice {thing}."]), r"at least 10"),
    (_broken(comments__slots__thing=["a", "b"]), r"filled from the subreddit's topics"),
    (_broken(traits__locale__values__London__subreddit="Chicago Chat"), r"not a subreddit name"),
    (_broken(traits__locale__values__London__subreddit="ShootFilm"), r"'ShootFilm' is already the name"),
    (_broken(traits__hobby__values__chess=_DELETE), r"traits.hobby.values: missing 'chess'"),
    (_broken(traits__profession__direct=["I work in an office."]), r"\{name\} exactly once"),
    (_broken(taste__texture__dots="candlelight"), r"'candlelight' names two levels"),
    (_broken(taste__texture__dots="faded"), r"'faded' .* is inside 'faded red'"),
]


@pytest.mark.parametrize("change,message", BAD)
def test_a_bad_phrasebook_is_refused_with_the_key_named(tmp_path, change, message):
    path = _write(tmp_path, change(_good()))
    with pytest.raises(PhrasebookError, match=message) as refused:
        load(str(path))
    assert str(path) in str(refused.value)
    with pytest.raises(ValueError, match=message):  # the config refuses it before any world is written
        WorldConfig(phrasebook=str(path))


def test_unreadable_and_missing_phrasebooks_are_refused(tmp_path):
    with pytest.raises(PhrasebookError, match="no phrasebook at .*klingon.yaml.*shipped: british_chat"):
        load("klingon")
    broken = tmp_path / "broken.yaml"
    broken.write_text("taste: [unclosed", encoding="utf-8")
    with pytest.raises(PhrasebookError, match="not valid YAML"):
        load(str(broken))
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(PhrasebookError, match="top level: must be a mapping"):
        load(str(listed))


def test_anyone_can_write_another_phrasebook(tmp_path):
    data = _good()
    data["name"] = "my_words"
    data["taste"]["saturation"] = {"low": "hushed", "mid": "plain", "high": "shouty"}
    path = _write(tmp_path, data, "my_words.yaml")
    config = WorldConfig(users=20, months=("2019-01",), write_images=False, phrasebook=str(path))
    generate_world(config, tmp_path / "raw", tmp_path / "truth")
    palettes = set(pq.read_table(tmp_path / "truth" / "users.parquet")["palette_word"].to_pylist())
    assert palettes and all(p.split()[0] in ("hushed", "plain", "shouty") for p in palettes)


def test_the_cli_takes_a_phrasebook_and_refuses_a_bad_one(tmp_path):
    def run(*extra):
        return subprocess.run([sys.executable, "-m", "zipp_assets.simworld", "generate", "--out", str(tmp_path / "raw"),
                               "--users", "15", "--months", "2019-01", "--no-images", *extra],
                              capture_output=True, text=True, timeout=300)

    done = run("--phrasebook", "trade_notes")
    assert done.returncode == 0, done.stderr[-2000:]
    names = set(pq.read_table(tmp_path / "truth" / "subreddits.parquet")["subreddit"].to_pylist())
    assert "C41Lab" in names
    refused = run("--phrasebook", "klingon")
    assert refused.returncode == 2 and "no phrasebook at" in refused.stderr
