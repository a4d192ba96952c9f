"""Checkpoints under models/<name>/<version>/: weights, config, metrics and the data version."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from zipp_assets import lake
from zipp_assets.encoder.data import GraphData
from zipp_assets.encoder.model import PersonaEncoder

MODEL_NAME = "persona_encoder"


def data_version(lake_dir: Path, image_encoder_name: str | None) -> str:
    """A fingerprint of the inputs: the graph tables' files and the visual encoder."""
    digest = hashlib.sha256((image_encoder_name or "").encode())
    for dataset in ("users", "subreddits", "graph_edges"):
        for path in lake.parquet_files(lake_dir, dataset):
            stat = path.stat()
            digest.update(f"{dataset}/{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def save_checkpoint(models_dir: Path, model: PersonaEncoder, config: dict, metrics: dict, version_of_data: str,
                    subreddit_names: list[str]) -> Path:
    version = time.strftime("%Y%m%dT%H%M%S") + "-" + version_of_data[:8]
    folder = Path(models_dir) / MODEL_NAME / version
    tmp = folder.with_name(f".{folder.name}.tmp")
    tmp.mkdir(parents=True)
    save_file({k: v.contiguous().cpu() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
    (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    (tmp / "data_version.json").write_text(json.dumps({"data_version": version_of_data}, indent=2))
    # Subreddit indices follow names in sorted order and shift when subreddits are added: keep the
    # vocabulary so a later graph can be mapped onto the learned subreddit embeddings by name.
    (tmp / "subreddits.json").write_text(json.dumps(subreddit_names))
    os.replace(tmp, folder)
    latest = folder.parent / "LATEST"
    latest.with_suffix(".tmp").write_text(version)
    os.replace(latest.with_suffix(".tmp"), latest)
    return folder


def latest_checkpoint(models_dir: Path) -> Path:
    latest = Path(models_dir) / MODEL_NAME / "LATEST"
    if not latest.is_file():
        raise FileNotFoundError(f"no {MODEL_NAME} checkpoint under {models_dir}: materialize persona_encoder first")
    version = latest.read_text().strip()
    if not version or "/" in version or version.startswith("."):
        raise ValueError(f"corrupt LATEST pointer: {version!r}")
    return latest.parent / version


def load_checkpoint(folder: Path, data: GraphData) -> tuple[PersonaEncoder, dict]:
    from zipp_assets.encoder.train import TrainConfig, build_model

    config = json.loads((Path(folder) / "config.json").read_text())
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    train_config = TrainConfig(**{k: v for k, v in config.items() if k in fields} | {"fanouts": tuple(config["fanouts"])})
    model = build_model(data, train_config)
    state = load_file(str(Path(folder) / "model.safetensors"))
    trained_names = json.loads((Path(folder) / "subreddits.json").read_text())
    state["subreddit_in.weight"] = remap_subreddit_embeddings(state["subreddit_in.weight"], trained_names, data.subreddit_names)
    model.load_state_dict(state)
    model.eval()
    return model, config


def remap_subreddit_embeddings(weights: torch.Tensor, trained: list[str], current: list[str]) -> torch.Tensor:
    """Rows for the current subreddits, by name; subreddits new since training get the mean row."""
    position = {name: i for i, name in enumerate(trained)}
    mean = weights.mean(dim=0)
    return torch.stack([weights[position[name]] if name in position else mean for name in current])
