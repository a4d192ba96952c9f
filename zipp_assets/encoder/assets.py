"""Dagster wiring of the encoder stage: training, inference and the evaluation table.

(No `from __future__ import annotations` here: Dagster reads the annotations at run time.)
"""


import dataclasses
import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa

from zipp_assets import lake as lake_io
from zipp_assets.devices import require_device
from zipp_assets.encoder.ablations import OURS, evaluate_all, load_planted_truth
from zipp_assets.encoder.checkpoint import (
    MODEL_NAME,
    check_data_version,
    data_of,
    encoder_for_graph,
    latest_checkpoint,
    load_encoder,
    save_checkpoint,
)
from zipp_assets.encoder.data import load_graph_data
from zipp_assets.encoder.distributed import train_distributed
from zipp_assets.encoder.evaluate import evaluation_display_rows
from zipp_assets.encoder.inference import embed_users_to_lake
from zipp_assets.encoder.train import TrainConfig, config_dict, train
from zipp_assets.graph.pseudonyms import pseudonym_key
from zipp_assets.graph.tables import GRAPH_TABLES
from zipp_assets.graph.visual import PROFILES, embeddings_of
from zipp_assets.imaging.resources import ImageEncoderResource
from zipp_assets.k8s import pod_tags
from zipp_assets.metadata import lake_versions, markdown_table, new_figure, png_markdown
from zipp_assets.resources import ZippLake

GROUP = "encoder"


class EncoderTrainingConfig(dg.Config):
    hidden: int = 128
    heads: int = 4
    use_edge_features: bool = True
    use_image_align: bool = True
    align_weight: float = 0.5
    link_temperature: float = 0.05
    fanouts: list[int] = [15, 10]
    batch_size: int = 512
    negatives: int = 8
    # None: every edge draws its own negatives; a number (512 for graphs of tens of thousands of
    # subreddits): a batch shares that many popularity draws (see TrainConfig and docs/scale.md)
    negative_pool: int | None = None
    epochs: int = 30
    patience: int = 4
    min_epochs: int = 10
    learning_rate: float = 3e-3
    seed: int = 0
    device: str = "cpu"  # or cuda
    processes: int = 1  # >1: data-parallel over torch.distributed (gloo on CPU, NCCL on GPUs)

    def train_config(self) -> TrainConfig:
        fields = {f.name for f in dataclasses.fields(TrainConfig)}
        values = {k: v for k, v in self.model_dump().items() if k in fields}
        return TrainConfig(**values | {"fanouts": tuple(values["fanouts"])})


def _curves(history: list[dict]) -> dg.MetadataValue:
    figure, axes = new_figure(7, 3)
    epochs = [h["epoch"] for h in history]
    for key in ("loss", "link_loss", "align_loss"):
        axes.plot(epochs, [h[key] for h in history], label=key)
    axes.set_xlabel("epoch")
    axes.set_ylabel("loss")
    right = axes.twinx()
    right.plot(epochs, [h["val_posting_accuracy"] for h in history], color="black", linestyle="--", label="val posting accuracy")
    right.set_ylabel("val posting accuracy")
    axes.legend(loc="upper center", fontsize=7)
    right.legend(loc="lower right", fontsize=7)
    return png_markdown(figure)


def _resume_dir(models_dir, fingerprint: str):
    return models_dir / MODEL_NAME / ".training" / hashlib.sha256(fingerprint.encode()).hexdigest()[:16]


