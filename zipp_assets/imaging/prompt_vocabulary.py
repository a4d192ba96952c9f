"""The offline renderer's fixed, public vocabulary: which prompt words set which visual attribute.

It owns one question: what does a prompt *name* about colour, tone, light, texture and subject? Every
word list here is taken from a public vocabulary named beside it, written once and never tuned to a
result, and never from the synthetic world (`zipp_assets.simworld`), whose phrasebooks are hidden
from everything evaluated against them (a test lists what the two share). Sources:
- Hues: the CSS Color Module Level 4 named colours (https://www.w3.org/TR/css-color-4/#named-colors),
  converted from their sRGB hex values to HSV.
- Saturation and lightness modifiers: the ISCC-NBS System of Color Designation (Kelly and Judd 1976,
  "Color: Universal Language and Dictionary of Names", NBS Special Publication 440), whose hue
  modifiers are vivid, brilliant, strong, deep, very deep, light, very light, moderate, dark, very dark,
  pale, very pale, light grayish, grayish, dark grayish, blackish and whitish. "light" alone is left
  out: in a prompt it names the illumination more often than a lightness. "pastel" is a pale colour
  of low saturation and high lightness (Wikipedia "Pastel (color)").
- Brightness as a perceived attribute: the CIE International Lighting Vocabulary (CIE S 017)
  distinguishes brightness (bright .. dim) from lightness (light .. dark); its everyday poles are used.
- Light and exposure: photography's lighting terms as the Wikipedia articles of those names define
  them: high-key and low-key lighting, hard and soft light, chiaroscuro, silhouette, backlighting,
  over- and underexposure, golden hour and blue hour, overcast daylight; "black and white",
  monochrome and grayscale (Wikipedia "Monochrome photography").
- Textures: the textile pattern names stripe, pinstripe, polka dot, check, gingham, tartan, plaid,
  houndstooth (Wikipedia's textile-pattern articles), photography's "film grain" and "image noise",
  and geometry's concentric circles.
The lists of the light and texture terms were written from memory of those articles, not copied
from them at run time.

Matching: the prompt is lower-cased and split into words (runs of letters); at each word the longest
phrase of the vocabulary that starts there matches (so "black and white" beats "black"). A phrase
right after "no", "not", "without" or "non" is skipped. For each attribute the first phrase that sets
it wins, except that a colour name always beats "warm"/"cool", which only narrow the hue range.
"""

from __future__ import annotations

import colorsys
import re
from dataclasses import dataclass, field

VOCABULARY_VERSION = "offline-vocab-2 (CSS Color 4 named colours, ISCC-NBS modifiers, photographic lighting terms)"

# CSS Color Module Level 4, section 6.1 "Named Colors": the keyword's sRGB hex value.
CSS_NAMED_COLOURS = {
    "red": "#ff0000", "orange": "#ffa500", "gold": "#ffd700", "yellow": "#ffff00", "lime": "#00ff00",
    "green": "#008000", "olive": "#808000", "teal": "#008080", "cyan": "#00ffff", "aqua": "#00ffff",
    "turquoise": "#40e0d0", "blue": "#0000ff", "navy": "#000080", "indigo": "#4b0082", "violet": "#ee82ee",
    "purple": "#800080", "magenta": "#ff00ff", "fuchsia": "#ff00ff", "pink": "#ffc0cb", "crimson": "#dc143c",
    "maroon": "#800000", "coral": "#ff7f50", "salmon": "#fa8072", "saddlebrown": "#8b4513", "tan": "#d2b48c",
    "beige": "#f5f5dc", "khaki": "#f0e68c", "lavender": "#e6e6fa", "plum": "#dda0dd", "ivory": "#fffff0",
    "gray": "#808080", "grey": "#808080", "silver": "#c0c0c0", "white": "#ffffff", "black": "#000000",
}
# Prompt words that are not CSS keywords themselves, mapped to the keyword they mean. CSS `brown`
# (#a52a2a) is a dark red (hue 0); everyday "brown" is CSS `saddlebrown` (hue 25).
COLOUR_ALIASES = {"golden": "gold", "brown": "saddlebrown", "scarlet": "red", "emerald": "green",
                  "sapphire": "blue", "rose": "pink", "cream": "ivory"}
