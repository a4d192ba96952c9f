"""A phrasebook: every word the synthetic world writes, as data, loaded and validated.

The world's planted truth (who users are, their visual taste as numbers, which communities they
join) never depends on a phrasebook; only the words do: subreddit names, comment sentences and titles,
the statements of facts about a user, and the words for a taste. A phrasebook is a YAML file under
`zipp_assets/simworld/phrasebooks/`, chosen by `WorldConfig.phrasebook` (a name there or a path); its
format is documented in docs/phrasebooks.md. Every key the world needs is checked on load, with an
error that names the file and the key, so a new phrasebook fails loudly, never halfway through a world.

Like `taste_words` and `traits`, this module belongs to the world: nothing in the pipeline imports it.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from zipp_assets.simworld.content import THEMES
from zipp_assets.simworld.traits import (
    AGE_BANDS,
    FACT_KINDS,
    GENDERS,
    HOBBIES,
    LOCALES,
    PROFESSIONS,
    VISUAL_INTERESTS,
)

FORMAT = 1
PHRASEBOOK_DIR = Path(__file__).parent / "phrasebooks"
DEFAULT_PHRASEBOOK = "forum_us"

# The levels a taste falls in (see `taste_words`): the keys every phrasebook names in its own words.
HUE_ARCS = ("red", "orange", "yellow", "green", "teal", "blue", "purple", "pink")
SATURATION_KEYS = ("low", "mid", "high")
BRIGHTNESS_KEYS = ("dark", "mid", "bright")
CONTRAST_KEYS = ("soft", "hard")
LIGHTING_KEYS = tuple(f"{b}-{c}" for b in BRIGHTNESS_KEYS for c in CONTRAST_KEYS)
MOOD_KEYS = tuple(f"{s}-{b}" for s in SATURATION_KEYS for b in BRIGHTNESS_KEYS)
TEXTURE_KEYS = ("stripes", "dots", "checks", "noise", "rings")
ASPECTS = ("palette", "look", "lighting", "mood", "texture")
TRAIT_VALUES: dict[str, tuple[str, ...]] = {
    "age": AGE_BANDS,
    "gender": GENDERS,
    "locale": tuple(LOCALES),
    "profession": tuple(PROFESSIONS),
    "hobby": tuple(HOBBIES),
    "visual_interest": tuple(VISUAL_INTERESTS),
}
WITH_SUBREDDIT = ("locale", "profession", "hobby")
COMMENT_SLOTS_FROM_SUBREDDIT = ("thing", "other_thing")  # filled with the subreddit's topics
SUBREDDIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_]{1,20}$")  # Reddit's rule: 3-21 characters


class PhrasebookError(ValueError):
    """A phrasebook file that the world cannot write from; the message names the file and the key."""


@dataclass(frozen=True)
class Phrasebook:
    name: str
    path: Path
    description: str
    sources: str
    taste: dict
    traits: dict
    themes: dict[str, dict]
    subreddit_suffixes: tuple[str, ...]
    generic: dict
    comments: dict

    def theme_stems(self, theme: str) -> list[str]:
        return list(self.themes[theme]["stems"])

    def trait_subreddit(self, kind: str, value: str) -> str:
        return self.traits[kind]["values"][value]["subreddit"]


def template_slots(template: str) -> list[str]:
    """The slot names of a template, in order ('{opener}, that {thing}' -> ['opener', 'thing'])."""
    return [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]


def _slots(template: str) -> list[str]:
    try:
        return template_slots(template)
    except ValueError as exc:
        raise PhrasebookError(f"bad template {template!r}: {exc}") from None


class _Checker:
    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, problem: str) -> None:
        raise PhrasebookError(f"phrasebook {self.source}: {where}: {problem}")

    def mapping(self, data: object, where: str, keys: tuple[str, ...] | None = None) -> dict:
        if not isinstance(data, dict):
            self.fail(where, f"must be a mapping, not {type(data).__name__}")
        if keys is not None:
            missing = [k for k in keys if k not in data]
            extra = [k for k in data if k not in keys]
            if missing:
                self.fail(where, f"missing {', '.join(map(repr, missing))}")
            if extra:
                self.fail(where, f"unknown {', '.join(map(repr, extra))} (allowed: {', '.join(keys)})")
        return data

    def text(self, data: object, where: str) -> str:
        if not isinstance(data, str) or not data.strip():
            self.fail(where, "must be non-empty text")
        return data

    def texts(self, data: object, where: str, least: int = 1) -> list[str]:
        if not isinstance(data, list) or len(data) < least:
            self.fail(where, f"must be a list of at least {least} texts")
        for i, item in enumerate(data):
            self.text(item, f"{where}[{i}]")
        if len(set(data)) != len(data):
            self.fail(where, "repeats an entry")
        return data

    def template(self, data: object, where: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> str:
        text = self.text(data, where)
        try:
            slots = _slots(text)
        except PhrasebookError as exc:
            self.fail(where, str(exc))
        unknown = [s for s in slots if s not in allowed]
        if unknown:
            self.fail(where, f"{text!r} has unknown slot(s) {', '.join('{' + s + '}' for s in unknown)}"
                             f" (allowed: {', '.join('{' + s + '}' for s in allowed) or 'none'})")
        for slot in required:
            if slots.count(slot) != 1:
                self.fail(where, f"{text!r} must hold {{{slot}}} exactly once")
        return text

    def templates(self, data: object, where: str, allowed: tuple[str, ...], required: tuple[str, ...] = (),
                  least: int = 1) -> list[str]:
        items = self.texts(data, where, least)
        return [self.template(item, f"{where}[{i}]", allowed, required) for i, item in enumerate(items)]


def validate(data: object, source: str) -> dict:
    """Check a phrasebook's parsed YAML; raise PhrasebookError naming the first problem."""
    check = _Checker(source)
    top = check.mapping(data, "top level", ("format", "name", "description", "sources", "taste", "traits", "themes",
                                            "subreddit_suffixes", "generic", "comments"))
    if top["format"] != FORMAT:
        check.fail("format", f"must be {FORMAT}, not {top['format']!r}")
    if not isinstance(top["name"], str) or not re.fullmatch(r"[a-z][a-z0-9_]*", top["name"]):
        check.fail("name", "must be lower-case letters, digits and underscores")
    check.text(top["description"], "description")
    check.text(top["sources"], "sources")

    taste = check.mapping(top["taste"], "taste", ("hues", "saturation", "palette", "lighting", "mood", "look",
                                                  "texture", "remarks", "prompt_forms"))
    for key, keys in (("hues", HUE_ARCS), ("saturation", SATURATION_KEYS), ("lighting", LIGHTING_KEYS),
                      ("mood", MOOD_KEYS), ("look", MOOD_KEYS), ("texture", TEXTURE_KEYS)):
        words = check.mapping(taste[key], f"taste.{key}", keys)
        for level, word in words.items():
            check.text(word, f"taste.{key}.{level}")
        if len(set(words.values())) != len(words):
            check.fail(f"taste.{key}", "gives two levels the same words, so a remark could not tell them apart")
    check.template(taste["palette"], "taste.palette", ("saturation", "hue"), ("saturation", "hue"))
    remarks = check.mapping(taste["remarks"], "taste.remarks", ASPECTS)
    for aspect in ASPECTS:
        check.templates(remarks[aspect], f"taste.remarks.{aspect}", ("phrase",), ("phrase",))
    forms = check.mapping(taste["prompt_forms"], "taste.prompt_forms", ASPECTS)
    for aspect in ASPECTS:
        check.template(forms[aspect], f"taste.prompt_forms.{aspect}", ("label",), ("label",))

    traits = check.mapping(top["traits"], "traits", FACT_KINDS)
    for kind in FACT_KINDS:
        where = f"traits.{kind}"
        block = check.mapping(traits[kind], where, ("direct", "values"))
        check.templates(block["direct"], f"{where}.direct", ("age",) if kind == "age" else ("name",),
                        ("age",) if kind == "age" else ("name",))
        values = check.mapping(block["values"], f"{where}.values", TRAIT_VALUES[kind])
        fields = ("hints",) if kind == "age" else ("name", "hints", "subreddit") if kind in WITH_SUBREDDIT \
            else ("name", "hints")
        seen_hints: dict[str, str] = {}
        for value in TRAIT_VALUES[kind]:
            entry = check.mapping(values[value], f"{where}.values.{value}", fields)
            if "name" in entry:
                check.text(entry["name"], f"{where}.values.{value}.name")
            for hint in check.texts(entry["hints"], f"{where}.values.{value}.hints"):
                check.template(hint, f"{where}.values.{value}.hints", ())
                if hint in seen_hints:
                    check.fail(f"{where}.values.{value}.hints", f"{hint!r} is also a hint for {seen_hints[hint]!r}")
                seen_hints[hint] = value

    themes = check.mapping(top["themes"], "themes", THEMES)
    for theme, entry in themes.items():
        entry = check.mapping(entry, f"themes.{theme}", ("stems", "topics"))
        check.texts(entry["stems"], f"themes.{theme}.stems", least=2)
        check.texts(entry["topics"], f"themes.{theme}.topics", least=3)
    suffixes = top["subreddit_suffixes"]
    if not isinstance(suffixes, list) or not suffixes or not all(isinstance(s, str) for s in suffixes):
        check.fail("subreddit_suffixes", "must be a list of texts (an empty text is allowed)")
    generic = check.mapping(top["generic"], "generic", ("subreddits", "topics"))
    check.texts(generic["subreddits"], "generic.subreddits", least=1)
    check.texts(generic["topics"], "generic.topics", least=3)

    comments = check.mapping(top["comments"], "comments", ("sentences", "titles", "slots", "bot"))
    slots = check.mapping(comments["slots"], "comments.slots")
    for name, words in slots.items():
        if name in COMMENT_SLOTS_FROM_SUBREDDIT:
            check.fail(f"comments.slots.{name}", "is filled from the subreddit's topics; do not list it")
        check.texts(words, f"comments.slots.{name}", least=2)
    allowed = (*COMMENT_SLOTS_FROM_SUBREDDIT, *slots)
    check.templates(comments["sentences"], "comments.sentences", allowed, least=10)
    check.templates(comments["titles"], "comments.titles", allowed, least=3)
    check.template(comments["bot"], "comments.bot", ())

    _check_names(check, top)
    _check_phrases_apart(check, top)
    return top