@dg.asset(
    name="persona_encoder",
    op_tags=pod_tags("encoder_training"),  # its pod on Kubernetes (zipp_assets/k8s.py)
    deps=["users", "subreddits", "graph_edges", "user_visual_profiles"],
    group_name=GROUP,
    kinds={"pytorch", "dgl"},
    pool="gpu",
    description="The 2-layer edge-aware GATv2 encoder trained with neighbour sampling on link prediction + "
                "ImageAlign; a self-contained checkpoint (weights, constructor arguments, input normalisation, "
                "subreddit vocabulary, metrics, data version) under models/persona_encoder/. A killed run "
                "resumes from its last finished epoch.",
)
def persona_encoder(context: dg.AssetExecutionContext, config: EncoderTrainingConfig, lake: ZippLake,
                    image_encoder: ImageEncoderResource):
    settings = lake.settings
    encoder_name = image_encoder.encoder_name
    train_config = config.train_config()  # checks the device before any data is loaded
    with lake_io.recording() as activity:
        data = load_graph_data(settings.lake_dir, encoder_name)
    version = data_of(data, encoder_name)  # the Delta versions read: recorded in the checkpoint
    context.log.info(f"training on {len(data.edges['train']):,} edges, {data.num_users:,} users, "
                     f"{int(data.has_profile.sum()):,} with a visual profile, device {train_config.device}, "
                     f"data version {version}")
    fingerprint = json.dumps({"config": config_dict(train_config), "data_version": version,
                              "processes": config.processes}, sort_keys=True)
    resume_dir = _resume_dir(settings.models_dir, fingerprint)
    if config.processes > 1:
        result = train_distributed(data, train_config, config.processes, resume_dir=resume_dir, fingerprint=fingerprint)
    else:
        result = train(data, train_config, progress=context.log.info, resume_dir=resume_dir, fingerprint=fingerprint)
    metrics = {"best_epoch": result.best_epoch, "best_val_posting_accuracy": result.best_val_posting_accuracy,
               "seconds": result.seconds, "seed_edges_per_second": result.seed_edges_per_second, "history": result.history,
               "image_align_active": result.image_align_active}
    folder = save_checkpoint(settings.models_dir, result.model, config_dict(train_config), metrics, version,
                             data.subreddit_names, data.normalization, encoder_name, data.content_versions)
    shutil.rmtree(resume_dir, ignore_errors=True)
    return dg.MaterializeResult(metadata={
        "checkpoint": dg.MetadataValue.path(str(folder)),
        "data_version": version,
        "trained_on_table_versions": dg.MetadataValue.json(data.content_versions),
        **lake_versions(activity),
        "image_align_active": result.image_align_active,
        "resumed_from_epoch": result.resumed_from_epoch if result.resumed_from_epoch is not None else "-",
        "best_epoch": result.best_epoch,
        "best_val_posting_accuracy": round(result.best_val_posting_accuracy, 4),
        "epochs_run": len(result.history),
        "seconds": round(result.seconds, 1),
        "seed_edges_per_second": round(result.seed_edges_per_second, 1),
        "processes": config.processes,
        "curves": _curves(result.history),
    })


class EncodeUsersConfig(dg.Config):
    device: str = "cpu"
    # A checkpoint trained on other data still embeds every user inductively; "warn" allows it
    # (scheduled re-mining), "error" refuses.
    on_data_version_mismatch: str = "error"
    top_k: int = 10


# Runs the re-mining automation launches carry this tag (zipp_assets/personas/automation.py): they embed
# a new month's users with the trained encoder, so a checkpoint older than the data only warns there.
REMINING_RUN_TAG = "zipp/remining"


# What encode_users reads: the checkpoint and the graph it embeds every user of.
ENCODED_FROM = ["persona_encoder", "users", "subreddits", "graph_edges", "user_visual_profiles"]


@dg.multi_asset(
    name="encode_users",
    op_tags=pod_tags("encoder_inference"),  # its pod on Kubernetes (zipp_assets/k8s.py)
    specs=[
        # The graph tables and profiles too: users are embedded from the graph that is there when this runs,
        # and their rows are numbered by it (a run that refreshes the graph must encode after it).
        dg.AssetSpec("user_embeddings", group_name=GROUP, kinds={"deltalake"}, deps=ENCODED_FROM,
                     description="Every user's embedding (and its ImageAlign projection), including users the "
                                 "encoder never trained on: computed from their edges, layer by layer."),
        dg.AssetSpec("user_top_subreddits", group_name=GROUP, kinds={"deltalake"}, deps=ENCODED_FROM,
                     description="Per user, the subreddits the last layer attends to most (mean over heads)."),
    ],
)
def encode_users(context: dg.AssetExecutionContext, config: EncodeUsersConfig, lake: ZippLake,
                 image_encoder: ImageEncoderResource):
    settings = lake.settings
    require_device(config.device, needs_dgl=True)
    checkpoint = load_encoder(latest_checkpoint(settings.models_dir))
    if checkpoint.config["image_align_active"] and checkpoint.config["image_encoder"] != image_encoder.encoder_name:
        raise ValueError(f"checkpoint {checkpoint.folder.name} aligned users with {checkpoint.config['image_encoder']!r} "
                         f"images, but the image encoder is now {image_encoder.encoder_name!r}: retrain persona_encoder")
    with lake_io.recording() as activity:
        data = load_graph_data(settings.lake_dir, image_encoder.encoder_name, normalization=checkpoint.normalization)
        version = data_of(data, image_encoder.encoder_name)
        on_mismatch = "warn" if context.run.tags.get(REMINING_RUN_TAG) == "true" else config.on_data_version_mismatch
        mismatch = check_data_version(checkpoint, version, on_mismatch, data.content_versions)
        if mismatch:
            context.log.warning(mismatch)
        model = encoder_for_graph(checkpoint, data.subreddit_names).to(config.device)
        with tempfile.TemporaryDirectory(prefix=".encode-users-", dir=settings.data_dir) as scratch:
            counts = embed_users_to_lake(model, data.message_graph(), data, settings.lake_dir, config.device,
                                         top_k=config.top_k, scratch_dir=Path(scratch))
    preview = lake_io.open_table(settings.lake_dir, "user_top_subreddits",
                                 counts["versions"]["user_top_subreddits"]).read().slice(0, 10).to_pylist()
    top_weights = counts["top_weights"]
    figure, axes = new_figure(6, 3)
    axes.hist(top_weights, bins=30, color="#47a")
    axes.set_xlabel("attention weight of each user's top subreddit")
    axes.set_ylabel("users")
    common = {"checkpoint": str(checkpoint.folder), "checkpoint_data_version": checkpoint.data_version,
              "data_version": version, "data_version_matches": mismatch is None, "build": counts["build"],
              "graph_build": counts["graph_build"]}
    yield dg.MaterializeResult(asset_key="user_embeddings", metadata={
        **common, **lake_versions(activity, ["user_embeddings"]), "users": counts["users"], "dimension": model.hidden})
    yield dg.MaterializeResult(asset_key="user_top_subreddits", metadata={
        **common, **lake_versions(activity, ["user_top_subreddits"]), "rows": counts["attention_rows"], "preview": dg.MetadataValue.md(markdown_table(preview)),
        "top_weight_histogram": png_markdown(figure)})


