"""The pipeline's offline stand-ins hold no phrasebook's templates, theme words or level mappings.

Stand-ins: the template persona rules (interest keywords, self-disclosure regexes), the offline
renderer's vocabulary and the ZIPBench de-styler's style words. Each is held against every shipped
phrasebook; what they share is listed, and every shared item must be in the explicit lists below,
each a public vocabulary the stand-in cites (or a common noun that names a picture's subject, not a
level). A shared item outside them fails the test, as does a stand-in that reads a phrasebook's
levels back from its taste words.
"""

import re

import numpy as np
import pytest

from zipp_assets.imaging.prompt_vocabulary import named_attributes
from zipp_assets.personas import template_rules
from zipp_assets.simworld import phrasebook, taste_words
from zipp_assets.simworld.phrasebook import available, load
from zipp_assets.simworld.render import PATTERNS, Style
from zipp_assets.simworld.traits import FACT_KINDS
from zipp_assets.zipbench.prompts import STYLE_WORDS

# Shared words allowed, by the public list each comes from (see the stand-ins' module docstrings).
ALLOWED_SHARED = {
    "CSS Color 4 named colours": {"red", "orange", "yellow", "green", "teal", "turquoise", "blue", "purple", "pink",
                                  "rose", "black", "white", "grey"},
    "ISCC-NBS modifiers and CIE brightness poles": {"dark", "dim", "brilliant"},
    "photographic terms and style nouns": {"underexposed", "night", "film", "light", "lit", "lighting", "look",
                                           "mood", "colour", "color", "palette", "cool"},
    "textile pattern names": {"stripes", "tartan", "spots", "spotted", "checks"},
    # The renderer's subject nouns (ZIPBench's eight categories) name what is pictured, never a level.
    "subject nouns": {"beach", "market", "street", "streets", "city", "bird", "bottle", "bowl", "tower", "alley",
                      "food", "plate", "forest", "deer", "lake", "mountain", "road", "river", "face", "phone",
                      "cathedral", "product", "packshot"},
}
ALLOWED = set().union(*ALLOWED_SHARED.values())
# Self-disclosure lead-ins (the words before the stated value) that the rules share with phrasebook
# templates: generic English ("I work as a ..."), the kind RedDust's patterns list. A rule that also
# knows how a template goes on after the value ("... a few years ago") holds the template.
ALLOWED_LEAD_INS = {"i'm", "i work as a", "i live in", "here in", "as a", "as a mom", "as a dad"}
ALLOWED_TAILS = {"by trade"}  # "I'm a nurse by trade": an English idiom, in the rules before any phrasebook
RULES = ("_AGE", "_JOB", "_PLACE", "_GENDER", "_HOBBY", "_TASTE")
SAMPLE_VALUES = {"age": "34", "name": "Xqz", "phrase": "Xqz", "thing": "Xqz", "other_thing": "Xqz"}


def _taste_labels(book):
    return list(phrasebook.taste_phrases({"taste": book.taste}))


def _theme_texts(book):
    # Subreddit stems split at case changes, so "PixelBodgers" reads as "Pixel Bodgers".
    return [re.sub(r"([a-z])([A-Z])", r"\1 \2", text) for entry in book.themes.values()
            for text in [*entry["stems"], *entry["topics"]]]


def _templates(book):
    texts = [*book.comments["sentences"], *book.comments["titles"],
             *(t for ts in book.taste["remarks"].values() for t in ts)]
    for kind in FACT_KINDS:
        texts += book.traits[kind]["direct"]
        texts += [hint for entry in book.traits[kind]["values"].values() for hint in entry["hints"]]
    return texts


def _words(text):
    return re.findall(r"[a-z0-9'-]+", text.lower())


def shared_with_stand_ins(book):
    """(where in the phrasebook, which stand-in, the shared phrase) for every overlap."""
    found = set()
    for where, texts in (("taste words", _taste_labels(book)), ("theme words", _theme_texts(book)),
                         ("templates", [re.sub(r"\{\w+\}", " ", t) for t in _templates(book)])):
        for text in texts:
            found |= {(where, "renderer", phrase) for phrase in named_attributes(text).matched}
            found |= {(where, "de-styler", word) for word in _words(text) if word in STYLE_WORDS}
    return found