def _check_names(check: _Checker, top: dict) -> None:
    """Subreddit names follow Reddit's rule, and no name belongs to two subreddits."""
    names: dict[str, str] = {}

    def add(name: str, where: str) -> None:
        if not SUBREDDIT_NAME.fullmatch(name):
            check.fail(where, f"{name!r} is not a subreddit name (3-21 letters, digits or underscores)")
        if name.lower() in names:
            check.fail(where, f"{name!r} is already the name of {names[name.lower()]}")
        names[name.lower()] = where

    for theme, entry in top["themes"].items():
        for stem in entry["stems"]:
            add(stem, f"themes.{theme}.stems")
    for kind in WITH_SUBREDDIT:
        for value, entry in top["traits"][kind]["values"].items():
            add(entry["subreddit"], f"traits.{kind}.values.{value}.subreddit")
    for name in top["generic"]["subreddits"]:
        add(name, "generic.subreddits")


def _check_phrases_apart(check: _Checker, top: dict) -> None:
    """No taste phrase holds another, so a remark names one level of one aspect and no more."""
    taste = top["taste"]
    every = list(palette_labels(taste).values())
    for aspect in ("look", "lighting", "mood", "texture"):
        every += list(taste[aspect].values())
    for label in set(every):
        if every.count(label) > 1:
            check.fail("taste", f"the phrase {label!r} names two levels, so a remark with it would say neither")
    phrases = taste_phrases(top)
    for a in phrases:
        for b in phrases:
            if a != b and re.search(rf"\b{re.escape(a)}\b", b):
                check.fail("taste", f"the phrase {a!r} ({phrases[a][0]}) is inside {b!r} ({phrases[b][0]}): "
                                    "a remark with the second would also state the first")


