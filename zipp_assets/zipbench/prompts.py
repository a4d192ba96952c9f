"""ZIPBench's base prompts: a versioned set spread over subject categories, and de-styled history.

A base prompt names content only (what is in the picture), never how it looks: style is what the
rewriting methods add, so a base prompt that already carried a palette would blur the comparison.
Where a user has a prompt history, de-styled versions of their own prompts join the set: the first
comma-separated clause (Civitai prompts put the subject first, tags after) with quality tags and
style words removed, by the lexicon below. The lexicon is built from public colour, light, art-style
and photography vocabularies (cited below); it is not the synthetic world's.
"""

from __future__ import annotations

import hashlib
import re

from zipp_assets.imaging.prompt_vocabulary import (
    BRIGHTNESS_WORDS,
    COLOUR_ALIASES,
    CONTRAST_WORDS,
    CSS_NAMED_COLOURS,
    HUE_RANGES,
    PATTERN_WORDS,
    SATURATION_WORDS,
)

PROMPT_SET_VERSION = "zipbench-prompts-v1"
HELDOUT_CAP = 1000  # characters of a held-out base prompt

# Content-only prompts, four per category, written for this set.
BASE_PROMPTS: dict[str, tuple[str, ...]] = {
    "portrait": ("a portrait of an old fisherman", "a portrait of a young woman reading", "a child laughing",
                 "a musician tuning a guitar"),
    "street": ("a busy street market", "a bicycle leaning against a wall", "a tram crossing an intersection",
               "a cafe terrace at the corner of a street"),
    "landscape": ("a mountain lake", "rolling hills with a single tree", "a desert canyon", "a rocky coastline"),
    "animal": ("a fox in the snow", "a cat sleeping on a windowsill", "a heron standing in shallow water",
               "a horse in a field"),
    "food": ("a bowl of ramen", "a loaf of fresh bread on a table", "a plate of tacos", "a stack of pancakes"),
    "architecture": ("a lighthouse", "a modern glass office building", "an old stone bridge", "a spiral staircase"),
    "product": ("a mechanical keyboard on a desk", "a wristwatch", "a pair of sneakers", "a ceramic teapot"),
    "fantasy": ("a dragon perched on a castle tower", "a floating island with waterfalls", "a wizard's library",
                "a giant robot in a forest"),
}
CATEGORIES = tuple(BASE_PROMPTS)

QUALITY_TAGS = frozenset({
    "masterpiece", "best quality", "high quality", "highly detailed", "ultra detailed", "detailed", "8k", "4k", "hd",
    "uhd", "hdr", "trending on artstation", "award winning", "photorealistic", "realistic", "sharp focus",
    "intricate", "intricate details", "professional", "octane render", "unreal engine",
})
# Words that say how a picture looks; a clause made only of these (and fillers) is style, not content.
# Taken from public vocabularies, never from the synthetic world's phrasebooks (a test lists what they
# share): the offline renderer's colour, tone, light and texture words (CSS Color 4 named colours,
# ISCC-NBS modifiers, photographic lighting terms: see `imaging.prompt_vocabulary`), art movements
# and styles as named in Tate's glossary of art terms (https://www.tate.org.uk/art/art-terms), and
# photographic technique terms (bokeh, depth of field, long exposure, HDR, tilt-shift, double exposure,
# sepia toning, cross processing, as the Wikipedia articles of those names define them). The
# nouns that say "this clause is about style" (tone, palette, lighting, mood, aesthetic) are the
# headings of those glossaries. Written from memory of the sources, not fetched.
ART_STYLE_TERMS = (
    "impressionism impressionist expressionism expressionist cubism cubist surrealism surrealist surreal "
    "baroque rococo romanticism minimalism minimalist pointillism pointillist art-nouveau art-deco deco nouveau "
    "pop-art ukiyo-e fauvism fauvist futurism futurist bauhaus constructivism abstract photorealism hyperrealism "
    "realism gothic renaissance vaporwave lowbrow naive primitivism op-art"
).split()
PHOTO_TECHNIQUE_TERMS = (
    "bokeh depth-of-field long-exposure hdr tilt-shift double-exposure sepia cross-processed vignette vignetting "
    "lens-flare macro panoramic fisheye soft-focus motion-blur"
).split()
STYLE_NOUNS = ("tone tones toned palette colour colours color colors hue hues lighting light lit mood style "
               "aesthetic look").split()


