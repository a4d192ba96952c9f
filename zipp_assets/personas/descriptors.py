"""Words for a user's visual profile: what the image encoder's embedding supports saying.

Two sources, one per image encoder:
- open_clip: zero-shot similarity between the profile and text embeddings of a versioned vocabulary
  of aesthetic descriptors (palettes, lighting, moods, styles), as CLIP is meant to be queried.
- the offline pixel-statistics encoder: its features are histograms, so only the words its
  statistics support: dominant hue family, saturation (muted to vibrant), tone (dark to bright),
  and texture (smooth to busy, directional or not).
This vocabulary is the pipeline's own, written from common colour and photography terms; it never
reads the synthetic world's vocabulary (a test guards that).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from zipp_assets.imaging.encoders import PixelStatsEncoder

VOCABULARY_VERSION = "aesthetic-v1"
AESTHETIC_VOCABULARY: dict[str, list[str]] = {
    "palette": ["muted earth tones", "pastel colours", "vivid saturated colours", "black and white",
                "warm golden tones", "cool blue tones", "neon colours", "monochrome green", "soft desaturated film colours"],
    "lighting": ["soft natural light", "golden hour light", "harsh midday sun", "moody low light",
                 "night lights", "studio lighting", "overcast diffuse light"],
    "mood": ["calm and serene", "energetic and bold", "nostalgic", "dark and dramatic", "playful and whimsical",
             "minimal and clean", "cozy and warm"],
    "style": ["film photography", "pixel art", "watercolor painting", "macro photography", "street photography",
              "landscape photography", "digital illustration", "geometric patterns", "minimalist design"],
}

# Hue families over the 18 hue bins (20 degrees each), by the bin's centre.
_HUE_FAMILIES = [(20, "red"), (45, "orange"), (70, "yellow"), (160, "green"), (200, "teal"), (260, "blue"),
                 (290, "purple"), (340, "pink"), (360, "red")]


def _family(degrees: float) -> str:
    return next(name for bound, name in _HUE_FAMILIES if degrees < bound)


def pixel_stats_descriptors(profile: np.ndarray) -> list[str]:
    """Words a pixel-statistics profile supports (see PixelStatsEncoder's feature layout)."""
    e = PixelStatsEncoder
    profile = np.asarray(profile, dtype=np.float64)
    if profile.shape != (e.dim,) or not np.isfinite(profile).all() or profile.sum() <= 0:
        return []
    cuts = np.cumsum([e.hue_bins, e.sat_bins, e.val_bins, e.orientation_bins, e.frequency_bands])
    hue, sat, val, orientation, bands = np.split(profile, cuts)[:5]

    def distribution(part: np.ndarray) -> np.ndarray:
        total = part.sum()
        return part / total if total > 0 else np.full(len(part), 1 / len(part))

    centres = lambda n: (np.arange(n) + 0.5) / n  # noqa: E731
    hue_p = distribution(hue)
    words = []
    top = int(np.argmax(hue_p))
    if hue_p[top] > 2 / e.hue_bins:  # a dominant hue at least twice the uniform share
        words.append(f"{_family(centres(e.hue_bins)[top] * 360)} hues")
    saturation = float(distribution(sat) @ centres(e.sat_bins))
    words.append("vibrant saturated colour" if saturation > 0.6 else "muted, desaturated colour" if saturation < 0.35
                 else "moderately saturated colour")
    brightness = float(distribution(val) @ centres(e.val_bins))
    words.append("bright, high-key images" if brightness > 0.65 else "dark, low-key images" if brightness < 0.4
                 else "mid-tone images")
    high_frequency = float(distribution(bands)[e.frequency_bands // 2:].sum())
    words.append("busy, fine-grained texture" if high_frequency > 0.5 else "smooth, broad shapes")
    orient = distribution(orientation)
    if orient.max() > 2.5 / e.orientation_bins:
        words.append("strong directional lines")
    return words


def clip_descriptors(profile: np.ndarray, encode_text: Callable[[Sequence[str]], np.ndarray], per_category: int = 2,
                     template: str = "a photo with {}") -> list[str]:
    """The `per_category` vocabulary phrases of each category closest to the profile (CLIP zero-shot)."""
    profile = np.asarray(profile, dtype=np.float32)
    norm = np.linalg.norm(profile)
    if norm == 0 or not np.isfinite(norm):
        return []
    words = []
    for phrases in AESTHETIC_VOCABULARY.values():
        texts = encode_text([template.format(p) for p in phrases])
        texts = texts / np.maximum(np.linalg.norm(texts, axis=1, keepdims=True), 1e-12)
        scores = texts @ (profile / norm)
        words += [phrases[i] for i in np.argsort(-scores)[:per_category]]
    return words
