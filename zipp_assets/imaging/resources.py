"""The `ImageEncoder` resource: which backend, which weights, which device."""

import dagster as dg

from zipp_assets.imaging.encoders import ImageEncoder, OpenClipEncoder, PixelStatsEncoder


class ImageEncoderResource(dg.ConfigurableResource):
    """`pixel_stats` (offline stand-in, demo) or `open_clip` (production: local cache or checkpoint)."""

    backend: str = "pixel_stats"
    model_name: str = "ViT-L-14-336"
    pretrained: str = "openai"  # a tag found in the local cache, or a checkpoint file path
    device: str = "cpu"
    batch_size: int = 64
    cache_dir: str | None = None

    @classmethod
    def for_profile(cls, profile: str) -> "ImageEncoderResource":
        return cls(backend="open_clip") if profile == "production" else cls()

    @property
    def encoder_name(self) -> str:
        """The name `build()` would give, without loading any weights."""
        if self.backend == "open_clip":
            return OpenClipEncoder.name_for(self.model_name, self.pretrained)
        return self.build().name

    def build(self) -> ImageEncoder:
        if self.backend == "pixel_stats":
            return PixelStatsEncoder()
        if self.backend == "open_clip":
            return OpenClipEncoder(self.model_name, self.pretrained, self.device, self.batch_size, cache_dir=self.cache_dir)
        raise ValueError(f"unknown image encoder backend {self.backend!r}; expected pixel_stats or open_clip")
