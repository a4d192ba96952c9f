"""The `ImageEncoder` and `ImageGenerator` resources: which backend, which weights, which device."""

import os
from collections.abc import Mapping

import dagster as dg
from pydantic import Field

from zipp_assets.imaging.encoders import ImageEncoder, OpenClipEncoder, PixelStatsEncoder
from zipp_assets.imaging.generators import VOCABULARY_VERSION, DiffusersGenerator, ImageGenerator, OfflineRenderer


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


GENERATOR_BACKENDS = ("offline_renderer", "diffusers")
DIFFUSION_MODEL_ENV = "ZIPP_DIFFUSION_MODEL"
DEFAULT_DIFFUSION_MODEL = "stabilityai/stable-diffusion-xl-base-1.0"


class ImageGeneratorResource(dg.ConfigurableResource):
    """`offline_renderer` (the demo's stand-in, no weights) or `diffusers` (production: a text-to-image
    pipeline from the local Hugging Face cache or a local folder; never downloaded). Unset width, height
    and steps leave each backend's own defaults."""

    backend: str = Field(default="offline_renderer", description=f"one of {', '.join(GENERATOR_BACKENDS)}")
    model: str = Field(default=DEFAULT_DIFFUSION_MODEL,
                       description="diffusers: a model id in the local Hugging Face cache, or a pipeline folder")
    dtype: str = Field(default="float32", description="diffusers: float32, float16 (cuda only) or bfloat16")
    steps: int = 30
    guidance: float = 7.5
    width: int | None = None
    height: int | None = None
    batch_size: int = 4
    cpu_offload: bool = False
    device: str = "cpu"
    negative_prompt: str | None = None
    cache_dir: str | None = None

    @classmethod
    def for_profile(cls, profile: str, environ: Mapping[str, str] | None = None) -> "ImageGeneratorResource":
        """Demo: the offline renderer. Production: diffusers on the GPU in float16, the model named by
        ZIPP_DIFFUSION_MODEL (default SDXL base 1.0), read from the local cache."""
        if profile != "production":
            return cls()
        env = os.environ if environ is None else environ
        return cls(backend="diffusers", model=env.get(DIFFUSION_MODEL_ENV) or DEFAULT_DIFFUSION_MODEL,
                   dtype="float16", device="cuda")

    @property
    def uses_gpu(self) -> bool:
        """Whether generation runs on this host's GPU (and so belongs in the `gpu` pool)."""
        return self.backend == "diffusers" and self.device.startswith("cuda")

    @property
    def description(self) -> str:
        """One line for metadata: what makes the images; the stand-in says it is one."""
        if self.backend == "offline_renderer":
            return f"{OfflineRenderer.name}, vocabulary {VOCABULARY_VERSION}"
        name = DiffusersGenerator.name_for(self.model, self.steps, self.guidance, self.dtype, self.width, self.height)
        return f"{name} on {self.device}"

    def build(self) -> ImageGenerator:
        if self.backend == "offline_renderer":
            return OfflineRenderer(self.width or 64, self.height or 64)
        if self.backend == "diffusers":
            return DiffusersGenerator(
                self.model, dtype=self.dtype, num_inference_steps=self.steps, guidance_scale=self.guidance,
                width=self.width, height=self.height, batch_size=self.batch_size,
                negative_prompt=self.negative_prompt, cpu_offload=self.cpu_offload, device=self.device,
                cache_dir=self.cache_dir)
        raise ValueError(f"unknown image generator backend {self.backend!r}; expected one of {GENERATOR_BACKENDS}")
