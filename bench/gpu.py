"""GPU benchmark: image embedding, diffusion and encoder training throughput on whatever the machine has.

    .venv/bin/python bench/gpu.py --out bench/out/gpu.json    # GPU machine, after `make setup-gpu`
    .venv/bin/python bench/gpu.py --sizes tiny               # any machine: tiny models, under a minute on 2 cores

Every model has random weights; nothing is downloaded. Three figures:
(1) image embedding: the project's `OpenClipEncoder` (the `open_clip` backend of `image_embeddings`)
    with ViT-L-14-336 in fp32 as the pipeline runs it, batch sizes 1 and 64: images/s through
    `encode` (PIL preprocessing on one thread included) and of the model alone (preprocessed
    tensors already on the device);
(2) diffusion: an SDXL-sized UNet (SDXL base's configuration, 2.6B parameters) at 1024x1024
    (128x128 latents), 30 Euler steps with classifier-free guidance (the batch doubled), fp16 on a
    GPU: images/s of the denoising loop (text encoders and VAE decode are not included);
(3) encoder training: seed edges/s of the project's training step (its edge data loader and
    `optimization_step`) on bench/encoder.py's graph of about 1M edges with that benchmark's
    settings; on a GPU only where DGL's CUDA build is installed, otherwise the reason it was skipped.
`--sizes tiny` (the default without a GPU) swaps in tiny models, images and graph so that every path
runs on the CPU; its figures only show that the code runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("DGLBACKEND", "pytorch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from zipp_assets.devices import DeviceUnavailable, dgl_has_cuda, require_device  # noqa: E402

# SDXL base 1.0's UNet configuration (unet/config.json), written out so no file is fetched.
SDXL_UNET = {
    "sample_size": 128, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280), "attention_head_dim": (5, 10, 20),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "transformer_layers_per_block": (1, 2, 10), "cross_attention_dim": 2048, "use_linear_projection": True,
    "addition_embed_type": "text_time", "addition_time_embed_dim": 256, "projection_class_embeddings_input_dim": 2816,
}
TINY_UNET = {
    "sample_size": 16, "in_channels": 4, "out_channels": 4, "layers_per_block": 1,
    "block_out_channels": (32, 64), "attention_head_dim": (2, 4), "norm_num_groups": 8,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"), "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
    "transformer_layers_per_block": (1, 1), "cross_attention_dim": 32, "use_linear_projection": True,
    "addition_embed_type": "text_time", "addition_time_embed_dim": 8, "projection_class_embeddings_input_dim": 80,
}
# SDXL's own scheduler settings (scheduler/scheduler_config.json).
SDXL_SCHEDULER = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
                  "timestep_spacing": "leading", "steps_offset": 1}
TINY_CLIP = {"embed_dim": 16,
             "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
             "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1}}
TINY_CLIP_NAME = "zipp-bench-tiny"


@dataclass(frozen=True)
class Sizes:
    clip_model: str
    clip_batch_sizes: tuple[int, ...]
    clip_batches: int  # timed batches per batch size (at least 64 images), after one warm-up batch
    image_side: int  # synthetic input photos are this tall and 3/4 as wide
    unet: dict
    diffusion_batch_sizes: tuple[int, ...]
    diffusion_steps: int
    prompt_tokens: int
    graph: tuple[int, int, int]  # users, subreddits, mean edges per user (bench/encoder.py's generator)
    encoder_batches: int
    encoder_batch_size: int


FULL = Sizes(clip_model="ViT-L-14-336", clip_batch_sizes=(1, 64), clip_batches=8, image_side=512,
             unet=SDXL_UNET, diffusion_batch_sizes=(1, 4), diffusion_steps=30, prompt_tokens=77,
             graph=(100_000, 2_000, 11), encoder_batches=30, encoder_batch_size=1024)
TINY = Sizes(clip_model=TINY_CLIP_NAME, clip_batch_sizes=(1, 64), clip_batches=2, image_side=64,
             unet=TINY_UNET, diffusion_batch_sizes=(1, 2), diffusion_steps=3, prompt_tokens=8,
             graph=(2_000, 100, 6), encoder_batches=4, encoder_batch_size=256)


@dataclass
class Report:
    machine: dict
    sizes: str
    results: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)

    def add(self, benchmark: str, setting: str, value: float, unit: str, device: str) -> None:
        row = {"benchmark": benchmark, "setting": setting, "value": value, "unit": unit}
        if device.startswith("cuda"):
            row["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        self.results.append(row)
        print(f"  {benchmark:16s} {setting:58s} {value:12,.2f} {unit}", flush=True)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak_memory(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def machine(device: str) -> dict:
    from importlib.metadata import version

    description = {"device": device, "torch": torch.__version__, "dgl": version("dgl"), "dgl_cuda": dgl_has_cuda(),
                   "cpu_cores": os.cpu_count()}
    if device.startswith("cuda"):
        description |= {"gpu": torch.cuda.get_device_name(device), "gpus": torch.cuda.device_count(),
                        "cuda": torch.version.cuda}
    return description


def synthetic_photos(count: int, side: int, seed: int = 0) -> list:
    """Noise photos at a web-image size, so preprocessing costs what a real posted image costs."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, size=(side, side * 3 // 4, 3), dtype=np.uint8)) for _ in range(count)]


