"""Small PNG images whose pixels follow a visual style (hue, saturation, brightness, texture)."""

from __future__ import annotations

import colorsys
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

PATTERNS = ("stripes", "dots", "checks", "noise", "rings")


@dataclass(frozen=True)
class Style:
    hue: float  # 0..1
    saturation: float  # 0..1
    brightness: float  # 0..1
    pattern: str
    frequency: float  # cycles across the image

    def jittered(self, rng: np.random.Generator, amount: float = 0.04) -> Style:
        return Style(
            hue=float((self.hue + rng.normal(0, amount)) % 1.0),
            saturation=float(np.clip(self.saturation + rng.normal(0, amount), 0.05, 1.0)),
            brightness=float(np.clip(self.brightness + rng.normal(0, amount), 0.1, 1.0)),
            pattern=self.pattern,
            frequency=float(max(1.0, self.frequency * np.exp(rng.normal(0, 0.1)))),
        )


def render_png(style: Style, rng: np.random.Generator, size: int = 32) -> bytes:
    """Render one image in `style` (with per-image randomness) and return PNG bytes."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    phase = rng.uniform(0, 2 * np.pi)
    angle = rng.uniform(0, np.pi)
    f = style.frequency * 2 * np.pi
    if style.pattern == "stripes":
        texture = np.sin(f * (x * np.cos(angle) + y * np.sin(angle)) + phase)
    elif style.pattern == "dots":
        texture = np.sin(f * x + phase) * np.sin(f * y + phase)
    elif style.pattern == "checks":
        texture = np.sign(np.sin(f * x + phase) * np.sin(f * y))
    elif style.pattern == "rings":
        cx, cy = rng.uniform(0.3, 0.7, size=2)
        texture = np.sin(f * np.hypot(x - cx, y - cy) * 2 + phase)
    else:
        texture = rng.normal(0, 1, size=(size, size)).clip(-1.5, 1.5) / 1.5
    accent_hue = (style.hue + 0.5) % 1.0
    base = np.array(colorsys.hsv_to_rgb(style.hue, style.saturation, style.brightness), dtype=np.float32)
    accent = np.array(
        colorsys.hsv_to_rgb(accent_hue, style.saturation * 0.6, 1.0 - style.brightness * 0.5), dtype=np.float32
    )
    mix = ((texture + 1) / 2)[..., None] * 0.35
    pixels = base * (1 - mix) + accent * mix + rng.normal(0, 0.02, size=(size, size, 3))
    image = Image.fromarray((pixels.clip(0, 1) * 255).astype(np.uint8), mode="RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
