"""A user's planted visual taste: their communities' styles mixed, blended with a personal component.

Hue lives on a circle, so it is mixed as a circular mean (weighted unit vectors) and blended along
the shorter arc; saturation, brightness and contrast mix linearly, frequency in log space, and
the pattern is one drawn from the mixture. Nothing here knows words: see `taste_words`.
"""

from __future__ import annotations

import math

import numpy as np

from zipp_assets.simworld.render import PATTERNS, Style

# The range every style is drawn from, community or personal: a personal taste is as broad as the
# communities' styles, so it is neither nearer to nor further from any of them.
SATURATION_RANGE = (0.2, 0.95)
BRIGHTNESS_RANGE = (0.25, 0.9)
CONTRAST_RANGE = (0.1, 0.9)
FREQUENCY_RANGE = (2.0, 7.0)


def draw_style(rng: np.random.Generator, hue: float | None = None) -> Style:
    """A style from the common prior (hue uniform on the circle unless given)."""
    return Style(
        hue=float(rng.uniform(0, 1) if hue is None else hue % 1.0),
        saturation=float(rng.uniform(*SATURATION_RANGE)),
        brightness=float(rng.uniform(*BRIGHTNESS_RANGE)),
        pattern=PATTERNS[int(rng.integers(len(PATTERNS)))],
        frequency=float(np.exp(rng.uniform(np.log(FREQUENCY_RANGE[0]), np.log(FREQUENCY_RANGE[1])))),
        contrast=float(rng.uniform(*CONTRAST_RANGE)),
    )


def circular_mean(hues: list[float], weights: list[float]) -> float:
    """Weighted mean of hues in [0, 1) on the circle (0.95 and 0.05 average to 0.0, not 0.5)."""
    angles = 2 * np.pi * np.asarray(hues, dtype=float)
    w = np.asarray(weights, dtype=float)
    return float((math.atan2(float(w @ np.sin(angles)), float(w @ np.cos(angles))) / (2 * np.pi)) % 1.0)


def hue_toward(start: float, end: float, share: float) -> float:
    """The hue `share` of the way from `start` to `end` along the shorter arc."""
    delta = (end - start + 0.5) % 1.0 - 0.5
    return float((start + share * delta) % 1.0)


def community_mix(styles: list[Style], weights: list[float], pattern_draw: float) -> Style:
    """What a user's communities say about their taste: the weighted mixture of their styles.
    `pattern_draw` (uniform in [0, 1)) picks one community's pattern by weight."""
    w = np.asarray(weights, dtype=float) / float(np.sum(weights))
    pick = min(int(np.searchsorted(np.cumsum(w), pattern_draw, side="right")), len(styles) - 1)
    return Style(
        hue=circular_mean([s.hue for s in styles], w.tolist()),
        saturation=float(w @ [s.saturation for s in styles]),
        brightness=float(w @ [s.brightness for s in styles]),
        pattern=styles[pick].pattern,
        frequency=float(np.exp(w @ np.log([s.frequency for s in styles]))),
        contrast=float(w @ [s.contrast for s in styles]),
    )


def blend(community: Style, personal: Style, share: float, pattern_draw: float) -> Style:
    """The user's taste: `share` of the way from the community mixture to the personal component.
    Share 0 is the community mixture exactly, 1 the personal component exactly; the pattern is the
    personal one when `pattern_draw` (uniform in [0, 1)) falls below the share."""
    def mix(a: float, b: float) -> float:
        return float((1 - share) * a + share * b)

    return Style(
        hue=hue_toward(community.hue, personal.hue, share),
        saturation=mix(community.saturation, personal.saturation),
        brightness=mix(community.brightness, personal.brightness),
        pattern=personal.pattern if pattern_draw < share else community.pattern,
        frequency=float(np.exp(mix(np.log(community.frequency), np.log(personal.frequency)))),
        contrast=mix(community.contrast, personal.contrast),
    )
