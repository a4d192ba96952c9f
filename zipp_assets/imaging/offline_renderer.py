"""The demo profile's image generator: an honest stand-in that draws what a prompt names, no model.

`OfflineRenderer` turns a prompt into a small RGB image through the fixed public vocabulary of
`prompt_vocabulary` (colour, saturation, brightness, contrast, texture, subject). What the prompt does
not name is drawn from the seed, like a diffusion model's starting noise: the seed alone fixes every
draw, whatever the prompt, so two prompts given the same seed differ only in what they name.

Image model: a painted relief under a key light. The named colour is the paint (albedo); the subject's
layout paints a lighter figure on a darker ground; the texture is the relief of the surface (ridges,
bumps, raised squares, ripples, roughness), made visible by Lambertian shading under one directional
light plus ambient fill, whose direction the seed draws and whose hardness and fill the contrast sets
(hard light: low and raking with little fill; soft: high with much fill); exposure scales the frame
to the named brightness. Shading is applied in linear light and multiplies the channels alike, so the
hue stays readable in colour histograms, and the texture in gradient orientations and spatial
frequencies (what `encoders.PixelStatsEncoder` measures). It is motivated by how photographs of lit
surfaces form (shading times reflectance; Phong 1975, "Illumination for computer generated
pictures"), not by the synthetic world's pixel model, with which it shares no code or scheme.

It never imports the synthetic world (`zipp_assets.simworld`).
"""

from __future__ import annotations

import colorsys
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from zipp_assets.imaging.generation import check_request, fit_by_words
from zipp_assets.imaging.prompt_vocabulary import PATTERNS, VOCABULARY_VERSION, named_attributes

log = logging.getLogger(__name__)

# The seed's prior for attributes a prompt leaves unnamed: hue uniform, the rest spread over mid-range.
PRIOR_SATURATION = (0.3, 0.8)
PRIOR_BRIGHTNESS = (0.35, 0.8)
PRIOR_CONTRAST = (0.3, 0.75)
PRIOR_FREQUENCY = (3.0, 8.0)  # pattern cycles across the image
CLIP_TOKEN_LIMIT = 77  # CLIP's context, start and end markers included
_PIECE = re.compile(r"\w+|[^\w\s]")


def approximate_clip_tokens(prompt: str) -> int:
    """An approximate CLIP-BPE count: one token per word or punctuation mark, plus the start and end
    markers. Real BPE splits rare words into several tokens, so this can undercount."""
    return len(_PIECE.findall(prompt)) + 2


@dataclass(frozen=True)
class RenderStyle:
    hue: float  # 0..1 around the colour circle
    saturation: float
    brightness: float
    contrast: float
    pattern: str  # one of prompt_vocabulary.PATTERNS, or "plain"
    frequency: float
    subject: str  # one of prompt_vocabulary.SUBJECTS
    named: tuple[str, ...]  # the vocabulary phrases the prompt matched


def style_for(prompt: str, seed: int) -> RenderStyle:
    """The prompt's named attributes over the seed's prior draws (always drawn, in a fixed order)."""
    rng = np.random.default_rng(seed)
    prior_hue = rng.random()
    saturation, brightness, contrast = (rng.uniform(*span) for span in (PRIOR_SATURATION, PRIOR_BRIGHTNESS,
                                                                       PRIOR_CONTRAST))
    pattern = PATTERNS[int(rng.integers(len(PATTERNS)))]
    frequency = rng.uniform(*PRIOR_FREQUENCY)
    named = named_attributes(prompt)
    values = named.values
    if "hue" in values:
        hue = float(values["hue"])
    elif "hue_range" in values:
        low, high = values["hue_range"]
        hue = ((low + prior_hue * (high - low)) / 360.0) % 1.0
    else:
        hue = prior_hue
    # An explicit tone word beats the tone a colour name implies, which beats the prior.
    return RenderStyle(
        hue=hue,
        saturation=float(values.get("saturation", values.get("colour_saturation", saturation))),
        brightness=float(values.get("brightness", values.get("colour_brightness", brightness))),
        contrast=float(values.get("contrast", contrast)),
        pattern=str(values.get("pattern", pattern)),
        frequency=float(frequency),
        subject=str(values.get("subject", "default")),
        named=named.matched,
    )