# Names that denote a tone as well as a hue (a light, dark or greyed colour): they also set saturation
# and brightness from their CSS value. Every other colour name sets the hue only.
TONAL_COLOURS = frozenset({"pink", "navy", "maroon", "saddlebrown", "olive", "tan", "beige", "khaki", "lavender",
                           "plum", "ivory", "gray", "grey", "silver", "white", "black"})
# "warm"/"cool" narrow the hue to a range (degrees, may wrap): reds to yellows, greens-cyans to blues.
# Golden hour is the warm light after sunrise and before sunset; blue hour the cool twilight.
HUE_RANGES = {"warm": (-30.0, 60.0), "cool": (150.0, 270.0), "golden hour": (15.0, 50.0),
              "blue hour": (200.0, 250.0)}

LOW, HIGH = "low", "high"
SATURATION_WORDS = {  # ISCC-NBS chroma modifiers; monochrome photography's names for no colour
    LOW: ("grayish", "greyish", "light grayish", "dark grayish", "pale", "very pale", "pastel"),
    HIGH: ("vivid", "brilliant", "strong", "deep", "very deep"),
    "none": ("black and white", "monochrome", "grayscale", "greyscale", "b w"),
}
BRIGHTNESS_WORDS = {  # ISCC-NBS lightness modifiers, CIE brightness poles, exposure and time of day
    LOW: ("dark", "very dark", "deep", "very deep", "blackish", "dim", "underexposed", "low key", "night", "blue hour"),
    HIGH: ("very light", "whitish", "pale", "very pale", "brilliant", "bright", "overexposed", "high key",
           "pastel"),
}
CONTRAST_WORDS = {  # photography's lighting terms
    HIGH: ("hard light", "high contrast", "chiaroscuro", "low key", "silhouette", "backlit", "backlighting"),
    LOW: ("soft light", "low contrast", "overcast", "diffuse", "diffused", "high key"),
}
PATTERN_WORDS = {
    "stripes": ("stripes", "stripe", "striped", "pinstripe", "pinstriped"),
    "dots": ("dots", "dotted", "polka dot", "polka dots", "spots", "spotted"),
    "checks": ("check", "checks", "checked", "checkered", "chequered", "plaid", "gingham", "tartan", "houndstooth"),
    "grain": ("film grain", "grain", "noise", "image noise"),
    "rings": ("concentric", "concentric circles", "rings"),
    "plain": ("plain", "solid color", "solid colour"),
}
PATTERNS = ("stripes", "dots", "checks", "grain", "rings")  # what the seed picks from; "plain" only when named
SUBJECT_WORDS = {
    "portrait": ("portrait", "face", "selfie", "headshot", "person", "woman", "man", "girl", "boy", "child",
                 "people"),
    "animal": ("animal", "animals", "cat", "dog", "bird", "horse", "pet", "kitten", "puppy", "wildlife", "fox",
               "owl", "deer"),
    "landscape": ("landscape", "mountain", "mountains", "sea", "ocean", "beach", "forest", "meadow", "lake",
                  "valley", "desert", "river", "seascape", "countryside", "hills"),
    "street": ("street", "streets", "city", "urban", "alley", "road", "crowd", "market", "downtown"),
    "architecture": ("architecture", "building", "buildings", "house", "tower", "cathedral", "church", "bridge",
                     "interior", "skyline", "skyscraper"),
    "food": ("food", "dish", "meal", "cake", "fruit", "coffee", "pizza", "bowl", "plate", "breakfast", "dessert",
             "salad"),
    "product": ("product", "bottle", "watch", "shoe", "sneaker", "phone", "packshot", "perfume", "gadget"),
    "fantasy": ("fantasy", "dragon", "castle", "wizard", "magic", "magical", "fairy", "mythical", "elf",
                "enchanted"),
}
SUBJECTS = (*SUBJECT_WORDS, "default")
COLOUR_KEYS = frozenset({"hue", "colour", "colour_saturation", "colour_brightness"})
NEGATIONS = frozenset({"no", "not", "without", "non"})

