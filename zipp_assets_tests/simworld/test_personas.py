"""The world plants personal taste, persona attributes and their weak traces, with real-world shapes."""

import colorsys
import io
import json
import re
from collections import Counter, defaultdict

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from zipp_assets.reddit.dumps import iter_line_blocks
from zipp_assets.reddit.image_urls import extract_image_urls, image_cache_path
from zipp_assets.simworld import phrasebook, taste_words, traits
from zipp_assets.simworld.world import WorldConfig, build_world, generate_world, truth_tables

BOTS = {"AutoModerator", "[deleted]"}


def _records(path):
    out = []
    for block in iter_line_blocks(path):
        for line in block.data.split(b"\n"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


@pytest.fixture(scope="module")
def persona_world(tmp_path_factory):
    """400 users over two months, no images: enough comments to count traces."""
    root = tmp_path_factory.mktemp("persona_world")
    config = WorldConfig(users=400, months=("2019-01", "2019-02"), seed=5, comments_per_user_month=8,
                         write_images=False, malformed_rate=0.0)
    generate_world(config, root / "raw", root / "truth")
    comments = [r for m in config.months for r in _records(root / "raw" / "reddit" / f"RC_{m}.zst")]
    posts = [r for m in config.months for r in _records(root / "raw" / "reddit" / f"RS_{m}.zst")]
    truth = {name: pq.read_table(root / "truth" / f"{name}.parquet").to_pylist()
             for name in ("users", "subreddits", "communities", "bots")}
    humans = {u["author"]: u for u in truth["users"]}
    return {"comments": comments, "posts": posts, "truth": truth, "humans": humans}


def _human_comments(world):
    return [(c["author"], c["body"]) for c in world["comments"] if c.get("author") in world["humans"]]


# --- personal taste -------------------------------------------------------------------------------


def _circular_mean(hues, weights):
    angles = 2 * np.pi * np.asarray(hues)
    return (np.arctan2(np.dot(weights, np.sin(angles)), np.dot(weights, np.cos(angles))) / (2 * np.pi)) % 1.0


def _agreement(a, b):
    """Mean cosine of the hue difference: 1 when equal, about 0 when unrelated."""
    return float(np.mean(np.cos(2 * np.pi * (np.asarray(a) - np.asarray(b)))))


def _tables(share):
    world = build_world(WorldConfig(users=400, months=("2019-01",), seed=9, personal_share=share))
    tables = truth_tables(world)
    return tables["users"].to_pylist(), tables["communities"].to_pylist()


def test_personal_share_moves_taste_from_the_community_mix_to_a_personal_component():
    results = {}
    for share in (0.0, 0.5, 1.0):
        users, communities = _tables(share)
        # The community mixture computed here from the communities' styles, independently of the world.
        mix_hue = [_circular_mean([communities[c]["hue"] for c in u["communities"]], u["community_weights"])
                   for u in users]
        mix_sat = [np.dot(u["community_weights"], [communities[c]["saturation"] for c in u["communities"]])
                   for u in users]
        taste_hue = [u["taste_hue"] for u in users]
        taste_sat = [u["taste_saturation"] for u in users]
        results[share] = (_agreement(taste_hue, mix_hue), float(np.corrcoef(taste_sat, mix_sat)[0, 1]), users)
        assert all(u["personal_share"] == share for u in users)
        if share == 0.0:
            # Exactly the mixture, hue on the circle (a linear mean would miss users straddling red).
            assert np.allclose(np.cos(2 * np.pi * (np.array(taste_hue) - mix_hue)), 1.0, atol=1e-9)
            assert np.allclose(taste_sat, mix_sat)
            assert all(u["taste_pattern"] in {communities[c]["pattern"] for c in u["communities"]} for u in users)
        if share == 1.0:
            personal_hue = np.array([u["personal_taste_hue"] for u in users])
            assert np.allclose(np.cos(2 * np.pi * (np.array(taste_hue) - personal_hue)), 1.0)
    assert results[0.0][0] > 0.999 and results[0.0][1] > 0.999
    assert 0.3 < results[0.5][0] < 0.95
    # At share 1 the taste says nothing about the user's communities.
    assert abs(results[1.0][0]) < 0.15 and abs(results[1.0][1]) < 0.15
    # The same seed plants the same people and personal components at any share.
    assert [u["personal_taste_hue"] for u in results[0.0][2]] == [u["personal_taste_hue"] for u in results[1.0][2]]
    assert [u["age"] for u in results[0.0][2]] == [u["age"] for u in results[1.0][2]]


def _mean_hsv(png: bytes):
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=float).reshape(-1, 3).mean(axis=0) / 255
    return colorsys.rgb_to_hsv(*rgb)


