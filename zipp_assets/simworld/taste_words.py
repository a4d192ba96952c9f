"""What a visual taste is called: its levels (fixed by the numbers) and their words (from a phrasebook).

The synthetic world uses it to write the aesthetic remarks in users' comments and to label the
planted truth (palette, lighting, mood, texture, look). Nothing in the pipeline may import it: a
persona stage has to read taste from what people write and post, not from the generator's
dictionary (a test enforces this).

The levels are a function of the taste alone, whatever the phrasebook: saturation and brightness
fall in three levels, contrast in two, hue in eight named arcs of the colour circle; the pattern is
the taste's. A phrasebook (`phrasebook`) gives each level its words, and the sentences a remark is
made of ("Everything I shoot ends up {phrase}, no matter what I do.").
"""

from __future__ import annotations

import numpy as np

from zipp_assets.simworld.phrasebook import ASPECTS, Phrasebook, palette_labels, taste_phrases
from zipp_assets.simworld.render import Style

# Upper ends of the hue arcs on the 0..1 colour circle (red wraps around 0), keyed as in a phrasebook.
HUE_ARC_ENDS = (
    (0.042, "red"), (0.11, "orange"), (0.19, "yellow"), (0.45, "green"),
    (0.53, "teal"), (0.72, "blue"), (0.85, "purple"), (0.958, "pink"), (1.0, "red"),
)
LEVEL_KEYS = ("low", "mid", "high")  # below 0.4, 0.4-0.7, above 0.7
BRIGHTNESS_KEYS = ("dark", "mid", "bright")


def _level(value: float, names: tuple[str, str, str]) -> str:
    return names[0] if value < 0.4 else names[2] if value > 0.7 else names[1]


def hue_arc(hue: float) -> str:
    hue = hue % 1.0
    return next(name for end, name in HUE_ARC_ENDS if hue < end)


def saturation_level(style: Style) -> str:
    return _level(style.saturation, LEVEL_KEYS)


def brightness_level(style: Style) -> str:
    return _level(style.brightness, BRIGHTNESS_KEYS)


def levels(style: Style) -> dict[str, str]:
    """The taste's level per aspect, in the phrasebooks' keys: palette 'low-teal', lighting 'dark-hard',
    look and mood 'low-dark', texture 'noise'."""
    saturation, brightness = saturation_level(style), brightness_level(style)
    return {
        "palette": f"{saturation}-{hue_arc(style.hue)}",
        "look": f"{saturation}-{brightness}",
        "lighting": f"{brightness}-{'hard' if style.contrast > 0.5 else 'soft'}",
        "mood": f"{saturation}-{brightness}",
        "texture": style.pattern,
    }


def labels(style: Style, book: Phrasebook) -> dict[str, str]:
    """The phrasebook's words for a taste, one per aspect (forum_us: palette 'faded teal', ...)."""
    level = levels(style)
    saturation, hue = level["palette"].split("-")
    return {
        "palette": palette_labels(book.taste)[(saturation, hue)],
        "look": book.taste["look"][level["look"]],
        "lighting": book.taste["lighting"][level["lighting"]],
        "mood": book.taste["mood"][level["mood"]],
        "texture": book.taste["texture"][level["texture"]],
    }


def aesthetic_remark(style: Style, rng: np.random.Generator, book: Phrasebook, aspect: str | None = None) -> str:
    """One sentence stating a preference the taste implies, on `aspect` (drawn at random if None)."""
    aspect = aspect or ASPECTS[int(rng.integers(len(ASPECTS)))]
    templates = book.taste["remarks"][aspect]
    return templates[int(rng.integers(len(templates)))].format(phrase=labels(style, book)[aspect])


def all_phrases(book: Phrasebook) -> dict[str, tuple[str, str]]:
    """Every phrase a remark can carry -> (aspect, label): what evaluation looks for in comments."""
    return {label: (aspect, label) for label, (aspect, _) in taste_phrases({"taste": book.taste}).items()}
