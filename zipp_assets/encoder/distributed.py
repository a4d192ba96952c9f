"""Data-parallel training over several processes with torch.distributed.

gloo on CPU, NCCL on GPUs (one process per device, cuda:<rank>). Each process samples its share
of the seed edges (DGL's DataLoader with use_ddp) and DistributedDataParallel averages gradients;
rank 0 validates, decides when to stop, and hands back the best weights.

torch.distributed's teardown can hang after the work is done (pytorch/pytorch#75097: a process
that never returns from `destroy_process_group` or interpreter exit). Each rank therefore marks
that it has finished, and a rank still alive `TEARDOWN_GRACE_SECONDS` after every rank finished is
killed: its work is already saved, and a run must not hang on its cleanup.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing.connection
import os
import socket
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from zipp_assets.encoder.data import GraphData
from zipp_assets.encoder.train import TrainConfig, TrainResult, build_model, train

log = logging.getLogger(__name__)
TEARDOWN_GRACE_SECONDS = 60.0


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
        mark_finished(Path(out_dir), rank)
    finally:
        dist.destroy_process_group()


def mark_finished(out_dir: Path, rank: int) -> None:
    (out_dir / f"rank{rank}.finished").touch()


def join_ranks(context: mp.ProcessContext, out_dir: Path, world_size: int,
               grace_seconds: float = TEARDOWN_GRACE_SECONDS, poll_seconds: float = 1.0) -> list[int]:
    """Wait for every rank of `context` to exit; re-raises a rank's failure as `mp.spawn` does.
    Returns the pids of ranks killed because they had not exited `grace_seconds` after every rank
    marked itself finished (a hung teardown)."""
    all_finished_at = None
    try:
        while True:
            running = [p for p in context.processes if p.exitcode is None]
            if any(p.exitcode not in (None, 0) for p in context.processes):
                # A rank failed. torch's own join would SIGTERM the others and wait for them without a
                # limit; a rank inside a collective may not die of SIGTERM (CI saw one outlive 120 s).
                failed = {p.sentinel for p in context.processes if p.exitcode not in (None, 0)}
                _kill(running)
                for sentinel in [s for s in context.sentinels if s not in failed]:  # so join reports the failed
                    context.sentinels.pop(sentinel)                                  # rank, not one killed here
                context.join()  # raises the failed rank's error as mp.spawn does
                return []
            if not running:
                context.join()
                return []
            multiprocessing.connection.wait([p.sentinel for p in running], timeout=poll_seconds)
            if all_finished_at is None and all((out_dir / f"rank{r}.finished").exists() for r in range(world_size)):
                all_finished_at = time.monotonic()
            if all_finished_at is not None and time.monotonic() - all_finished_at > grace_seconds:
                stuck = [p for p in context.processes if p.is_alive()]
                log.warning("ranks %s finished their work %.0f s ago but have not exited (a hung teardown); killing "
                            "them", [p.pid for p in stuck], grace_seconds)
                _kill(stuck)
                return [p.pid for p in stuck]
    except BaseException:
        # Interrupted (Ctrl-C, a timeout) or a rank failed: no rank outlives the call. A rank left
        # running would also hang the interpreter's exit, which joins its child processes.
        _kill([p for p in context.processes if p.is_alive()])
        raise


def _kill(processes: list) -> None:
    for process in processes:
        process.kill()
    for process in processes:
        process.join()


def train_distributed(data: GraphData, config: TrainConfig, world_size: int, resume_dir: Path | None = None,
                      fingerprint: str = "") -> TrainResult:
    if world_size < 2:
        return train(data, config, resume_dir=resume_dir, fingerprint=fingerprint)
    if config.device.startswith("cuda") and torch.cuda.device_count() < world_size:
        raise RuntimeError(f"{world_size} processes need {world_size} GPUs; {torch.cuda.device_count()} visible")
    with tempfile.TemporaryDirectory(prefix="zipp-ddp-") as out_dir:
        context = mp.start_processes(_worker, args=(world_size, _free_port(), data, config, out_dir, resume_dir, fingerprint),
                                     nprocs=world_size, join=False, start_method="spawn")
        join_ranks(context, Path(out_dir), world_size)
        summary = json.loads((Path(out_dir) / "result.json").read_text())
        model = build_model(data, config)
        model.load_state_dict(torch.load(Path(out_dir) / "model.pt", weights_only=True))
    return TrainResult(model=model, config=config, history=summary["history"], best_epoch=summary["best_epoch"],
                       best_val_posting_accuracy=summary["best_val_posting_accuracy"], seconds=summary["seconds"],
                       seed_edges_per_second=summary["seed_edges_per_second"])