def palette_labels(taste: dict) -> dict[tuple[str, str], str]:
    """(saturation key, hue arc) -> the palette label ('dusty teal')."""
    return {(s, h): taste["palette"].format(saturation=taste["saturation"][s], hue=taste["hues"][h])
            for s in SATURATION_KEYS for h in HUE_ARCS}


def taste_phrases(top: dict) -> dict[str, tuple[str, str]]:
    """Every label a remark can carry -> (aspect, level key)."""
    taste = top["taste"]
    out = {label: ("palette", f"{s}-{h}") for (s, h), label in palette_labels(taste).items()}
    for aspect in ("look", "lighting", "mood", "texture"):
        out.update({label: (aspect, key) for key, label in taste[aspect].items()})
    return out


def _resolve(name_or_path: str) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.parent != Path("."):
        return candidate
    return PHRASEBOOK_DIR / f"{name_or_path}.yaml"


def available() -> list[str]:
    """The phrasebooks shipped with the world, by name."""
    return sorted(p.stem for p in PHRASEBOOK_DIR.glob("*.yaml"))


@lru_cache(maxsize=16)
def _load(path: Path) -> Phrasebook:
    if not path.is_file():
        shipped = ", ".join(available())
        raise PhrasebookError(f"no phrasebook at {path} (shipped: {shipped})")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise PhrasebookError(f"phrasebook {path}: not valid YAML: {exc}") from None
    top = validate(data, str(path))
    return Phrasebook(
        name=top["name"], path=path, description=top["description"], sources=top["sources"], taste=top["taste"],
        traits=top["traits"], themes=top["themes"], subreddit_suffixes=tuple(top["subreddit_suffixes"]),
        generic=top["generic"], comments=top["comments"],
    )


def load(name_or_path: str = DEFAULT_PHRASEBOOK) -> Phrasebook:
    """A phrasebook by its name under `phrasebooks/` ('forum_us') or by a path to a YAML file."""
    return _load(_resolve(name_or_path).resolve())
