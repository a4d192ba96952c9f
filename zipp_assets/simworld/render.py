"""Small PNG images whose pixels follow a visual style (hue, saturation, brightness, contrast, texture).

The base colour carries hue, saturation and brightness; the texture swings each pixel towards a
lighter tint and a darker shade of the same hue, as far as the contrast says, so the mean colour
stays the style's colour and the pixel spread grows with contrast.
"""

from __future__ import annotations

import colorsys
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

PATTERNS = ("stripes", "dots", "checks", "noise", "rings")


@dataclass(frozen=True)
class Style:
    hue: float  # 0..1, on the colour circle
    saturation: float  # 0..1, muted .. vibrant
    brightness: float  # 0..1, dark .. bright
    pattern: str
    frequency: float  # cycles across the image
    contrast: float = 0.5  # 0..1, flat .. punchy

    def jittered(self, rng: np.random.Generator, amount: float = 0.04) -> Style:
        """The same style with per-image variation."""
        return Style(
            hue=float((self.hue + rng.normal(0, amount)) % 1.0),
            saturation=float(np.clip(self.saturation + rng.normal(0, amount), 0.05, 1.0)),
            brightness=float(np.clip(self.brightness + rng.normal(0, amount), 0.1, 1.0)),
            pattern=self.pattern,
            frequency=float(max(1.0, self.frequency * np.exp(rng.normal(0, 0.1)))),
            contrast=float(np.clip(self.contrast + rng.normal(0, amount), 0.0, 1.0)),
        )


def _texture(style: Style, rng: np.random.Generator, size: int) -> np.ndarray:
    """The style's pattern as values in [-1, 1]."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    phase = rng.uniform(0, 2 * np.pi)
    angle = rng.uniform(0, np.pi)
    f = style.frequency * 2 * np.pi
    if style.pattern == "stripes":
        return np.sin(f * (x * np.cos(angle) + y * np.sin(angle)) + phase)
    if style.pattern == "dots":
        return np.sin(f * x + phase) * np.sin(f * y + phase)
    if style.pattern == "checks":
        return np.sign(np.sin(f * x + phase) * np.sin(f * y))
    if style.pattern == "rings":
        cx, cy = rng.uniform(0.3, 0.7, size=2)
        return np.sin(f * np.hypot(x - cx, y - cy) * 2 + phase)
    return rng.normal(0, 1, size=(size, size)).clip(-1.5, 1.5) / 1.5


def render_png(style: Style, rng: np.random.Generator, size: int = 32) -> bytes:
    """Render one image in `style` (with per-image randomness) and return PNG bytes."""
    texture = _texture(style, rng, size)
    h, s, v = style.hue, style.saturation, style.brightness
    base = np.array(colorsys.hsv_to_rgb(h, s, v), dtype=np.float32)
    tint = np.array(colorsys.hsv_to_rgb(h, s * 0.6, v + 0.6 * (1.0 - v)), dtype=np.float32)
    shade = np.array(colorsys.hsv_to_rgb(h, min(1.0, s * 1.1), v * 0.35), dtype=np.float32)
    swing = (0.15 + 0.85 * style.contrast) * 0.8
    up = (np.clip(texture, 0, None) * swing)[..., None]
    down = (np.clip(-texture, 0, None) * swing)[..., None]
    pixels = base + up * (tint - base) + down * (shade - base) + rng.normal(0, 0.02, size=(size, size, 3))
    image = Image.fromarray((pixels.clip(0, 1) * 255).astype(np.uint8), mode="RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
