"""Data-parallel training over several processes with torch.distributed.

gloo on CPU, NCCL on GPUs (one process per device, cuda:<rank>). Each process samples its share
of the seed edges (DGL's DataLoader with use_ddp) and DistributedDataParallel averages gradients;
rank 0 validates, decides when to stop, and hands back the best weights.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from zipp_assets.encoder.data import GraphData
from zipp_assets.encoder.train import TrainConfig, TrainResult, build_model, train


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, data: GraphData, config: TrainConfig, out_dir: str,
            resume_dir: Path | None, fingerprint: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    backend = "nccl" if config.device.startswith("cuda") else "gloo"
    if config.device.startswith("cuda"):
        config = dataclasses.replace(config, device=f"cuda:{rank}")
        torch.cuda.set_device(rank)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    dist.init_process_group(backend, rank=rank, world_size=world_size)
    try:
        result = train(data, config, progress=print if rank == 0 else (lambda _m: None), rank=rank, world_size=world_size,
                       resume_dir=resume_dir, fingerprint=fingerprint)
        if rank == 0:
            torch.save(result.model.state_dict(), Path(out_dir) / "model.pt")
            (Path(out_dir) / "result.json").write_text(json.dumps({
                "history": result.history, "best_epoch": result.best_epoch,
                "best_val_posting_accuracy": result.best_val_posting_accuracy,
                "seconds": result.seconds, "seed_edges_per_second": result.seed_edges_per_second,
            }))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def train_distributed(data: GraphData, config: TrainConfig, world_size: int, resume_dir: Path | None = None,
                      fingerprint: str = "") -> TrainResult:
    if world_size < 2:
        return train(data, config, resume_dir=resume_dir, fingerprint=fingerprint)
    if config.device.startswith("cuda") and torch.cuda.device_count() < world_size:
        raise RuntimeError(f"{world_size} processes need {world_size} GPUs; {torch.cuda.device_count()} visible")
    with tempfile.TemporaryDirectory(prefix="zipp-ddp-") as out_dir:
        mp.spawn(_worker, args=(world_size, _free_port(), data, config, out_dir, resume_dir, fingerprint), nprocs=world_size, join=True)
        summary = json.loads((Path(out_dir) / "result.json").read_text())
        model = build_model(data, config)
        model.load_state_dict(torch.load(Path(out_dir) / "model.pt", weights_only=True))
    return TrainResult(model=model, config=config, history=summary["history"], best_epoch=summary["best_epoch"],
                       best_val_posting_accuracy=summary["best_val_posting_accuracy"], seconds=summary["seconds"],
                       seed_edges_per_second=summary["seed_edges_per_second"])