# The value a named level stands for, on the renderer's 0..1 scales.
LEVELS = {
    "saturation": {LOW: 0.18, HIGH: 0.95, "none": 0.0},
    "brightness": {LOW: 0.22, HIGH: 0.9},
    "contrast": {LOW: 0.12, HIGH: 0.92},
}


def css_hsv(keyword: str) -> tuple[float, float, float]:
    """A CSS named colour as (hue 0..1, saturation, value)."""
    hex_value = CSS_NAMED_COLOURS[keyword].lstrip("#")
    r, g, b = (int(hex_value[i : i + 2], 16) / 255.0 for i in (0, 2, 4))
    return colorsys.rgb_to_hsv(r, g, b)


def _phrases() -> dict[tuple[str, ...], dict[str, object]]:
    """Every phrase (as a word tuple) and the attribute values it sets."""
    table: dict[tuple[str, ...], dict[str, object]] = {}

    def add(phrase: str, settings: dict[str, object]) -> None:
        table.setdefault(tuple(phrase.split()), {}).update(settings)

    for word in (*CSS_NAMED_COLOURS, *COLOUR_ALIASES):
        keyword = COLOUR_ALIASES.get(word, word)
        hue, saturation, value = css_hsv(keyword)
        settings: dict[str, object] = {"hue": hue, "colour": keyword}
        if keyword in TONAL_COLOURS:
            settings.update(colour_saturation=saturation, colour_brightness=value)
        add(word, settings)
    for word, span in HUE_RANGES.items():
        add(word, {"hue_range": span})
    for attribute, groups in (("saturation", SATURATION_WORDS), ("brightness", BRIGHTNESS_WORDS),
                              ("contrast", CONTRAST_WORDS)):
        for level, phrases in groups.items():
            for phrase in phrases:
                add(phrase, {attribute: LEVELS[attribute][level]})
    for pattern, phrases in PATTERN_WORDS.items():
        for phrase in phrases:
            add(phrase, {"pattern": pattern})
    for subject, words in SUBJECT_WORDS.items():
        for word in words:
            add(word, {"subject": subject})
    return table


PHRASES = _phrases()
LONGEST_PHRASE = max(len(p) for p in PHRASES)
_WORD = re.compile(r"[a-z]+")


@dataclass(frozen=True)
class NamedAttributes:
    """What a prompt names, attribute -> value, and the phrases that named them (for reports)."""

    values: dict[str, object] = field(default_factory=dict)
    matched: tuple[str, ...] = ()


def named_attributes(prompt: str) -> NamedAttributes:
    """The attributes `prompt` names, by the matching rule in the module docstring."""
    words = _WORD.findall(prompt.lower())
    values: dict[str, object] = {}
    matched: list[str] = []
    i = 0
    while i < len(words):
        for length in range(min(LONGEST_PHRASE, len(words) - i), 0, -1):
            phrase = tuple(words[i : i + length])
            if phrase in PHRASES:
                break
        else:
            i += 1
            continue
        if not (i > 0 and words[i - 1] in NEGATIONS):
            matched.append(" ".join(phrase))
            settings = PHRASES[phrase]
            if "colour" in settings and "colour" in values:  # the first colour brings its hue and tone together
                settings = {k: v for k, v in settings.items() if k not in COLOUR_KEYS}
            for attribute, value in settings.items():
                values.setdefault(attribute, value)
        i += length
    return NamedAttributes(values, tuple(matched))