def test_images_follow_the_posters_own_taste(tmp_path):
    # Share 1: taste is independent of communities, so images drawn from community styles would fail.
    config = WorldConfig(users=60, months=("2019-01",), seed=4, submissions_per_user_month=5, personal_share=1.0)
    generate_world(config, tmp_path / "raw", tmp_path / "truth")
    taste = {u["author"]: u for u in pq.read_table(tmp_path / "truth" / "users.parquet").to_pylist()}
    seen = defaultdict(list)
    for post in _records(tmp_path / "raw" / "reddit" / "RS_2019-01.zst"):
        if post.get("author") not in taste or post.get("crosspost_parent_list"):
            continue
        for url, _ in extract_image_urls(post):
            path = image_cache_path(tmp_path / "raw" / "images", url)
            if path.is_file() and len(seen[post["author"]]) < 4:
                seen[post["author"]].append(_mean_hsv(path.read_bytes()))
    users = [a for a, images in seen.items() if len(images) >= 2]
    assert len(users) >= 20
    own_hue, other_hue, own_value, planted_value = [], [], [], []
    rng = np.random.default_rng(0)
    for author in users:
        hue = _circular_mean([h for h, _, _ in seen[author]], np.ones(len(seen[author])))
        other = taste[users[(users.index(author) + 1 + int(rng.integers(len(users) - 1))) % len(users)]]
        own_hue.append(np.cos(2 * np.pi * (hue - taste[author]["taste_hue"])))
        other_hue.append(np.cos(2 * np.pi * (hue - other["taste_hue"])))
        own_value.append(np.mean([v for _, _, v in seen[author]]))
        planted_value.append(taste[author]["taste_brightness"])
    assert np.mean(own_hue) > 0.9 and np.mean(own_hue) > np.mean(other_hue) + 0.5
    assert np.mean(np.array(own_hue) > np.array(other_hue)) > 0.8
    assert np.corrcoef(own_value, planted_value)[0, 1] > 0.8


def test_contrast_spreads_pixels_without_moving_the_mean_colour():
    from zipp_assets.simworld.render import Style, render_png

    def pixels(contrast):
        rng = np.random.default_rng(1)
        png = render_png(Style(0.6, 0.6, 0.5, "stripes", 4.0, contrast=contrast), rng)
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=float) / 255

    flat, punchy = pixels(0.05), pixels(0.95)
    spread = [x.reshape(-1, 3).std(axis=0).mean() for x in (flat, punchy)]
    assert spread[1] > 2 * spread[0]
    assert abs(colorsys.rgb_to_hsv(*punchy.reshape(-1, 3).mean(0))[0] - 0.6) < 0.03


# --- traces in comments ---------------------------------------------------------------------------

def _statements_in(body, statements):
    """The statements a comment carries, longest first, none counted twice inside another."""
    found = []
    for text in sorted(statements, key=len, reverse=True):
        if text in body and not any(text in longer for longer in found):
            found.append(text)
    return found


def test_a_minority_of_comments_state_facts_that_match_the_planted_truth(persona_world):
    book = phrasebook.load()
    comments = _human_comments(persona_world)
    humans = persona_world["humans"]
    statements = {kind: traits.fact_statements(book, kind) for kind in traits.FACT_KINDS}
    with_fact, kinds, indirect = 0, Counter(), 0
    for author, body in comments:
        user = humans[author]
        found = [(kind, text, statements[kind][text]) for kind in traits.FACT_KINDS
                 for text in _statements_in(body, statements[kind])]
        with_fact += bool(found)
        for kind, text, value in found:
            kinds[kind] += 1
            direct = text not in {h for entry in book.traits[kind]["values"].values() for h in entry["hints"]}
            indirect += not direct
            if kind == "age" and direct:
                assert int(value) == user["age"]
            elif kind == "age":
                assert value == user["age_band"], (text, user["age_band"])
            else:
                assert value == user[kind], (kind, text, user[kind])
    assert set(kinds) == set(traits.FACT_KINDS)
    assert 0.3 < indirect / sum(kinds.values()) < 0.7  # about half said the indirect way
    share = with_fact / len(comments)
    assert 0.01 < share < 0.06, share