def _relief(pattern: str, frequency: float, rng: np.random.Generator, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The pattern as a height field of the surface (0..1): ridges, bumps, raised squares, ripples or
    a rough surface. The light, not a colour swing, makes it visible."""
    phase, angle = rng.uniform(0, 2 * np.pi), rng.uniform(0, np.pi)
    if pattern == "stripes":  # parallel ridges
        return 0.5 + 0.5 * np.sin(2 * np.pi * frequency * (x * np.cos(angle) + y * np.sin(angle)) + phase)
    if pattern == "dots":  # round bumps on a square grid
        cx, cy = (np.mod(frequency * c + phase / (2 * np.pi), 1.0) - 0.5 for c in (x, y))
        return np.clip(1.0 - (np.hypot(cx, cy) / 0.32) ** 2, 0.0, None)
    if pattern == "checks":  # raised squares, their edges softened over a tenth of a cell
        cells = np.sin(2 * np.pi * frequency * x + phase) * np.sin(2 * np.pi * frequency * y + phase)
        return 0.5 + 0.5 * np.tanh(8.0 * cells)
    if pattern == "rings":  # ripples round a seeded centre
        centre = rng.uniform(0.3, 0.7, size=2)
        return 0.5 + 0.5 * np.sin(4 * np.pi * frequency * np.hypot(x - centre[0], y - centre[1]) + phase)
    if pattern == "grain":  # a rough surface: independent heights per pixel
        return rng.uniform(0.0, 1.0, size=x.shape)
    return np.zeros_like(x)


def _inside(mask: np.ndarray) -> np.ndarray:
    return np.where(mask, 1.0, -1.0)


def _composition(subject: str, rng: np.random.Generator, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A simple layout for the subject as values in [-1, 1] (lighter figure, darker ground)."""
    jx, jy = rng.uniform(-0.08, 0.08, size=2)
    if subject == "portrait":  # an upright head-and-shoulders ellipse
        return _inside(((x - 0.5 - jx) / 0.24) ** 2 + ((y - 0.45 - jy) / 0.34) ** 2 < 1)
    if subject == "animal":  # a low, wide body
        return _inside(((x - 0.5 - jx) / 0.34) ** 2 + ((y - 0.6 - jy) / 0.2) ** 2 < 1)
    if subject == "landscape":  # sky over a ridge over ground
        horizon = 0.5 + jy + 0.06 * np.sin(2 * np.pi * (x * rng.uniform(1, 3) + jx))
        return np.where(y < horizon, 1.0 - y, -0.6 - 0.4 * y)
    if subject in ("architecture", "street"):
        field = np.full_like(x, -0.6)
        left = 0.0
        while left < 1.0:  # a row of buildings of seeded widths and heights
            width, top = rng.uniform(0.12, 0.3), rng.uniform(0.1, 0.5)
            field[(x >= left) & (x < left + width) & (y > top)] = 1.0 if subject == "architecture" else 0.6
            left += width + rng.uniform(0.02, 0.08)
        if subject == "street":  # a road narrowing to a vanishing point
            field[(y > 0.55) & (np.abs(x - 0.5 - jx) < (y - 0.55) * 0.9)] = -1.0
        return field
    if subject == "food":  # a plate with food on it
        r = np.hypot(x - 0.5 - jx, y - 0.5 - jy)
        return np.where(r < 0.18, -0.5, np.where(r < 0.36, 1.0, -1.0))
    if subject == "product":  # one object centred on a plain backdrop
        return _inside((np.abs(x - 0.5 - jx) < 0.16) & (np.abs(y - 0.52 - jy) < 0.3))
    if subject == "fantasy":  # a glow around a seeded point
        return 1.0 - 2.0 * np.clip(np.hypot(x - 0.5 - jx * 3, y - 0.4 - jy * 3) / 0.5, 0, 1)
    return 1.0 - (x + y)  # default: a diagonal light gradient


GAMMA = 2.2  # the display encoding the albedo is written in; shading is applied in linear light


def _shading(height: np.ndarray, contrast: float, rng: np.random.Generator) -> np.ndarray:
    """Lambertian shading of the relief under one directional key light plus ambient fill (Phong's
    ambient + diffuse terms, without the specular one). Hard light (high contrast) comes in low from
    the side with little fill; soft light from high up with much fill."""
    gy, gx = np.gradient(height)
    bump = 2.0 + 6.0 * contrast  # how steep the relief's slopes read under the light
    normals = np.stack([-bump * gx, -bump * gy, np.ones_like(height)], axis=-1)
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    azimuth = rng.uniform(0, 2 * np.pi)
    elevation = np.radians(70.0 - 50.0 * contrast)
    light = np.array([np.cos(azimuth) * np.cos(elevation), np.sin(azimuth) * np.cos(elevation), np.sin(elevation)])
    ambient = 0.8 - 0.7 * contrast
    diffuse = np.clip(normals @ light, 0.0, None)
    return ambient + (1.0 - ambient) * diffuse / max(float(light[2]), 1e-6)  # a flat surface gets the full key


def render(style: RenderStyle, seed: int, width: int = 64, height: int = 64) -> Image.Image:
    """One image of `style`: a painted relief lit by a key light. The subject's layout sets where the
    surface is lighter or darker paint (albedo); the pattern is the relief; the light's direction,
    hardness and fill come from the contrast and the seed; exposure sets the mean brightness. Shading
    multiplies all three channels alike, so the hue stays the named one. The layout's randomness
    (pattern phase, placement, light direction) comes from `seed` only."""
    rng = np.random.default_rng([seed, 1])  # independent of style_for's stream
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    x, y = (x + 0.5) / width, (y + 0.5) / height
    composition = _composition(style.subject, rng, x, y)
    relief = _relief(style.pattern, style.frequency, rng, x, y)
    shading = _shading(relief, style.contrast, rng)
    paint = 1.0 + (0.2 + 0.5 * style.contrast) * composition  # lighter figure, darker ground
    light = paint * shading
    light /= float(light.mean())  # exposure: the frame's mean comes out at the style's brightness
    albedo = np.array(colorsys.hsv_to_rgb(style.hue, style.saturation, style.brightness)) ** GAMMA
    pixels = (albedo * light[..., None]) ** (1.0 / GAMMA)
    pixels += rng.normal(0, 0.006, size=pixels.shape)  # faint sensor-like noise (about 1.5 grey levels)
    return Image.fromarray((pixels.clip(0, 1) * 255 + 0.5).astype(np.uint8), mode="RGB")


class OfflineRenderer:
    """`ImageGenerator` without weights: the demo profile's stand-in, never presented as a diffusion model."""

    name = "offline renderer (fixed public colour vocabulary; not a diffusion model)"
    vocabulary_version = VOCABULARY_VERSION
    token_limit = CLIP_TOKEN_LIMIT
    token_count_method = "approximate: one token per word or punctuation mark, plus start and end markers"

    def __init__(self, width: int = 64, height: int = 64):
        if width < 8 or height < 8:
            raise ValueError(f"the offline renderer draws at least 8x8 pixels, got {width}x{height}")
        self.width, self.height = width, height

    def count_tokens(self, prompt: str) -> int:
        return approximate_clip_tokens(prompt)

    def fit_prompt(self, prompt: str) -> tuple[str, bool]:
        return fit_by_words(prompt, self.count_tokens, self.token_limit)

    def style_for(self, prompt: str, seed: int) -> RenderStyle:
        return style_for(prompt, seed)

    def generate(self, prompts: Sequence[str], seeds: Sequence[int], *,
                 progress: Callable[[str], None] | None = None) -> list[Image.Image]:
        prompts, seeds = check_request(prompts, seeds)
        images = [render(style_for(p, s), s, self.width, self.height) for p, s in zip(prompts, seeds, strict=True)]
        (progress or log.info)(f"offline renderer: {len(images)} images of {self.width}x{self.height}")
        return images
