"""`ImageGenerator.generate(prompts, seeds) -> images`, one image per prompt, with two backends.

- `DiffusersGenerator`: any diffusers text-to-image pipeline, by model id (read from the local
  Hugging Face cache) or local folder; nothing is ever downloaded. Weights load on first use.
- `OfflineRenderer` (in `offline_renderer`): the demo profile's honest stand-in with no weights.

The seed alone fixes an image's randomness for a given prompt: methods given the same seed differ
only by their prompts. A prompt longer than the text encoder's limit is cut by `fit_prompt`, which
says so, so that callers record truncation instead of a pipeline cutting silently.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from PIL import Image

from zipp_assets.devices import require_device
from zipp_assets.imaging.generation import check_request, fit_by_words
from zipp_assets.imaging.offline_renderer import OfflineRenderer
from zipp_assets.imaging.prompt_vocabulary import VOCABULARY_VERSION

__all__ = ["DTYPES", "VOCABULARY_VERSION", "DiffusersGenerator", "ImageGenerator", "OfflineRenderer",
           "check_request", "fit_by_words"]

log = logging.getLogger(__name__)

DTYPES = ("float32", "float16", "bfloat16")
# A tokenizer's model_max_length above this is transformers' "no limit" sentinel, not a real context.
_NO_LIMIT = 1_000_000


class ImageGenerator(Protocol):
    name: str  # shown in the UI and the report; says what made the images
    token_limit: int | None  # tokens the text encoder reads (start/end markers included); None: no limit

    def generate(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[Image.Image]: ...

    def count_tokens(self, prompt: str) -> int: ...

    def fit_prompt(self, prompt: str) -> tuple[str, bool]: ...


class DiffusersGenerator:
    """A diffusers text-to-image pipeline loaded with `AutoPipelineForText2Image` from local files only.

    Batches of `batch_size` prompts go through one pipeline call each, with one CPU `torch.Generator`
    per image seeded with that image's seed, so an image does not depend on its batch or device.

    Token limit: the smallest `model_max_length` among the pipeline's tokenizers (`tokenizer`,
    `tokenizer_2`, ...). For SD 1.x/2.x and SDXL (two CLIP tokenizers) that is CLIP's 77; for SD3 and
    Flux, whose T5 encoder reads longer prompts, it is still the CLIP tokenizer's 77, since the CLIP
    encoders (and the pooled embedding) see nothing past it. `limiting_tokenizer` names the one used.
    """

    def __init__(self, model: str, *, dtype: str = "float32", num_inference_steps: int = 30,
                 guidance_scale: float = 7.5, width: int | None = None, height: int | None = None,
                 batch_size: int = 4, negative_prompt: str | None = None, cpu_offload: bool = False,
                 device: str = "cpu", cache_dir: str | None = None):
        if not model:
            raise ValueError("the diffusers generator needs model, a model id in the local cache or a folder")
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; expected one of {DTYPES}")
        if num_inference_steps < 1 or batch_size < 1:
            raise ValueError(f"num_inference_steps and batch_size must be >= 1, got {num_inference_steps}, "
                             f"{batch_size}")
        if (width is None) != (height is None) or any(v is not None and (v < 8 or v % 8) for v in (width, height)):
            raise ValueError(f"width and height are both unset or both multiples of 8, got {width}x{height}")
        if dtype == "float16" and not device.startswith("cuda"):
            raise ValueError("float16 needs a cuda device (torch's CPU kernels lack half-precision layer norm); "
                             "use float32 or bfloat16 on the CPU")
        if model.startswith("~"):
            model = str(Path(model).expanduser())
        if model.startswith(("/", ".")) and not Path(model).is_dir():
            raise FileNotFoundError(f"diffusion model folder {model!r} does not exist")
        if cpu_offload and not device.startswith("cuda"):
            raise ValueError("cpu_offload moves each model to a GPU only while it runs: it needs a cuda device")
        require_device(device, needs_dgl=False)  # before any weights are read
        self.model, self.dtype, self.device, self.cache_dir = model, dtype, device, cache_dir
        self.num_inference_steps, self.guidance_scale = num_inference_steps, guidance_scale
        self.width, self.height, self.batch_size = width, height, batch_size
        self.negative_prompt, self.cpu_offload = negative_prompt, cpu_offload
        self.name = self.name_for(model, num_inference_steps, guidance_scale, dtype, width, height)
        self._pipeline = None
        self._tokenizer = None
        self._limit: int | None = None
        self.limiting_tokenizer: str | None = None  # which tokenizer sets token_limit, once it is read

    @staticmethod
    def name_for(model: str, steps: int, guidance: float, dtype: str, width: int | None, height: int | None) -> str:
        """The name `__init__` gives, without a device check or weights (for metadata)."""
        size = f", {width}x{height}" if width else ""
        return f"diffusers:{model} ({steps} steps, guidance {guidance:g}, {dtype}{size})"

    # --- tokens -----------------------------------------------------------------------------------

    def _load_tokenizer(self):
        """The limiting tokenizer, read from the pipeline's folders without loading any weights."""
        if self._tokenizer is None:
            import transformers
            from diffusers import DiffusionPipeline

            index = self._local(DiffusionPipeline.load_config, self.model)
            candidates = []
            for component in sorted(k for k in index if k.startswith("tokenizer")):
                library, class_name = index[component] if isinstance(index[component], list) else (None, None)
                if library != "transformers" or class_name is None:
                    continue
                tokenizer = self._local(getattr(transformers, class_name).from_pretrained, self.model,
                                        subfolder=component)
                limit = int(tokenizer.model_max_length)
                candidates.append((limit if limit < _NO_LIMIT else _NO_LIMIT, component, tokenizer))
            if not candidates:
                raise ValueError(f"{self.model!r} has no transformers tokenizer in its model_index.json")
            limit, component, self._tokenizer = min(candidates, key=lambda c: c[0])
            self._limit = None if limit >= _NO_LIMIT else limit
            self.limiting_tokenizer = f"{component} ({type(self._tokenizer).__name__}, {self._limit})"
        return self._tokenizer

    @property
    def token_limit(self) -> int | None:
        self._load_tokenizer()
        return self._limit

    def count_tokens(self, prompt: str) -> int:
        """Tokens the limiting text encoder would read, its start and end markers included, uncut."""
        tokenizer = self._load_tokenizer()
        return len(tokenizer(prompt, truncation=False, verbose=False)["input_ids"])

    def fit_prompt(self, prompt: str) -> tuple[str, bool]:
        """The prompt cut at a word boundary to what the real tokenizer keeps, and whether it was cut."""
        return fit_by_words(prompt, self.count_tokens, self.token_limit)

    # --- images -----------------------------------------------------------------------------------

    def _local(self, load, *args, **kwargs):
        """`load(*args, local_files_only=True, ...)`, with a clear error when the files are not here."""
        try:
            return load(*args, local_files_only=True, cache_dir=self.cache_dir, **kwargs)
        except OSError as error:
            raise FileNotFoundError(
                f"diffusion model {self.model!r} is not available locally and nothing is downloaded at run time: "
                "point model at a local pipeline folder, or fill the Hugging Face cache on a machine with network "
                f"(`huggingface-cli download {self.model}`) and set HF_HOME or cache_dir to it ({error})") from error

    def _load(self):
        if self._pipeline is None:
            import torch
            from diffusers import AutoPipelineForText2Image

            started = time.perf_counter()
            pipeline = self._local(AutoPipelineForText2Image.from_pretrained, self.model,
                                   torch_dtype=getattr(torch, self.dtype))
            pipeline.set_progress_bar_config(disable=True)  # progress is logged per batch instead
            if self.cpu_offload:
                pipeline.enable_model_cpu_offload(device=self.device)
            else:
                pipeline.to(self.device)
            self._pipeline = pipeline
            log.info("loaded %s as %s in %.1fs", self.model, type(pipeline).__name__, time.perf_counter() - started)
        return self._pipeline

    def generate(self, prompts: Sequence[str], seeds: Sequence[int], *,
                 progress: Callable[[str], None] | None = None) -> list[Image.Image]:
        import torch

        prompts, seeds = check_request(prompts, seeds)
        if not prompts:
            return []
        pipeline = self._load()
        say = progress or log.info
        batches = range(0, len(prompts), self.batch_size)
        images: list[Image.Image] = []
        for number, start in enumerate(batches, 1):
            batch_prompts = prompts[start : start + self.batch_size]
            batch_seeds = seeds[start : start + self.batch_size]
            kwargs = dict(prompt=batch_prompts, num_inference_steps=self.num_inference_steps,
                          guidance_scale=self.guidance_scale, output_type="pil",
                          generator=[torch.Generator("cpu").manual_seed(seed) for seed in batch_seeds])
            if self.width is not None:
                kwargs.update(width=self.width, height=self.height)
            if self.negative_prompt is not None:
                kwargs["negative_prompt"] = [self.negative_prompt] * len(batch_prompts)
            started = time.perf_counter()
            with torch.inference_mode():
                batch_images = pipeline(**kwargs).images
            if len(batch_images) != len(batch_prompts):
                raise RuntimeError(f"{type(pipeline).__name__} returned {len(batch_images)} images for "
                                   f"{len(batch_prompts)} prompts")
            images.extend(image.convert("RGB") for image in batch_images)
            say(f"diffusers batch {number}/{len(batches)}: {len(batch_images)} images in "
                f"{time.perf_counter() - started:.1f}s ({len(images)}/{len(prompts)})")
        return images
