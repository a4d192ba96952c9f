"""Checkpoints under models/<name>/<version>/, self-contained like a `save_pretrained` folder.

    model.safetensors      weights
    config.json            {"model": every PersonaEncoder constructor argument,
                            "training": the TrainConfig, "image_encoder": ..., "image_align_active": ...}
    normalization.json     the input standardisation statistics (FeatureNormalization)
    subreddits.json        the subreddit vocabulary in index order
    metrics.json, data_version.json   the data version and the Delta table versions trained on

A checkpoint loads without today's graph (`load_encoder`), and embeds users of a later graph after
its subreddit embeddings are mapped onto that graph's vocabulary by name (`encoder_for_graph`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from zipp_assets import lake
from zipp_assets.encoder.data import FeatureNormalization, GraphData
from zipp_assets.graph.tables import GRAPH_TABLES
from zipp_assets.graph.visual import PROFILES
from zipp_assets.encoder.model import PersonaEncoder

MODEL_NAME = "persona_encoder"
log = logging.getLogger(__name__)


def version_of(content_versions: dict[str, int], image_encoder_name: str | None) -> str:
    """The data version: a short fingerprint of the Delta content versions of the graph tables and
    visual profiles (vacuum does not change it, any new commit of rows does) and the visual encoder."""
    text = json.dumps({"tables": dict(sorted(content_versions.items())), "image_encoder": image_encoder_name or ""})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def data_of(data: GraphData, image_encoder_name: str | None) -> str:
    """The data version of what `load_graph_data` read."""
    return version_of(data.content_versions, image_encoder_name)


def lake_content_versions(lake_dir: Path) -> dict[str, int]:
    """The content versions of the tables the encoder trains on, as they are now."""
    names = [*GRAPH_TABLES, *([PROFILES] if lake.table_exists(lake_dir, PROFILES) else [])]
    return {name: lake.open_table(lake_dir, name).content_version() for name in names}


def data_version(lake_dir: Path, image_encoder_name: str | None) -> str:
    """The data version of the lake as it is now (see `version_of`)."""
    return version_of(lake_content_versions(lake_dir), image_encoder_name)


@dataclass
class Checkpoint:
    folder: Path
    model: PersonaEncoder  # with the subreddit vocabulary it was trained on
    config: dict
    normalization: FeatureNormalization
    subreddit_names: list[str]
    data_version: str
    metrics: dict
    table_versions: dict[str, int] = dataclasses.field(default_factory=dict)  # content versions trained on


def save_checkpoint(models_dir: Path, model: PersonaEncoder, training_config: dict, metrics: dict, version_of_data: str,
                    subreddit_names: list[str], normalization: FeatureNormalization, image_encoder: str | None,
                    table_versions: dict[str, int] | None = None) -> Path:
    if len(subreddit_names) != model.config["num_subreddits"]:
        raise ValueError(f"{len(subreddit_names)} subreddit names for a model of {model.config['num_subreddits']}")
    version = time.strftime("%Y%m%dT%H%M%S") + "-" + version_of_data[:8]
    folder = Path(models_dir) / MODEL_NAME / version
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # left by a save killed in this same second: same data, same name
    tmp.mkdir(parents=True)
    save_file({k: v.contiguous().cpu() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
    config = {"model": model.config, "training": training_config, "image_encoder": image_encoder,
              "image_align_active": model.image_projection is not None}
    (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    (tmp / "normalization.json").write_text(json.dumps(dataclasses.asdict(normalization), indent=2))
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    (tmp / "data_version.json").write_text(json.dumps({"data_version": version_of_data,
                                                       "table_versions": table_versions or {}}, indent=2))
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


def load_encoder(folder: Path) -> Checkpoint:
    """The checkpoint as saved: nothing from the current lake is needed to rebuild it."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    if "model" not in config:
        raise ValueError(f"{folder} predates self-contained checkpoints (no model arguments in config.json); retrain")
    model = PersonaEncoder(**config["model"])
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    model.eval()
    trained_on = json.loads((folder / "data_version.json").read_text())
    return Checkpoint(
        folder=folder,
        model=model,
        config=config,
        normalization=FeatureNormalization(**json.loads((folder / "normalization.json").read_text())),
        subreddit_names=json.loads((folder / "subreddits.json").read_text()),
        data_version=trained_on["data_version"],
        metrics=json.loads((folder / "metrics.json").read_text()),
        table_versions=trained_on.get("table_versions", {}),
    )


def encoder_for_graph(checkpoint: Checkpoint, subreddit_names: list[str]) -> PersonaEncoder:
    """The checkpoint's model over another subreddit vocabulary (rows mapped by name; new ones get the mean)."""
    if subreddit_names == checkpoint.subreddit_names:
        return checkpoint.model
    model = PersonaEncoder(**(checkpoint.model.config | {"num_subreddits": len(subreddit_names)}))
    state = dict(checkpoint.model.state_dict())
    state["subreddit_in.weight"] = remap_subreddit_embeddings(state["subreddit_in.weight"], checkpoint.subreddit_names,
                                                              subreddit_names)
    model.load_state_dict(state)
    model.eval()
    return model


def remap_subreddit_embeddings(weights: torch.Tensor, trained: list[str], current: list[str]) -> torch.Tensor:
    """Rows for the current subreddits, by name; subreddits new since training get the mean row."""
    position = {name: i for i, name in enumerate(trained)}
    mean = weights.mean(dim=0)
    return torch.stack([weights[position[name]] if name in position else mean for name in current])


class DataVersionMismatch(RuntimeError):
    pass


def check_data_version(checkpoint: Checkpoint, current: str, on_mismatch: str = "error",
                       current_tables: dict[str, int] | None = None) -> str | None:
    """None when the checkpoint was trained on `current`; else a message, raised (`error`) or logged
    (`warn`), naming the tables whose versions moved when both sides know them."""
    if on_mismatch not in ("error", "warn"):
        raise ValueError(f"on_mismatch must be 'error' or 'warn', got {on_mismatch!r}")
    if checkpoint.data_version == current:
        return None
    moved = ""
    if checkpoint.table_versions and current_tables:
        changes = [f"{name} {checkpoint.table_versions.get(name, '-')} -> {current_tables.get(name, '-')}"
                   for name in sorted(checkpoint.table_versions.keys() | current_tables.keys())
                   if checkpoint.table_versions.get(name) != current_tables.get(name)]
        moved = f" (table versions: {', '.join(changes) or 'same; the image encoder differs'})"
    message = (f"checkpoint {checkpoint.folder.name} was trained on data version {checkpoint.data_version}, but the "
               f"lake is now at {current}{moved}: its embeddings of users whose edges changed come from the "
               "inductive path")
    if on_mismatch == "error":
        raise DataVersionMismatch(message + " (retrain persona_encoder, or set on_data_version_mismatch='warn')")
    log.warning(message)
    return message
