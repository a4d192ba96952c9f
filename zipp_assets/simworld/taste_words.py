"""The one vocabulary that maps a visual taste to plain words.

The synthetic world uses it to write the aesthetic remarks in users' comments ("muted film tones",
"neon at night", "soft pastel light") and to label the planted truth (palette, lighting, mood,
texture, look). Nothing in the pipeline may import it: a persona stage has to read taste from what
people write and post, not from the generator's dictionary (a test enforces this).

Every label is a function of the taste alone: saturation and brightness fall in three levels,
contrast in two, hue in eight named arcs of the colour circle.
"""

from __future__ import annotations

import numpy as np

from zipp_assets.simworld.render import Style

# Upper ends of named hue arcs on the 0..1 colour circle (red wraps around 0).
HUE_NAMES = (
    (0.042, "red"), (0.11, "orange"), (0.19, "yellow"), (0.45, "green"),
    (0.53, "teal"), (0.72, "blue"), (0.85, "purple"), (0.958, "pink"), (1.0, "red"),
)
SATURATION_LEVELS = ("muted", "balanced", "vibrant")  # below 0.4, 0.4-0.7, above 0.7
BRIGHTNESS_LEVELS = ("dark", "medium", "bright")  # below 0.4, 0.4-0.7, above 0.7
PALETTE_PREFIX = {"muted": "dusty", "balanced": "rich", "vibrant": "vivid"}
# (brightness level, contrast high?) -> the light the taste reads as
LIGHTING = {
    ("dark", False): "dim", ("dark", True): "low-key",
    ("medium", False): "soft", ("medium", True): "crisp",
    ("bright", False): "airy", ("bright", True): "harsh",
}
# (saturation level, brightness level) -> mood word, and the look people name it by
MOOD = {
    ("muted", "dark"): "melancholic", ("muted", "medium"): "nostalgic", ("muted", "bright"): "dreamy",
    ("balanced", "dark"): "moody", ("balanced", "medium"): "calm", ("balanced", "bright"): "fresh",
    ("vibrant", "dark"): "electric", ("vibrant", "medium"): "bold", ("vibrant", "bright"): "playful",
}
LOOK = {
    ("muted", "dark"): "muted film tones", ("muted", "medium"): "faded earthy colours",
    ("muted", "bright"): "soft pastel light", ("balanced", "dark"): "deep shadowy colours",
    ("balanced", "medium"): "natural everyday colour", ("balanced", "bright"): "clean sunny daylight",
    ("vibrant", "dark"): "neon at night", ("vibrant", "medium"): "bold saturated colour",
    ("vibrant", "bright"): "bright candy colours",
}
TEXTURE = {
    "stripes": "bold stripes", "dots": "polka dots", "checks": "checkerboard patterns",
    "noise": "grainy textures", "rings": "concentric rings",
}
# One template per aspect; each carries exactly one phrase, the part a reader would quote.
TEMPLATES = {
    "palette": ("I keep coming back to {} tones.", "{} tones"),
    "look": ("Honestly {} is my whole aesthetic.", "{}"),
    "lighting": ("Give me {} light any day.", "{} light"),
    "mood": ("I love anything with a {} feel.", "a {} feel"),
    "texture": ("Always a sucker for {}.", "{}"),
}
ASPECTS = tuple(TEMPLATES)


def _level(value: float, names: tuple[str, str, str]) -> str:
    return names[0] if value < 0.4 else names[2] if value > 0.7 else names[1]


def hue_name(hue: float) -> str:
    hue = hue % 1.0
    return next(name for end, name in HUE_NAMES if hue < end)


def saturation_level(style: Style) -> str:
    return _level(style.saturation, SATURATION_LEVELS)


def brightness_level(style: Style) -> str:
    return _level(style.brightness, BRIGHTNESS_LEVELS)


def labels(style: Style) -> dict[str, str]:
    """The words for a taste, one per aspect: palette ('dusty teal'), look, lighting, mood, texture."""
    saturation, brightness = saturation_level(style), brightness_level(style)
    return {
        "palette": f"{PALETTE_PREFIX[saturation]} {hue_name(style.hue)}",
        "look": LOOK[(saturation, brightness)],
        "lighting": LIGHTING[(brightness, style.contrast > 0.5)],
        "mood": MOOD[(saturation, brightness)],
        "texture": TEXTURE[style.pattern],
    }


def phrase(aspect: str, label: str) -> str:
    """The quotable phrase a remark about `aspect` carries, e.g. ('lighting', 'soft') -> 'soft light'."""
    return TEMPLATES[aspect][1].format(label)


def aesthetic_remark(style: Style, rng: np.random.Generator) -> str:
    """One sentence stating a preference the taste implies, on one aspect drawn at random."""
    aspect = ASPECTS[int(rng.integers(len(ASPECTS)))]
    return TEMPLATES[aspect][0].format(labels(style)[aspect])


def all_phrases() -> dict[str, tuple[str, str]]:
    """Every phrase a remark can carry -> (aspect, label): what evaluation looks for in comments."""
    hues = dict.fromkeys(name for _, name in HUE_NAMES)
    values = {
        "palette": [f"{PALETTE_PREFIX[s]} {hue}" for s in SATURATION_LEVELS for hue in hues],
        "look": list(LOOK.values()),
        "lighting": list(LIGHTING.values()),
        "mood": list(MOOD.values()),
        "texture": list(TEXTURE.values()),
    }
    return {phrase(aspect, label): (aspect, label) for aspect, labels_ in values.items() for label in labels_}
