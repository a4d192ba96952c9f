"""`ImageEncoder.encode(images) -> float32[n, d]`, L2-normalised, with two backends.

- `PixelStatsEncoder`: an offline stand-in with no weights (colour, texture and frequency
  statistics). It is what the demo profile uses; it is not CLIP and is never presented as CLIP.
- `OpenClipEncoder`: open_clip with a named architecture and either a pretrained tag (from the
  local cache: nothing is downloaded at run time) or a local checkpoint file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
from PIL import Image

from zipp_assets.devices import require_device


class ImageEncoder(Protocol):
    name: str  # identifies architecture and weights: embeddings of different encoders never mix
    dim: int

    def encode(self, images: Sequence[Image.Image]) -> np.ndarray: ...


def l2_normalize(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.maximum(norms, 1e-12)).astype(np.float32)


class PixelStatsEncoder:
    """Colour histograms, gradient orientation and spatial-frequency energy of a 64x64 thumbnail."""

    name = "pixel-stats-v1"
    size = 64
    hue_bins, sat_bins, val_bins, orientation_bins, frequency_bands = 18, 6, 6, 8, 6
    dim = hue_bins + sat_bins + val_bins + orientation_bins + frequency_bands + 6

    def _features(self, image: Image.Image) -> np.ndarray:
        rgb = image.convert("RGB").resize((self.size, self.size), Image.Resampling.BILINEAR)
        hsv = np.asarray(rgb.convert("HSV"), dtype=np.float32) / 255.0
        pixels = np.asarray(rgb, dtype=np.float32) / 255.0
        hue, sat, val = hsv[..., 0].ravel(), hsv[..., 1].ravel(), hsv[..., 2].ravel()
        # Hue weighted by saturation: grey pixels carry no hue.
        hue_hist = np.histogram(hue, bins=self.hue_bins, range=(0, 1), weights=sat + 1e-3)[0]
        sat_hist = np.histogram(sat, bins=self.sat_bins, range=(0, 1))[0]
        val_hist = np.histogram(val, bins=self.val_bins, range=(0, 1))[0]
        grey = pixels.mean(axis=2)
        gy, gx = np.gradient(grey)
        magnitude = np.hypot(gx, gy)
        angle = np.mod(np.arctan2(gy, gx), np.pi)
        orientation = np.histogram(angle, bins=self.orientation_bins, range=(0, np.pi), weights=magnitude)[0]
        spectrum = np.abs(np.fft.fftshift(np.fft.fft2(grey - grey.mean())))
        yy, xx = np.indices(spectrum.shape) - self.size // 2
        radius = np.hypot(xx, yy) / (self.size / 2)
        bands = np.histogram(radius.ravel(), bins=self.frequency_bands, range=(0, 1), weights=spectrum.ravel())[0]
        moments = np.concatenate([pixels.reshape(-1, 3).mean(axis=0), pixels.reshape(-1, 3).std(axis=0)])
        parts = [hue_hist, sat_hist, val_hist, orientation, bands]
        parts = [p / max(p.sum(), 1e-12) for p in parts]
        return np.concatenate([*parts, moments]).astype(np.float32)

    def encode(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        return l2_normalize(np.stack([self._features(image) for image in images]))


class OpenClipEncoder:
    """open_clip image tower; `pretrained` is a tag resolved in the local cache or a checkpoint path."""

    def __init__(self, model_name: str, pretrained: str | None, device: str = "cpu", batch_size: int = 64,
                 precision: str = "fp32", cache_dir: str | None = None):
        import open_clip

        require_device(device, needs_dgl=False)  # before any weights are read
        self.device = device
        self.batch_size = batch_size
        self.model, _, self.preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=pretrained or None, device=device, precision=precision, cache_dir=cache_dir
        )
        self.model.eval()
        self.model_name = model_name
        self.name = self.name_for(model_name, pretrained)
        self.dim = int(self.model.visual.output_dim)

    @staticmethod
    def name_for(model_name: str, pretrained: str | None) -> str:
        return f"open_clip:{model_name}:{pretrained or 'random-init'}"

    def encode(self, images: Sequence[Image.Image]) -> np.ndarray:
        import torch

        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                batch = torch.stack([self.preprocess(im.convert("RGB")) for im in images[start : start + self.batch_size]])
                features = self.model.encode_image(batch.to(self.device))
                out.append(features.float().cpu().numpy())
        return l2_normalize(np.concatenate(out))

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """The text tower, for zero-shot descriptors in the same space as the images (L2-normalised)."""
        import open_clip
        import torch

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        tokenizer = open_clip.get_tokenizer(self.model_name)
        with torch.inference_mode():
            features = self.model.encode_text(tokenizer(list(texts)).to(self.device))
        return l2_normalize(features.float().cpu().numpy())