def test_a_minority_of_comments_state_aesthetic_preferences_from_the_users_taste(persona_world):
    book = phrasebook.load()
    comments = _human_comments(persona_world)
    humans = persona_world["humans"]
    column = {"palette": "palette_word", "look": "look_phrase", "lighting": "lighting_word", "mood": "mood_word",
              "texture": "texture_word"}
    remarks = {template.format(phrase=text): (aspect, label)
               for text, (aspect, label) in taste_words.all_phrases(book).items()
               for template in book.taste["remarks"][aspect]}
    with_remark, aspects = 0, Counter()
    for author, body in comments:
        found = [pair for sentence, pair in remarks.items() if sentence in body]
        with_remark += bool(found)
        for aspect, label in found:
            aspects[aspect] += 1
            assert humans[author][column[aspect]] == label, (author, aspect, label)
    assert set(aspects) == set(column)
    share = with_remark / len(comments)
    assert 0.01 < share < 0.06, share


def test_taste_words_follow_the_numbers_and_never_overlap():
    from zipp_assets.simworld.render import Style

    night = Style(0.62, 0.9, 0.2, "noise", 3.0, contrast=0.8)
    assert taste_words.levels(night) == {"palette": "high-blue", "look": "high-dark", "lighting": "dark-hard",
                                         "mood": "high-dark", "texture": "noise"}
    pastel = taste_words.levels(Style(0.92, 0.2, 0.85, "dots", 3.0, contrast=0.2))
    assert pastel["palette"] == "low-pink" and pastel["look"] == "low-bright" and pastel["lighting"] == "bright-soft"
    assert taste_words.hue_arc(0.01) == taste_words.hue_arc(0.99) == "red"
    for name in phrasebook.available():
        book = phrasebook.load(name)
        words = taste_words.labels(night, book)
        assert words["lighting"] == book.taste["lighting"]["dark-hard"]
        assert words["palette"] == book.taste["palette"].format(saturation=book.taste["saturation"]["high"],
                                                                hue=book.taste["hues"]["blue"])
        phrases = list(taste_words.all_phrases(book))
        assert len(phrases) == 24 + 6 + 9 + 9 + 5
        assert not [(a, b) for a in phrases for b in phrases if a != b and re.search(rf"\b{re.escape(a)}\b", b)]
        remark = taste_words.aesthetic_remark(night, np.random.default_rng(0), book)
        assert sum(bool(re.search(rf"\b{re.escape(p)}\b", remark)) for p in phrases) == 1, (name, remark)


def test_truth_labels_are_the_vocabularys_words_for_the_planted_taste(persona_world):
    from zipp_assets.simworld.render import Style

    book = phrasebook.load()
    for user in persona_world["truth"]["users"][:50]:
        style = Style(user["taste_hue"], user["taste_saturation"], user["taste_brightness"], user["taste_pattern"],
                      user["taste_frequency"], user["taste_contrast"])
        words = taste_words.labels(style, book)
        assert (user["palette_word"], user["lighting_word"], user["mood_word"], user["texture_word"],
                user["look_phrase"]) == (words["palette"], words["lighting"], words["mood"], words["texture"],
                                         words["look"])


# --- traces in subreddits -------------------------------------------------------------------------