def image_embedding(report: Report, device: str, sizes: Sizes) -> None:
    import open_clip

    from zipp_assets.imaging.encoders import OpenClipEncoder

    reset_peak_memory(device)
    if sizes.clip_model == TINY_CLIP_NAME:
        with tempfile.TemporaryDirectory() as folder:  # registered like a real config; the registry keeps it in memory
            (Path(folder) / f"{TINY_CLIP_NAME}.json").write_text(json.dumps(TINY_CLIP))
            open_clip.add_model_config(folder)
    encoder = OpenClipEncoder(sizes.clip_model, pretrained=None, device=device)
    for batch_size in sizes.clip_batch_sizes:
        encoder.batch_size = batch_size
        batches = max(sizes.clip_batches, -(-64 // batch_size))  # small batches run more often, for a steady figure
        images = synthetic_photos(batch_size * batches, sizes.image_side, seed=batch_size)
        encoder.encode(images[:batch_size])  # warm-up: kernels chosen, memory pooled
        started = time.perf_counter()
        vectors = encoder.encode(images)  # returns host arrays, so the device has finished
        seconds = time.perf_counter() - started
        assert vectors.shape == (len(images), encoder.dim)
        report.add("image embedding", f"{sizes.clip_model} fp32, batch {batch_size}, encode() with preprocessing",
                   len(images) / seconds, "images/s", device)

        batch = torch.stack([encoder.preprocess(image) for image in images[:batch_size]]).to(device)
        with torch.inference_mode():
            encoder.model.encode_image(batch)
            synchronize(device)
            started = time.perf_counter()
            for _ in range(batches):
                encoder.model.encode_image(batch)
            synchronize(device)
        seconds = time.perf_counter() - started
        report.add("image embedding", f"{sizes.clip_model} fp32, batch {batch_size}, model only",
                   batch_size * batches / seconds, "images/s", device)
    del encoder


def denoise(unet, scheduler, batch_size: int, steps: int, prompt_tokens: int, device: str, dtype) -> torch.Tensor:
    """SDXL's sampling loop: classifier-free guidance doubles the batch at every step."""
    config = unet.config
    pooled_dim = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
    side = config.sample_size
    generator = torch.Generator(device="cpu").manual_seed(0)
    latents = torch.randn((batch_size, config.in_channels, side, side), generator=generator).to(device, dtype)
    prompt_shape = (2 * batch_size, prompt_tokens, config.cross_attention_dim)
    prompts = torch.randn(prompt_shape, generator=generator).to(device, dtype)
    pooled = torch.randn((2 * batch_size, pooled_dim), generator=generator).to(device, dtype)
    # original size, crop offset and target size, as SDXL conditions on them
    pixels = side * 8
    time_ids = torch.tensor([[pixels, pixels, 0, 0, pixels, pixels]], device=device, dtype=dtype)
    time_ids = time_ids.repeat(2 * batch_size, 1)
    scheduler.set_timesteps(steps, device=device)
    latents = latents * scheduler.init_noise_sigma
    guidance = 5.0
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(torch.cat([latents, latents]), t)
        noise = unet(model_input, t, encoder_hidden_states=prompts,
                     added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample
        unconditional, conditional = noise.chunk(2)
        latents = scheduler.step(unconditional + guidance * (conditional - unconditional), t, latents).prev_sample
    return latents


def diffusion(report: Report, device: str, sizes: Sizes) -> None:
    from diffusers import EulerDiscreteScheduler, UNet2DConditionModel

    reset_peak_memory(device)
    precision = "fp16" if device.startswith("cuda") else "fp32"  # fp16 kernels are GPU kernels
    dtype = torch.float16 if precision == "fp16" else torch.float32
    torch.manual_seed(0)
    with torch.device(device):  # random init on the device: 2.6B parameters initialise in seconds there
        unet = UNet2DConditionModel(**sizes.unet)
    unet = unet.to(dtype).eval()
    parameters = sum(p.numel() for p in unet.parameters())
    scheduler = EulerDiscreteScheduler(**SDXL_SCHEDULER)
    pixels = sizes.unet["sample_size"] * 8
    with torch.inference_mode():
        for batch_size in sizes.diffusion_batch_sizes:
            denoise(unet, scheduler, batch_size, 2, sizes.prompt_tokens, device, dtype)  # warm-up at the same shapes
            synchronize(device)
            started = time.perf_counter()
            # The latents are not checked: random fp16 weights may overflow, at the same speed.
            denoise(unet, scheduler, batch_size, sizes.diffusion_steps, sizes.prompt_tokens, device, dtype)
            synchronize(device)
            seconds = time.perf_counter() - started
            setting = (f"UNet {parameters / 1e6:,.0f}M params {precision}, {pixels}x{pixels}, "
                       f"{sizes.diffusion_steps} steps, CFG, batch {batch_size}")
            report.add("diffusion", setting, batch_size / seconds, "images/s", device)
    del unet


def encoder_training(report: Report, device: str, sizes: Sizes) -> None:
    try:
        require_device(device, needs_dgl=True)
    except DeviceUnavailable as error:
        report.skipped.append({"benchmark": "encoder training", "reason": str(error)})
        print(f"  encoder training skipped: {error}", flush=True)
        return
    from bench.encoder import synthetic_graph, time_loop
    from zipp_assets.encoder.data import FORWARD
    from zipp_assets.encoder.train import (
        TrainConfig,
        TrainingObjective,
        build_model,
        edge_dataloader,
        optimization_step,
    )

    reset_peak_memory(device)
    torch.manual_seed(0)
    users, subreddits, edges_per_user = sizes.graph
    data = synthetic_graph(users, subreddits, edges_per_user)
    total_edges = sum(len(v) for v in data.edges.values())
    config = TrainConfig(hidden=64, heads=4, fanouts=(15, 10), batch_size=sizes.encoder_batch_size, negatives=8,
                         device=device)
    graph = data.message_graph().to(device)
    seeds = torch.arange(graph.num_edges(FORWARD)).to(device)
    objective = TrainingObjective(build_model(data, config), data, config).to(device)
    optimizer = torch.optim.AdamW(objective.parameters(), lr=config.learning_rate)

    def step(*batch):  # the training loop's own step; it reads the loss back, so the device has finished
        optimization_step(objective, optimizer, batch)

    rate = time_loop(edge_dataloader(graph, seeds, data, config), step, sizes.encoder_batches)
    report.add("encoder training", f"{total_edges:,} edges, hidden 64, fan-outs (15, 10), batch "
               f"{sizes.encoder_batch_size}, 8 negatives", rate, "seed edges/s", device)


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", choices=("full", "tiny"), help="default: full on a GPU, tiny otherwise")
    parser.add_argument("--only", choices=("embedding", "diffusion", "encoder"), action="append",
                        help="run only these parts (repeatable); default: all three")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    require_device(args.device, needs_dgl=False)  # torch must see the GPU for every part; DGL is checked per part
    size_name = args.sizes or ("full" if args.device.startswith("cuda") else "tiny")
    sizes = FULL if size_name == "full" else TINY
    report = Report(machine=machine(args.device), sizes=size_name)
    print(f"machine: {json.dumps(report.machine)}; sizes {size_name}", flush=True)
    parts = {"embedding": image_embedding, "diffusion": diffusion, "encoder": encoder_training}
    for name in args.only or parts:
        parts[name](report, args.device, sizes)
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()  # each part starts from an empty device, so its peak is its own
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"machine": report.machine, "sizes": report.sizes, "results": report.results,
                                        "skipped": report.skipped}, indent=2))
        print(f"written {args.out}")
    return report


if __name__ == "__main__":
    try:
        main()
    except DeviceUnavailable as error:
        sys.exit(str(error))