class EvaluationConfig(dg.Config):
    inductive_fraction: float = 0.1
    device: str = "cpu"  # the variants train with the checkpoint's training config on this device


@dg.asset(
    name="encoder_evaluation",
    op_tags=pod_tags("encoder_training"),  # its pod on Kubernetes (zipp_assets/k8s.py)
    deps=["persona_encoder", "users", "subreddits", "graph_edges", "user_visual_profiles", "image_embeddings"],
    group_name=GROUP,
    kinds={"pytorch", "deltalake"},
    pool="gpu",
    description="The persona_encoder checkpoint against its ablations (no ImageAlign, no edge features), GraphSAGE "
                "with and without ImageAlign, popularity and TF-IDF, and the inductive case, all on the same held-out "
                "links; every metric with a bootstrap interval over users, every row with a paired difference "
                "against ours. Finished variants are kept, so a killed run resumes.",
)
def encoder_evaluation(context: dg.AssetExecutionContext, config: EvaluationConfig, lake: ZippLake,
                       image_encoder: ImageEncoderResource):
    settings = lake.settings
    encoder_name = image_encoder.encoder_name
    require_device(config.device, needs_dgl=True)
    checkpoint = load_encoder(latest_checkpoint(settings.models_dir))
    training = checkpoint.config["training"]
    base = TrainConfig(**(training | {"fanouts": tuple(training["fanouts"]), "device": config.device}))
    with lake_io.recording() as activity:
        data = load_graph_data(settings.lake_dir, encoder_name, normalization=checkpoint.normalization)
        version = data_of(data, encoder_name)
        # "ours" must be scored on the data it was trained on
        check_data_version(checkpoint, version, "error", data.content_versions)
        table = embeddings_of(settings.lake_dir, encoder_name).to_table(columns=["url_key", "embedding"])
        truth = load_planted_truth(settings.truth_dir, settings.lake_dir, pseudonym_key(settings))
    image_embeddings = dict(zip(table["url_key"].to_pylist(), np.stack(table["embedding"].to_numpy(zero_copy_only=False))))
    work_dir = settings.models_dir / "encoder_evaluation" / ".work" / f"{checkpoint.folder.name}-{config.inductive_fraction}"
    rows = evaluate_all(data, base, checkpoint.model.to(config.device), image_embeddings, truth, config.inductive_fraction,
                        progress=context.log.info, work_dir=work_dir)
    columns = sorted({k for r in rows for k in r}, key=lambda k: (k != "model", k))
    with lake_io.recording() as written:
        lake_io.write_partition(settings.lake_dir, "encoder_evaluation", pa.table({c: [r.get(c) for r in rows] for c in columns}))
    figure, axes = new_figure(7, 3.4)
    names = [r["model"] for r in rows]
    values = np.array([r["posting_accuracy"] for r in rows])
    errors = np.array([[r["posting_accuracy"] - r["posting_accuracy_low"], r["posting_accuracy_high"] - r["posting_accuracy"]]
                       for r in rows]).T
    axes.barh(names, values, xerr=errors, color=["#c44" if n == OURS else "#789" for n in names], capsize=2)
    axes.set_xlim(max(0.0, float(np.nanmin(values)) - 0.1), 1.0)
    axes.set_xlabel("posting accuracy (exact AUC on held-out test links, 95% bootstrap interval)")
    ours = next(r for r in rows if r["model"] == OURS)
    return dg.MaterializeResult(metadata={
        "table": dg.MetadataValue.md(markdown_table(evaluation_display_rows(rows), max_rows=20)),
        "checkpoint": str(checkpoint.folder),
        "data_version": version,
        "ours_posting_accuracy": round(ours["posting_accuracy"], 4),
        "test_edges": ours["edges"],
        "planted_truth": truth is not None,
        "posting_accuracy_plot": png_markdown(figure),
        **lake_versions(activity), "lake_versions_written": lake_versions(written)["lake_versions_written"],
    })


encoder_assets = [persona_encoder, encode_users, encoder_evaluation]