def _vocabulary_words() -> set[str]:
    words: set[str] = set()
    phrases = [*CSS_NAMED_COLOURS, *COLOUR_ALIASES, *HUE_RANGES]
    for groups in (SATURATION_WORDS, BRIGHTNESS_WORDS, CONTRAST_WORDS, PATTERN_WORDS):
        phrases += [p for level, ps in groups.items() for p in ps]
    for phrase in phrases:
        words.update(phrase.split())  # each word of a phrase, and the phrase hyphenated ("low-key")
        words.add(phrase.replace(" ", "-"))
    # Words that are style only inside their phrase ("very dark", "image noise", "high key").
    return words - {"and", "b", "w", "b-w", "very", "image", "hour", "high", "low", "key", "solid", "of"}


STYLE_WORDS = frozenset({*ART_STYLE_TERMS, *PHOTO_TECHNIQUE_TERMS, *STYLE_NOUNS} | _vocabulary_words())
FILLERS = frozenset({"a", "an", "the", "and", "with", "in", "of", "at", "on", "very", "really"})
_WORD = re.compile(r"[a-z0-9'-]+")


def _clause_is_style(clause: str) -> bool:
    words = _WORD.findall(clause.lower())
    content = [w for w in words if w not in FILLERS]
    return not content or all(w in STYLE_WORDS for w in content) or clause.strip().lower() in QUALITY_TAGS


def destyle(prompt: str) -> str | None:
    """The content of a user's prompt: its first clause that is neither a quality tag nor pure style,
    with style words dropped; None when nothing is left. Weights like (word:1.2) and brackets go."""
    text = re.sub(r"[()\[\]{}<>]|:\d+(?:\.\d+)?", " ", prompt or "")
    for clause in re.split(r"[,;|\n]+", text):
        clause = " ".join(clause.split())
        if not clause or _clause_is_style(clause):
            continue
        kept = [w for w in clause.split() if w.lower().strip(".!?") not in STYLE_WORDS]
        result = " ".join(kept).strip(" .!?")
        if len(_WORD.findall(result.lower())) >= 2 or (result and result.lower() not in FILLERS):
            return result[:200]
    return None


def prompt_seed(user_id: str, prompt_id: str) -> int:
    """One seed per (user, prompt), shared by every method, so methods differ only in the prompt."""
    return int.from_bytes(hashlib.sha256(f"{user_id}/{prompt_id}".encode()).digest()[:4], "little") & 0x7FFFFFFF


def _rank(user_id: str, item: str) -> str:
    return hashlib.sha256(f"{PROMPT_SET_VERSION}/{user_id}/{item}".encode()).hexdigest()


def prompts_for_user(user_id: str, per_user: int, history: list[str] | None = None,
                     own_share: float = 0.5, heldout: list[dict] | None = None) -> list[dict]:
    """`per_user` base prompts for one user: first the user's held-out prompts (a dataset's test split,
    such as PIP's: rewritten from their short prompt, the full prompt kept as `target_prompt`), then up to
    `own_share` of the rest de-styled prompts of the user's own history, then categories of the versioned
    set in a user-specific rotation so every category is covered evenly across users."""
    if per_user < 1:
        raise ValueError("per_user must be at least 1")
    rows = []
    for held in heldout or []:
        base = held.get("short_prompt") or destyle(held["prompt"]) or held["prompt"]
        if len(rows) >= per_user or any(r["base_prompt"].lower() == base.lower() for r in rows):
            continue
        rows.append({"prompt_id": f"heldout-{hashlib.sha256(held['prompt'].encode()).hexdigest()[:10]}",
                     "category": "held out", "base_prompt": base[:HELDOUT_CAP],
                     "source": "held out (test split)" + ("" if held.get("short_prompt") else ", de-styled"),
                     "target_prompt": held["prompt"]})
    own = []
    for text in history or []:
        cleaned = destyle(text)
        if cleaned and cleaned.lower() not in {o.lower() for o in own}:
            own.append(cleaned)
    own.sort(key=lambda t: _rank(user_id, t))
    for text in own[: max(0, min(int(per_user * own_share), per_user - len(rows)))]:
        rows.append({"prompt_id": f"own-{hashlib.sha256(text.encode()).hexdigest()[:10]}", "category": "own history",
                     "base_prompt": text, "source": "own history, de-styled", "target_prompt": None})
    categories = sorted(CATEGORIES, key=lambda c: _rank(user_id, c))
    for i in range(per_user - len(rows)):
        category = categories[i % len(categories)]
        options = BASE_PROMPTS[category]
        # a user-specific start, then the next prompt of the category on each further pass
        index = (int(_rank(user_id, category), 16) + i // len(categories)) % len(options)
        rows.append({"prompt_id": f"{category}-{index}", "category": category, "base_prompt": options[index],
                     "source": PROMPT_SET_VERSION, "target_prompt": None})
    for row in rows:
        row["seed"] = prompt_seed(user_id, row["prompt_id"])
    return rows