def rule_matches(book):
    """(rule, template, lead-in words, tail words) for every rule that matches a phrasebook template."""
    out = []
    for template in _templates(book):
        parts = re.split(r"(\{\w+\})", template)
        filled, literal_spans, cursor = "", [], 0
        for part in parts:
            text = SAMPLE_VALUES.get(part[1:-1], "Xqz") if part.startswith("{") else part
            if not part.startswith("{"):
                literal_spans.append((cursor, cursor + len(text)))
            filled += text
            cursor += len(text)
        slot_ends = [m.end() for m in re.finditer("Xqz", filled)]
        for name in RULES:
            match = getattr(template_rules, name).search(filled)
            if not match:
                continue
            literal = "".join(filled[max(a, match.start()):min(b, match.end())] for a, b in literal_spans
                              if a < match.end() and b > match.start())
            first_slot_end = min((e for e in slot_ends if match.start() < e <= match.end()), default=None)
            tail = filled[first_slot_end:match.end()] if first_slot_end else ""
            lead = filled[match.start():match.end()].split("Xqz")[0] if first_slot_end else literal
            out.append((name, template, " ".join(_words(lead)), " ".join(_words(tail))))
    return out


@pytest.mark.parametrize("name", available())
def test_the_renderer_and_de_styler_share_only_cited_public_words(name):
    shared = shared_with_stand_ins(load(name))
    outside = sorted(item for item in shared if item[2] not in ALLOWED)
    assert not outside, f"{name} shares words with a stand-in outside its cited lists: {outside}"


@pytest.mark.parametrize("name", available())
def test_the_template_rules_hold_no_phrasebook_template(name):
    book = load(name)
    for rule, template, lead, tail in rule_matches(book):
        assert len(lead.split()) <= 4 and (len(lead.split()) < 3 or lead in ALLOWED_LEAD_INS), (rule, template, lead)
        assert not tail or tail in ALLOWED_TAILS, (rule, template, tail)
    stems = [stem.lower() for entry in book.themes.values() for stem in entry["stems"]]
    keywords = [k for words in template_rules.INTEREST_KEYWORDS.values() for k in words]
    assert not [(k, s) for k in keywords for s in stems if k in s]  # no theme's subreddit is in the table


def renderer_read_back(book, draws=2000, seed=0):
    """Per attribute: the share of random tastes whose phrasebook words the renderer reads a level
    from, and how often that level is the planted one."""
    rng = np.random.default_rng(seed)
    named = {a: [] for a in ("saturation", "brightness", "contrast", "pattern")}
    for _ in range(draws):
        style = Style(rng.uniform(0, 1), rng.uniform(0.2, 0.95), rng.uniform(0.25, 0.9),
                      PATTERNS[int(rng.integers(len(PATTERNS)))], 3.0, rng.uniform(0.1, 0.9))
        values = named_attributes(", ".join(taste_words.labels(style, book).values())).values
        planted = {"saturation": style.saturation > 0.5, "brightness": style.brightness > 0.5,
                   "contrast": style.contrast > 0.5, "pattern": style.pattern.replace("noise", "grain")}
        for attribute in named:
            if attribute in values:
                read = values[attribute] if attribute == "pattern" else values[attribute] > 0.5
                named[attribute].append(read == planted[attribute])
    return {a: (len(v) / draws, float(np.mean(v)) if v else float("nan")) for a, v in named.items()}


@pytest.mark.parametrize("name", available())
def test_the_renderer_does_not_read_a_phrasebooks_levels_back(name):
    """Reading a level needs the phrasebook's mapping: the old renderer read brightness and pattern
    back for every taste (1.00). Here no attribute is read right for 90% of tastes."""
    for attribute, (coverage, agreement) in renderer_read_back(load(name)).items():
        assert coverage * (agreement if coverage else 0.0) < 0.9, (name, attribute, coverage, agreement)


def test_the_checks_catch_a_stand_in_that_knows_the_words(monkeypatch):
    """A de-styler holding a phrasebook's taste words, or a rule holding a template's tail, fails."""
    book = load("forum_us")
    monkeypatch.setattr("zipp_assets_tests.simworld.test_standins.STYLE_WORDS", STYLE_WORDS | {"faded", "wistful"})
    planted = {("taste words", "de-styler", "faded"), ("taste words", "de-styler", "wistful")}
    assert planted <= shared_with_stand_ins(book)
    monkeypatch.setattr(template_rules, "_HOBBY", re.compile(r"I picked up ([A-Za-z]+) a while back and love it"))
    tails = [tail for rule, _, _, tail in rule_matches(book) if rule == "_HOBBY"]
    assert tails and tails[0] == "a while back and love it"
