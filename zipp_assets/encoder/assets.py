"""Dagster wiring of the encoder stage: training, inference and the evaluation table.

(No `from __future__ import annotations` here: Dagster reads the annotations at run time.)
"""


import dataclasses

import dagster as dg
import numpy as np
import pyarrow as pa

from zipp_assets import lake as lake_io
from zipp_assets.encoder.ablations import OURS, evaluate_all, load_planted_truth
from zipp_assets.encoder.checkpoint import data_version, latest_checkpoint, load_checkpoint, save_checkpoint
from zipp_assets.encoder.data import load_graph_data
from zipp_assets.encoder.distributed import train_distributed
from zipp_assets.encoder.inference import top_k_subreddits, write_user_outputs
from zipp_assets.encoder.train import TrainConfig, config_dict, infer
from zipp_assets.graph.pseudonyms import pseudonym_key
from zipp_assets.graph.visual import EMBEDDINGS as IMAGE_EMBEDDINGS
from zipp_assets.graph.visual import encoder_slug
from zipp_assets.imaging.resources import ImageEncoderResource
from zipp_assets.metadata import markdown_table, new_figure, png_markdown
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


@dg.asset(
    name="persona_encoder",
    deps=["users", "subreddits", "graph_edges", "user_visual_profiles"],
    group_name=GROUP,
    kinds={"pytorch", "dgl"},
    pool="gpu",
    description="The 2-layer edge-aware GATv2 encoder trained with neighbour sampling on link prediction + "
                "ImageAlign; checkpoint (weights, config, metrics, data version) under models/persona_encoder/.",
)
def persona_encoder(context: dg.AssetExecutionContext, config: EncoderTrainingConfig, lake: ZippLake,
                    image_encoder: ImageEncoderResource):
    settings = lake.settings
    encoder_name = image_encoder.encoder_name
    data = load_graph_data(settings.lake_dir, encoder_name)
    train_config = config.train_config()
    context.log.info(f"training on {len(data.edges['train']):,} edges, {data.num_users:,} users, "
                     f"{int(data.has_profile.sum()):,} with a visual profile, device {train_config.device}")
    if config.processes > 1:
        result = train_distributed(data, train_config, config.processes)
    else:
        from zipp_assets.encoder.train import train

        result = train(data, train_config, progress=context.log.info)
    version = data_version(settings.lake_dir, encoder_name)
    metrics = {"best_epoch": result.best_epoch, "best_val_posting_accuracy": result.best_val_posting_accuracy,
               "seconds": result.seconds, "seed_edges_per_second": result.seed_edges_per_second, "history": result.history}
    folder = save_checkpoint(settings.models_dir, result.model, config_dict(train_config) | {"image_encoder": encoder_name},
                             metrics, version, data.subreddit_names)
    return dg.MaterializeResult(metadata={
        "checkpoint": dg.MetadataValue.path(str(folder)),
        "data_version": version,
        "best_epoch": result.best_epoch,
        "best_val_posting_accuracy": round(result.best_val_posting_accuracy, 4),
        "epochs_run": len(result.history),
        "seconds": round(result.seconds, 1),
        "seed_edges_per_second": round(result.seed_edges_per_second, 1),
        "processes": config.processes,
        "curves": _curves(result.history),
    })


