"""Dagster wiring of the personas stage: evidence per user shard.

(No `from __future__ import annotations` here: Dagster reads the annotations at run time.)
"""

import time
import warnings

import dagster as dg
import numpy as np

from zipp_assets.graph.pseudonyms import pseudonym_key
from zipp_assets.graph.visual import encoder_slug
from zipp_assets.imaging.resources import ImageEncoderResource
from zipp_assets.metadata import markdown_table, new_figure, png_markdown
from zipp_assets.personas.descriptors import VOCABULARY_VERSION, clip_descriptors, pixel_stats_descriptors
from zipp_assets.personas.evidence import (
    EVIDENCE,
    ApproximateTokenCounter,
    EvidenceConfig,
    build_evidence,
)
from zipp_assets.personas.shards import shard_partitions
from zipp_assets import lake as lake_io
from zipp_assets.resources import ZippLake

# backfill_policy is marked beta; single-run range backfills are the documented way to use it.
warnings.filterwarnings("ignore", category=dg.BetaWarning)

GROUP = "personas"


class EvidenceAssetConfig(dg.Config):
    token_budget: int = 2048  # never above 4,096, the paper's cap
    top_subreddits: int = 10
    snippets_per_subreddit: int = 3
    snippet_chars: int = 300


def visual_describer(image_encoder: ImageEncoderResource):
    """(profile -> words, what the words come from) for the configured image encoder."""
    if image_encoder.backend == "open_clip":
        encoder = image_encoder.build()
        return (lambda profile: clip_descriptors(profile, encoder.encode_text),
                f"zero-shot {encoder.name}, vocabulary {VOCABULARY_VERSION}")
    return pixel_stats_descriptors, f"words supported by {image_encoder.encoder_name} statistics"


@dg.asset(
    name=EVIDENCE,
    partitions_def=shard_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),  # a range of shards in one run, as the CLI backfill needs
    deps=["users", "user_top_subreddits", "user_visual_profiles", "reddit_comments"],
    group_name=GROUP,
    kinds={"parquet"},
    description="Per user of the shard: the most-attended subreddits with weights, cleaned comment snippets from "
                "them, words for the visual profile and activity facts, packed under a token budget and hashed.",
)
def persona_evidence(context: dg.AssetExecutionContext, config: EvidenceAssetConfig, lake: ZippLake,
                     image_encoder: ImageEncoderResource):
    settings = lake.settings
    started = time.perf_counter()
    evidence_config = EvidenceConfig(config.token_budget, config.top_subreddits, config.snippets_per_subreddit,
                                     config.snippet_chars)
    describe, source = visual_describer(image_encoder)
    counter = ApproximateTokenCounter()
    shards = sorted(context.partition_keys)
    reports = build_evidence(settings.lake_dir, pseudonym_key(settings.profile), shards, evidence_config, counter,
                             describe, {"encoder": encoder_slug(image_encoder.encoder_name)}, source,
                             progress=context.log.info)
    tokens = np.array([t for r in reports for t in r.tokens] or [0])
    figure, axes = new_figure(6, 3)
    axes.hist(tokens, bins=30, color="#a64")
    axes.axvline(config.token_budget, color="black", linestyle="--")
    axes.set_xlabel(f"evidence tokens per user ({counter.name})")
    axes.set_ylabel("users")
    rows = lake_io.read_table(settings.lake_dir, EVIDENCE, [{"shard": s} for s in shards]).slice(0, 5).to_pylist() \
        if any(r.users for r in reports) else []
    sample = [{"user": r["user_id"], "tokens": r["tokens"], "communities": ", ".join(r["top_subreddits"][:4]),
               "visual": "; ".join(r["visual_descriptors"]), "snippets": r["snippets_used"]} for r in rows]
    return dg.MaterializeResult(metadata={
        "shards": len(shards),
        "users": sum(r.users for r in reports),
        "token_counter": counter.name,
        "tokens_are_approximate": counter.approximate,
        "token_budget": config.token_budget,
        "tokens_mean": round(float(tokens.mean()), 1),
        "tokens_max": int(tokens.max()),
        "snippets_used": sum(r.snippets_used for r in reports),
        "snippets_available": sum(r.snippets_available for r in reports),
        "users_with_visual_descriptors": sum(r.users_with_visual for r in reports),
        "visual_descriptor_source": source,
        "by_shard": dg.MetadataValue.md(markdown_table([{"shard": r.shard, "users": r.users,
                                                         "mean tokens": round(float(np.mean(r.tokens or [0])), 1)}
                                                        for r in reports], 20)),
        "seconds": round(time.perf_counter() - started, 2),
        "sample": dg.MetadataValue.md(markdown_table(sample)),
        "tokens_per_user": png_markdown(figure),
    })


persona_assets = [persona_evidence]