def test_trait_subreddits_are_joined_only_by_users_with_the_attribute_and_only_by_some(persona_world):
    kind_of = {s["subreddit"]: (s["kind"], s["trait"]) for s in persona_world["truth"]["subreddits"]}
    assert {k for k, _ in kind_of.values()} == {"theme", "generic", "locale", "profession", "hobby"}
    assert all(s["community"] == -1 for s in persona_world["truth"]["subreddits"] if s["kind"] != "theme")
    humans = persona_world["humans"]
    posted = defaultdict(set)  # kind -> users who posted in their subreddit of that kind
    for record in persona_world["comments"] + persona_world["posts"]:
        kind, value = kind_of[record["subreddit"]]
        author = record.get("author")
        if kind in traits.TRAIT_KINDS and author in humans:
            assert humans[author][kind] == value, (author, record["subreddit"])
            posted[kind].add(author)
    for kind in traits.TRAIT_KINDS:
        joined = [u for u in humans.values() if any(kind_of[s] == (kind, u[kind]) for s in u["trait_subreddits"])]
        assert 0.1 < len(joined) / len(humans) < 0.35, kind
        assert 0 < len(posted[kind]) <= len(joined) and posted[kind] <= {u["author"] for u in joined}
    for user in humans.values():
        assert all(kind_of[s][1] == user[kind_of[s][0]] for s in user["trait_subreddits"])


def test_traits_are_from_the_fixed_lists(persona_world):
    users = persona_world["truth"]["users"]
    for u in users:
        assert u["age_band"] in traits.AGE_BANDS and u["gender"] in traits.GENDERS
        assert traits.LOCALES[u["locale"]] == u["region"]
        assert u["profession"] in traits.PROFESSIONS and u["hobby"] in traits.HOBBIES
        assert u["visual_interest"] in traits.VISUAL_INTERESTS
    assert len(traits.VISUAL_INTERESTS) == 10
    # Weakly tied to communities: more often the primary community's category than chance, far from always.
    communities = persona_world["truth"]["communities"]
    same = np.mean([u["visual_interest"] == communities[u["primary_community"]]["visual_interest"] for u in users])
    assert 0.2 < same < 0.6


# --- shapes of activity ---------------------------------------------------------------------------


def test_activity_is_heavy_tailed(persona_world):
    counts = Counter(author for author, _ in _human_comments(persona_world))
    per_user = np.sort([counts.get(a, 0) for a in persona_world["humans"]])[::-1]
    top_tenth = per_user[: len(per_user) // 10].sum() / per_user.sum()
    assert top_tenth > 0.3, top_tenth  # equal activity would give about 0.15 at these counts


def test_subreddit_popularity_is_zipf_like(persona_world):
    kind_of = {s["subreddit"]: s["kind"] for s in persona_world["truth"]["subreddits"]}
    counts = Counter(r["subreddit"] for r in persona_world["comments"] + persona_world["posts"]
                     if r.get("author") in persona_world["humans"] and kind_of[r["subreddit"]] in ("theme", "generic"))
    values = np.sort(list(counts.values()))[::-1]
    ranks = np.arange(1, len(values) + 1)
    slope = np.polyfit(np.log(ranks), np.log(values), 1)[0]
    assert -3.0 < slope < -0.6, slope


def test_users_are_in_one_to_three_communities(persona_world):
    sizes = Counter(len(u["communities"]) for u in persona_world["truth"]["users"])
    assert set(sizes) == {1, 2, 3}
    assert sizes[1] > sizes[2] > sizes[3]


# --- the vocabulary stays in the world ------------------------------------------------------------

WORLD_ONLY = ("taste_words", "traits", "civitai", "phrasebook")


def _imports_world_only(source: str) -> list[str]:
    pattern = re.compile(r"zipp_assets\.simworld(?:\.|\s+import\s+[\w\s,()]*?\b)(" + "|".join(WORLD_ONLY) + r")\b")
    return pattern.findall(source)


def test_the_vocabulary_is_imported_by_nothing_in_the_pipeline():
    from pathlib import Path

    import zipp_assets

    assert _imports_world_only("from zipp_assets.simworld.taste_words import labels") == ["taste_words"]
    assert _imports_world_only("from zipp_assets.simworld import (\n    traits,\n)") == ["traits"]
    assert _imports_world_only("from zipp_assets.simworld.world import WorldConfig") == []
    package = Path(zipp_assets.__file__).parent
    offenders = {str(p.relative_to(package)): found for p in package.rglob("*.py")
                 if "simworld" not in p.relative_to(package).parts
                 and (found := _imports_world_only(p.read_text(encoding="utf-8")))}
    assert not offenders