@dg.multi_asset(
    name="encode_users",
    specs=[
        dg.AssetSpec("user_embeddings", group_name=GROUP, kinds={"parquet"}, deps=["persona_encoder"],
                     description="Every user's embedding (and its ImageAlign projection), including users the "
                                 "encoder never trained on: computed from their edges, layer by layer."),
        dg.AssetSpec("user_top_subreddits", group_name=GROUP, kinds={"parquet"}, deps=["persona_encoder"],
                     description="Per user, the subreddits the last layer attends to most (mean over heads)."),
    ],
)
def encode_users(context: dg.AssetExecutionContext, lake: ZippLake, image_encoder: ImageEncoderResource):
    settings = lake.settings
    data = load_graph_data(settings.lake_dir, image_encoder.encoder_name)
    folder = latest_checkpoint(settings.models_dir)
    model, config = load_checkpoint(folder, data)
    graph = data.message_graph()
    z, attention = infer(model, graph, data, "cpu")
    projected = model.project_image(z["user"]).detach() if model.image_projection is not None else None
    top = top_k_subreddits(graph, attention, k=10) if attention is not None else {}
    counts = write_user_outputs(settings.lake_dir, z["user"].detach(), projected, top)
    preview = lake_io.read_table(settings.lake_dir, "user_top_subreddits").slice(0, 10).to_pylist()
    top_weights = np.array([ranked[0][1] for ranked in top.values()]) if top else np.zeros(0)
    figure, axes = new_figure(6, 3)
    axes.hist(top_weights, bins=30, color="#47a")
    axes.set_xlabel("attention weight of each user's top subreddit")
    axes.set_ylabel("users")
    yield dg.MaterializeResult(asset_key="user_embeddings", metadata={
        "users": counts["users"], "dimension": int(z["user"].shape[1]), "checkpoint": str(folder)})
    yield dg.MaterializeResult(asset_key="user_top_subreddits", metadata={
        "rows": counts["attention_rows"], "preview": dg.MetadataValue.md(markdown_table(preview)),
        "top_weight_histogram": png_markdown(figure)})


class EvaluationConfig(EncoderTrainingConfig):
    inductive_fraction: float = 0.1


@dg.asset(
    name="encoder_evaluation",
    deps=["users", "subreddits", "graph_edges", "user_visual_profiles", "image_embeddings"],
    group_name=GROUP,
    kinds={"pytorch", "parquet"},
    pool="gpu",
    description="Our encoder, its ablations (no ImageAlign, no edge features), GraphSAGE with and without "
                "ImageAlign, popularity and TF-IDF baselines and the inductive case, all on the same held-out links.",
)
def encoder_evaluation(context: dg.AssetExecutionContext, config: EvaluationConfig, lake: ZippLake,
                       image_encoder: ImageEncoderResource):
    settings = lake.settings
    encoder_name = image_encoder.encoder_name
    data = load_graph_data(settings.lake_dir, encoder_name)
    base = config.train_config()
    table = lake_io.read_table(settings.lake_dir, IMAGE_EMBEDDINGS, [{"encoder": encoder_slug(encoder_name)}])
    image_embeddings = dict(zip(table["url_key"].to_pylist(), np.stack(table["embedding"].to_numpy(zero_copy_only=False))))
    truth = load_planted_truth(settings.truth_dir, settings.lake_dir, pseudonym_key(settings.profile))
    rows = evaluate_all(data, base, image_embeddings, truth, config.inductive_fraction, progress=context.log.info)
    columns = sorted({k for r in rows for k in r}, key=lambda k: (k != "model", k))
    with lake_io.atomic_partition(settings.lake_dir, "encoder_evaluation") as folder:
        lake_io.write_table(folder, pa.table({c: [r.get(c) for r in rows] for c in columns}))
    shown = ["model", "posting_accuracy", "paper_posting_accuracy", "recall_at_10", "mrr", "visual_recall@1",
             "visual_recall@10", "community_nmi", "attention_precision@3", "chance_precision@3"]
    figure, axes = new_figure(7, 3.2)
    names = [r["model"] for r in rows]
    axes.barh(names, [r["posting_accuracy"] for r in rows], color=["#c44" if n == OURS else "#789" for n in names])
    axes.set_xlim(0.5, 1.0)
    axes.set_xlabel("posting accuracy (held-out test links)")
    ours = next(r for r in rows if r["model"] == OURS)
    return dg.MaterializeResult(metadata={
        "table": dg.MetadataValue.md(markdown_table([{c: r.get(c, "") for c in shown} for r in rows], max_rows=20)),
        "ours_posting_accuracy": round(ours["posting_accuracy"], 4),
        "test_edges": ours["edges"],
        "planted_truth": truth is not None,
        "posting_accuracy_plot": png_markdown(figure),
    })


encoder_assets = [persona_encoder, encode_users, encoder_evaluation]
