"""Dagster wiring of ZIPBench: users and prompts, rewrites and images per method x shard, scores, report.

(No `from __future__ import annotations` here: Dagster reads the annotations at run time.)
"""

import time
import warnings
from collections import Counter
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from zipp_assets import lake as lake_io
from zipp_assets.graph.pseudonyms import pseudonym_key
from zipp_assets.graph.user_keys import user_ids_for_usernames
from zipp_assets.graph.visual import PROFILES, encoder_slug
from zipp_assets.imaging.resources import ImageEncoderResource, ImageGeneratorResource
from zipp_assets.k8s import pod_tags
from zipp_assets.llm.base import generate_pooled, pooling
from zipp_assets.llm.resources import LLMResource
from zipp_assets.metadata import lake_versions, markdown_table, new_figure, png_markdown
from zipp_assets.personas.overrides import effective_personas, overrides_by_user
from zipp_assets.personas.shards import SHARD_KEYS
from zipp_assets.personas.verbalize import PERSONAS
from zipp_assets.resources import ZippLake
from zipp_assets.zipbench.build import build_prompts, sample_users
from zipp_assets.zipbench.generate import MANIFEST_SCHEMA, generate_images
from zipp_assets.zipbench.history import HISTORY_SCHEMA, load_history_files
from zipp_assets.zipbench.prompts import PROMPT_SET_VERSION
from zipp_assets.zipbench.rewrite import (
    METHODS,
    REWRITE_TEMPLATE_VERSION,
    REWRITES_SCHEMA,
    finish_rewrites,
    plan_rewrites,
    record_rewrite,
    shuffled_partner,
    template_rewrite,
)

warnings.filterwarnings("ignore", category=dg.BetaWarning)

GROUP = "zipbench"
USERS, HISTORY, PROMPTS, REWRITES, IMAGES = "zipbench_users", "zipbench_history", "zipbench_prompts", \
    "zipbench_rewrites", "zipbench_images"

def _recorded(run) -> dg.MaterializeResult:
    """Run an asset's work under `lake.recording()`; its metadata gains the table versions read and written."""
    with lake_io.recording() as activity:
        metadata = run()
    return dg.MaterializeResult(metadata={**metadata, **lake_versions(activity)})


benchmark_partitions = dg.MultiPartitionsDefinition({
    "method": dg.StaticPartitionsDefinition(list(METHODS)),
    "shard": dg.StaticPartitionsDefinition(SHARD_KEYS),
})


def images_root(settings) -> Path:
    return settings.data_dir / "zipbench" / "images"


def partition_pairs(context: dg.AssetExecutionContext) -> list[tuple[str, str]]:
    """(method, shard) of every partition this run covers (one, or a range in a single run)."""
    pairs = []
    for key in context.partition_keys:
        by_dim = key.keys_by_dimension if isinstance(key, dg.MultiPartitionKey) else \
            dict(zip(("method", "shard"), str(key).split("|")))
        pairs.append((by_dim["method"], by_dim["shard"]))
    return sorted(pairs)


class BenchmarkUsersConfig(dg.Config):
    n_users: int = 1500  # the paper's ZIPBench size; the demo asks for fewer
    min_references: int = 1  # held-out images a user needs to be scored against
    seed: int = 0
    # Generation-history files or folders (ZIP-Bench rows, Civitai image records: the user is the row's
    # reddit_username); relative paths are under the raw folder. Missing files are skipped and said so.
    # Any format `python -m zipp_assets.zipbench.loaders inspect` reads is detected from its columns.
    history_files: list[str] = ["zipbench/civitai_generations.jsonl"]
    # Prompt histories: PIP of Tailored Visions (a folder of per-user JSON Lines files) whose user ids are
    # Reddit usernames; each user's test rows become held-out base prompts, the train rows their history.
    prompt_history_files: list[str] = []


def _effective_personas(lake_dir: Path) -> dict[str, dict]:
    rows = [r for r in lake_io.read_table(lake_dir, PERSONAS).to_pylist() if r["ok"]]
    return {e["user_id"]: e["persona"] for e in effective_personas(rows, overrides_by_user(lake_dir))}


@dg.asset(
    name=USERS,
    op_tags=pod_tags("small"),  # its pod on Kubernetes (zipp_assets/k8s.py)
    deps=[PERSONAS, PROFILES],
    group_name=GROUP,
    kinds={"deltalake"},
    description="Benchmark users: stratified over visual interest and gender, each with held-out reference "
                "images (never ImageAlign targets) and, where a history file links them, their own prompts.",
)
def zipbench_users(context: dg.AssetExecutionContext, config: BenchmarkUsersConfig, lake: ZippLake,
                   image_encoder: ImageEncoderResource):
    def run() -> dict:
        settings = lake.settings
        started = time.perf_counter()
        personas = _effective_personas(settings.lake_dir)
        profiles = lake_io.read_table(settings.lake_dir, PROFILES, [{"encoder": encoder_slug(image_encoder.encoder_name)}],
                                      columns=["user_index", "user_id", "heldout_url_keys"]).to_pylist()
        def under_raw(files: list[str]) -> list[Path]:
            return [p if p.is_absolute() else settings.raw_dir / p for p in map(Path, files)]

        histories = load_history_files(
            under_raw(config.history_files),
            lambda names: user_ids_for_usernames(settings.lake_dir, names, pseudonym_key(settings)),
            under_raw(config.prompt_history_files))
        history, heldout = histories.history, histories.heldout
        users = sample_users(profiles, personas, history, config.n_users, config.min_references, config.seed)
        for u in users:
            u["n_heldout_prompts"] = len(heldout.get(u["user_id"], []))
        chosen = {u["user_id"] for u in users}
        history_rows = [{"user_id": u, "position": i, "prompt": p, "split": "train", "short_prompt": None}
                        for u in sorted(chosen) for i, p in enumerate(history.get(u, []))]
        history_rows += [{"user_id": u, "position": i, "prompt": h["prompt"], "split": "test",
                          "short_prompt": h["short_prompt"]}
                         for u in sorted(chosen) for i, h in enumerate(heldout.get(u, []))]
        with lake_io.atomic_partition(settings.lake_dir, USERS) as folder:
            lake_io.write_table(folder, pa.Table.from_pylist(users))
        with lake_io.atomic_partition(settings.lake_dir, HISTORY) as folder:
            lake_io.write_table(folder, pa.Table.from_pylist(history_rows, schema=HISTORY_SCHEMA), HISTORY_SCHEMA)
        strata = Counter(u["stratum"] for u in users)
        figure, axes = new_figure(7, 3.5)
        names = sorted(strata, key=lambda s: -strata[s])[:20]
        axes.barh(names[::-1], [strata[s] for s in names[::-1]], color="#4a7")
        axes.tick_params(axis="y", labelsize=6)
        axes.set_xlabel("benchmark users")
        return {
            "users": len(users),
            "eligible_users": sum(1 for p in profiles if p["user_id"] in personas and len(p["heldout_url_keys"] or [])
                                  >= config.min_references),
            "strata": len(strata),
            "reference_images": sum(u["n_references"] for u in users),
            "users_with_prompt_history": sum(1 for u in users if u["n_history_prompts"]),
            "users_with_heldout_prompts": sum(1 for u in users if u["n_heldout_prompts"]),
            "history_files": dg.MetadataValue.md(markdown_table(histories.report)),
            "by_age_band": dg.MetadataValue.md(markdown_table(
                [{"age band": k, "users": v} for k, v in sorted(Counter(u["age_band"] for u in users).items())])),
            "strata_plot": png_markdown(figure),
            "seconds": round(time.perf_counter() - started, 2),
        }

    return _recorded(run)


class BenchmarkPromptsConfig(dg.Config):
    prompts_per_user: int = 8


@dg.asset(
    name=PROMPTS,
    op_tags=pod_tags("small"),  # its pod on Kubernetes (zipp_assets/k8s.py)
    deps=[USERS],
    group_name=GROUP,
    kinds={"deltalake"},
    description=f"Base prompts per benchmark user from the versioned set {PROMPT_SET_VERSION} over eight subject "
                "categories, plus de-styled prompts of the user's own history; one seed per (user, prompt).",
)
def zipbench_prompts(config: BenchmarkPromptsConfig, lake: ZippLake):
    def run() -> dict:
        settings = lake.settings
        users = lake_io.read_table(settings.lake_dir, USERS).to_pylist()
        history = _history(settings.lake_dir)
        rows = build_prompts(users, history, config.prompts_per_user, _heldout(settings.lake_dir))
        with lake_io.atomic_partition(settings.lake_dir, PROMPTS) as folder:
            lake_io.write_table(folder, pa.Table.from_pylist(rows))
        return {
            "prompt_set": PROMPT_SET_VERSION,
            "prompts": len(rows),
            "users": len(users),
            "by_source": dg.MetadataValue.md(markdown_table(
                [{"source": k, "prompts": v} for k, v in sorted(Counter(r["source"] for r in rows).items())])),
            "by_category": dg.MetadataValue.md(markdown_table(
                [{"category": k, "prompts": v} for k, v in sorted(Counter(r["category"] for r in rows).items())])),
        }

    return _recorded(run)


def _history(lake_dir: Path) -> dict[str, list[str]]:
    """Each benchmark user's own prompts a method may see (train rows; never the held-out ones)."""
    out: dict[str, list[str]] = {}
    for row in sorted(lake_io.read_table(lake_dir, HISTORY).to_pylist(), key=lambda r: (r["user_id"], r["position"])):
        if row.get("split", "train") in ("train", None):
            out.setdefault(row["user_id"], []).append(row["prompt"])
    return out


def _heldout(lake_dir: Path) -> dict[str, list[dict]]:
    """Each benchmark user's held-out prompts (a dataset's test split), in order."""
    out: dict[str, list[dict]] = {}
    for row in sorted(lake_io.read_table(lake_dir, HISTORY).to_pylist(), key=lambda r: (r["user_id"], r["position"])):
        if row.get("split") == "test":
            out.setdefault(row["user_id"], []).append({"prompt": row["prompt"], "short_prompt": row["short_prompt"]})
    return out


class RewritesConfig(dg.Config):
    batch_size: int = 64
    shuffle_seed: int = 0


@dg.asset(
    name=REWRITES,
    op_tags=pod_tags("llm_client"),  # its pod on Kubernetes (zipp_assets/k8s.py)
    partitions_def=benchmark_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[PROMPTS, PERSONAS],
    group_name=GROUP,
    kinds={"deltalake"},
    pool="gpu",
    description="Each base prompt rewritten by one method through the `llm` resource (template rules offline), "
                "stored with method, model, template version, tokens, and the prompt cut to the image "
                "generator's text-encoder limit (truncations counted).",
)
def zipbench_rewrites(context: dg.AssetExecutionContext, config: RewritesConfig, lake: ZippLake, llm: LLMResource,
                      image_generator: ImageGeneratorResource):
    def run() -> dict:
        settings = lake.settings
        started = time.perf_counter()
        prompts = lake_io.read_table(settings.lake_dir, PROMPTS).to_pylist()
        users = lake_io.read_table(settings.lake_dir, USERS, columns=["user_id"])["user_id"].to_pylist()
        personas = _effective_personas(settings.lake_dir)
        history = _history(settings.lake_dir)
        partner = shuffled_partner(users, config.shuffle_seed)
        generator = image_generator.build()
        summary = []
        with llm.client(render=template_rewrite) as client:
            model = getattr(client, "model", llm.description)
            sent = 0

            def partitions():
                for method, shard in partition_pairs(context):
                    rows, pending = plan_rewrites(method, [p for p in prompts if p["shard"] == shard], personas,
                                                  history, partner)
                    yield (method, shard, rows), pending

            def answered(_partition, rows: list[dict], results: list) -> None:
                nonlocal sent
                for row, result in zip(rows, results):
                    record_rewrite(row, result, model)
                sent += len(rows)
                context.log.info(f"rewrote {sent:,} prompts")

            def finish(partition) -> None:
                method, shard, rows = partition
                finish_rewrites(rows, generator.fit_prompt, generator.count_tokens)
                with lake_io.atomic_partition(settings.lake_dir, REWRITES, {"method": method, "shard": shard}) as folder:
                    lake_io.write_table(folder, pa.Table.from_pylist(rows, schema=REWRITES_SCHEMA), REWRITES_SCHEMA)
                summary.append({"method": method, "shard": shard, "prompts": len(rows),
                                "failed": sum(not r["ok"] for r in rows), "truncated": sum(r["truncated"] for r in rows),
                                "mean tokens": round(sum(r["prompt_tokens"] for r in rows) / max(len(rows), 1), 1),
                                "llm tokens": sum(r["llm_prompt_tokens"] + r["llm_completion_tokens"] for r in rows)})

            # Partitions' requests share batches: one (method, shard) holds a few prompts (5 in demo-llm).
            per_call, in_flight = pooling(client, config.batch_size)
            generate_pooled(client, partitions(), per_call, answered, finish, in_flight)
        total = sum(s["prompts"] for s in summary)
        return {
            "rewriter": llm.description,
            "model": model,
            "template_version": REWRITE_TEMPLATE_VERSION,
            "prompts": total,
            "failed": sum(s["failed"] for s in summary),
            "truncated_to_token_limit": sum(s["truncated"] for s in summary),
            "token_limit": generator.token_limit or 0,
            "partitions": dg.MetadataValue.md(markdown_table(summary, 40)),
            "seconds": round(time.perf_counter() - started, 2),
        }

    return _recorded(run)


class ImagesConfig(dg.Config):
    batch_size: int = 8  # prompts per pipeline call


@dg.asset(
    name=IMAGES,
    op_tags=pod_tags("image_gpu"),  # its pod on Kubernetes (zipp_assets/k8s.py)
    partitions_def=benchmark_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[REWRITES],
    group_name=GROUP,
    kinds={"deltalake"},
    pool="gpu",
    description="One image per rewritten prompt from the `image_generator` resource (the demo's offline renderer "
                "says so), with the (user, prompt) seed every method shares; resumable (finished images are kept), "
                "batched, PNG files plus a manifest table.",
)
def zipbench_images(context: dg.AssetExecutionContext, config: ImagesConfig, lake: ZippLake,
                    image_generator: ImageGeneratorResource):
    def run() -> dict:
        settings = lake.settings
        started = time.perf_counter()
        generator = image_generator.build()
        root = images_root(settings)
        summary = []
        for method, shard in partition_pairs(context):
            if not lake_io.partition_exists(settings.lake_dir, REWRITES, {"method": method, "shard": shard}):
                raise dg.Failure(f"no rewrites for {method}|{shard}: materialize {REWRITES} for that partition first")
            rows = lake_io.read_table(settings.lake_dir, REWRITES, [{"method": method, "shard": shard}]).to_pylist()
            manifest, report = generate_images(rows, generator, root, config.batch_size, progress=context.log.info)
            with lake_io.atomic_partition(settings.lake_dir, IMAGES, {"method": method, "shard": shard}) as folder:
                lake_io.write_table(folder, pa.Table.from_pylist(manifest, schema=MANIFEST_SCHEMA), MANIFEST_SCHEMA)
            summary.append({"method": method, "shard": shard, "images": report.images, "generated": report.generated,
                            "kept": report.skipped_existing, "seconds": round(report.seconds, 2)})
        seconds = time.perf_counter() - started
        generated = sum(s["generated"] for s in summary)
        return {
            "generator": image_generator.description,
            "images": sum(s["images"] for s in summary),
            "generated": generated,
            "kept_from_earlier_run": sum(s["kept"] for s in summary),
            "images_per_second": round(generated / seconds, 2) if seconds else 0.0,
            "images_root": str(root),
            "partitions": dg.MetadataValue.md(markdown_table(summary, 40)),
            "seconds": round(seconds, 2),
        }

    return _recorded(run)




SCORES, JUDGEMENTS, GENERATED_EMBEDDINGS = "zipbench_scores", "zipbench_judgements", "zipbench_generated_embeddings"
# The held-out references exactly as zipbench_scores scored against them, so the summary's CMMD uses the same set.
REFERENCE_EMBEDDINGS = "zipbench_reference_embeddings"
SUMMARY, DEMOGRAPHICS = "zipbench_summary", "zipbench_demographics"


class ScoresConfig(dg.Config):
    judge: str = "embedding"  # "embedding" (offline) or "vision_language" (the `llm` resource, images as parts)


def _all_manifests(lake_dir: Path) -> list[dict]:
    partitions = [{"method": m, "shard": s} for m in METHODS for s in SHARD_KEYS
                  if lake_io.partition_exists(lake_dir, IMAGES, {"method": m, "shard": s})]
    if not partitions:
        raise dg.Failure(f"no {IMAGES} partitions yet: materialize images for at least one method first")
    manifest = lake_io.read_table(lake_dir, IMAGES, partitions).to_pylist()
    rewrites = {(r["user_id"], r["prompt_id"], r["method"]): r for r in
                lake_io.read_table(lake_dir, REWRITES, partitions).to_pylist()}
    for m in manifest:
        m["base_prompt"] = rewrites[(m["user_id"], m["prompt_id"], m["method"])]["base_prompt"]
    return manifest


def _reference_embeddings(lake_dir: Path, encoder_name: str, users: list[dict]) -> dict[str, np.ndarray]:
    wanted = {k for u in users for k in u["reference_url_keys"]}
    table = lake_io.read_table(lake_dir, "image_embeddings", [{"encoder": encoder_slug(encoder_name)}])
    table = table.filter(pc.is_in(table["url_key"], pa.array(sorted(wanted), pa.string())))
    return dict(zip(table["url_key"].to_pylist(), lake_io.vector_matrix(table["embedding"])))


def _embedding_table(columns: dict[str, list], embeddings, dim: int) -> pa.Table:
    return pa.table({**columns, "embedding": pa.FixedSizeListArray.from_arrays(
        pa.array(embeddings.reshape(-1), pa.float32()), dim)})


@dg.asset(
    name=SCORES,
    op_tags=pod_tags("image_gpu"),  # its pod on Kubernetes (zipp_assets/k8s.py)
    deps=[dg.AssetDep(IMAGES, partition_mapping=dg.AllPartitionMapping()), USERS, "image_embeddings"],
    group_name=GROUP,
    kinds={"deltalake"},
    pool="gpu",
    description="Every generated image scored: CLIPScore x100 against the user's held-out references and against "
                "its base prompt (encoders with a text tower), and a pairwise judge against generic in both orders.",
)
def zipbench_scores(context: dg.AssetExecutionContext, config: ScoresConfig, lake: ZippLake,
                    image_encoder: ImageEncoderResource, llm: LLMResource):
    def run() -> dict:
        from zipp_assets.zipbench.judge import EmbeddingJudge, VisionLanguageJudge
        from zipp_assets.zipbench.rewrite import persona_roleplay
        from zipp_assets.zipbench.scoring import score_images

        settings = lake.settings
        users = lake_io.read_table(settings.lake_dir, USERS).to_pylist()
        manifest = _all_manifests(settings.lake_dir)
        encoder = image_encoder.build()
        references = _reference_embeddings(settings.lake_dir, image_encoder.encoder_name, users)
        personas = _effective_personas(settings.lake_dir)
        persona_text = {u["user_id"]: persona_roleplay(personas[u["user_id"]]) for u in users if u["user_id"] in personas}
        if config.judge not in ("embedding", "vision_language"):
            raise dg.Failure(f"unknown judge {config.judge!r}: embedding or vision_language")

        def score_with(judge):
            # Images go to a judge that looks at pixels as paths under the data folder, which holds both the
            # generated images and the reference cache; its client resolves them there and nowhere else.
            return score_images(manifest, users, references, images_root(settings), encoder, judge, persona_text,
                                progress=context.log.info, judge_root=settings.data_dir,
                                reference_file=lambda key: settings.image_cache_dir / key[:2] / key)

        if config.judge == "embedding":
            scores = score_with(EmbeddingJudge())
        else:  # a vision-language model behind the `llm` resource; the template backend cannot look at images
            if llm.backend == "template":
                raise dg.Failure("the vision_language judge needs an LLM resource with a vision-language model")
            with llm.client(image_root=str(settings.data_dir)) as client:
                scores = score_with(VisionLanguageJudge(client))
        dim = scores.generated_embeddings.shape[1]
        with lake_io.atomic_partition(settings.lake_dir, SCORES) as folder:
            lake_io.write_table(folder, pa.Table.from_pylist(scores.rows))
        with lake_io.atomic_partition(settings.lake_dir, JUDGEMENTS) as folder:
            lake_io.write_table(folder, pa.Table.from_pylist(scores.judgements) if scores.judgements else
                                pa.table({"user_id": pa.array([], pa.string())}))
        embedded = _embedding_table(
            {"image_path": [m["image_path"] for m in manifest if m["user_id"] in {u["user_id"] for u in users}]},
            scores.generated_embeddings, dim)
        with lake_io.atomic_partition(settings.lake_dir, GENERATED_EMBEDDINGS) as folder:
            lake_io.write_table(folder, embedded)
        with lake_io.atomic_partition(settings.lake_dir, REFERENCE_EMBEDDINGS) as folder:
            lake_io.write_table(folder, _embedding_table(
                {"user_id": [users[i]["user_id"] for i in scores.reference_user.tolist()]},
                scores.reference_embeddings, dim))
        by_method = Counter(r["method"] for r in scores.rows)
        return {
            "images_scored": len(scores.rows),
            "by_method": dg.MetadataValue.md(markdown_table([{"method": m, "images": n} for m, n in sorted(by_method.items())])),
            "image_encoder": image_encoder.encoder_name,
            "reference_images": int(len(scores.reference_embeddings)),
            "image_text_scores": scores.text_scores,
            "judge": scores.judge,
            "pairs_judged": len(scores.judgements),
            "judge_failures": sum(1 for j in scores.judgements if j["reason"]),
            "seconds": round(scores.seconds, 2),
        }

    return _recorded(run)


HUMAN_AGREEMENT, HUMAN_PAIRS = "zipbench_human_agreement", "zipbench_human_pairs"


class HumanAgreementConfig(dg.Config):
    # Preference files or folders (Pick-a-Pic v2, Rapidata; the format is detected from the columns),
    # relative paths under the raw folder. None configured: the summary's row says so.
    preference_files: list[str] = []
    # Where the pairs' images are, under the raw folder: files named as
    # `python -m zipp_assets.zipbench.loaders export-images` writes them (or the published relative paths).
    image_root: str = "zipbench/preference_images"
    judge: str = "embedding"  # as zipbench_scores: "embedding" (offline) or "vision_language"
    max_pairs: int = 2000  # a keyed sample of the pairs, bounding the judge's calls
    references_per_user: int = 8  # a Pick-a-Pic user's chosen images in their other pairs
    seed: int = 0
    demographic_targets: str = ""  # the voters' raking targets; empty: the shipped, cited default


@dg.asset(
    name=HUMAN_AGREEMENT,
    op_tags=pod_tags("llm_client"),  # the judge: embeddings on CPU, or a vision-language model behind the server
    group_name=GROUP,
    kinds={"deltalake"},
    pool="gpu",
    description="The pairwise judge against people: Pick-a-Pic v2 and Rapidata preference pairs judged in both "
                "orders, agreement with the human choice with intervals, per vote raw and IPF-reweighted from the "
                "voters' demographics; one ZIPBench summary row per source.",
)
def zipbench_human_agreement(context: dg.AssetExecutionContext, config: HumanAgreementConfig, lake: ZippLake,
                             image_encoder: ImageEncoderResource, llm: LLMResource):
    def run() -> dict:
        import json

        from zipp_assets.zipbench.agreement import (
            agreement,
            human_pairs,
            judge_items,
            sample_pairs,
            summary_rows,
            with_image_bytes,
        )
        from zipp_assets.zipbench.judge import EmbeddingJudge, VisionLanguageJudge, judge_pairs
        from zipp_assets.zipbench.loaders import PREFERENCES, BenchmarkFileError, load
        from zipp_assets.zipbench.loaders.images import find_image
        from zipp_assets.zipbench.raking import DEFAULT_TARGETS, load_demographic_targets
        from zipp_assets.zipbench.scoring import embed_images

        settings = lake.settings
        started = time.perf_counter()
        if config.judge not in ("embedding", "vision_language"):
            raise dg.Failure(f"unknown judge {config.judge!r}: embedding or vision_language")
        files_report, pairs = [], []
        for name in config.preference_files:
            path = Path(name) if Path(name).is_absolute() else settings.raw_dir / name
            if not path.exists():
                files_report.append({"file": name, "status": "missing", "votes": 0, "rejected": 0})
                continue
            try:
                result = load(path, on_bad_row="skip")
            except BenchmarkFileError as error:
                files_report.append({"file": name, "status": f"refused: {error.problem}", "votes": 0, "rejected": 0})
                continue
            if result.kind != PREFERENCES:
                files_report.append({"file": name, "status": f"not preference pairs ({result.format.name})",
                                     "votes": 0, "rejected": result.rejected.num_rows})
                continue
            found = human_pairs(result.table)
            pairs += found
            files_report.append({"file": name, "status": f"read ({result.format.name})", "votes": result.table.num_rows,
                                 "pairs": len(found), "rejected": result.rejected.num_rows,
                                 "skipped": result.skipped.num_rows, "duplicates": result.duplicates.num_rows})
        available = dict(Counter(p.format for p in pairs))
        chosen = sample_pairs(pairs, config.max_pairs, config.seed)
        root = Path(config.image_root)
        root = root if root.is_absolute() else settings.raw_dir / root
        prepared = judge_items(chosen, lambda image_id: find_image(root, image_id),
                               lambda paths: embed_images(paths, image_encoder.build()), config.references_per_user)
        judge_name = "none"
        verdicts = []
        if prepared.items:
            if config.judge == "embedding":
                judge = EmbeddingJudge()
                verdicts = judge_pairs(judge, prepared.items)
                judge_name = judge.name
            else:
                if llm.backend == "template":
                    raise dg.Failure("the vision_language judge needs an LLM resource with a vision-language model")
                with llm.client() as client:
                    judge = VisionLanguageJudge(client)
                    for start in range(0, len(prepared.items), 64):  # images read 64 pairs at a time
                        verdicts += judge_pairs(judge, [with_image_bytes(item) for item in
                                                        prepared.items[start : start + 64]])
                    judge_name = judge.name
        targets = load_demographic_targets(config.demographic_targets or DEFAULT_TARGETS)
        results = agreement(prepared.pairs, verdicts, targets, seed=config.seed)
        why = ("no preference files configured (preference_files)" if not config.preference_files else
               "; ".join(f"{n} pairs left out: {r}" for r, n in prepared.skipped.items()) or "no pairs judged")
        rows = summary_rows(results, judge_name, available, note="" if results else why)
        pair_rows = [{"pair_id": p.pair_id, "format": p.format, "annotator_id": p.annotator, "human": p.majority,
                      "votes_a": p.tally[0], "votes_b": p.tally[1], "judge_winner": v.winner,
                      "first_order": v.verdict_ab.choice, "second_order": v.verdict_ba.choice,
                      "reason": v.verdict_ab.reason or v.verdict_ba.reason or None, "judge": v.judge}
                     for p, v in zip(prepared.pairs, verdicts)]
        pair_schema = pa.schema([("pair_id", pa.string()), ("format", pa.string()), ("annotator_id", pa.string()),
                                 ("human", pa.string()), ("votes_a", pa.int64()), ("votes_b", pa.int64()),
                                 ("judge_winner", pa.string()), ("first_order", pa.string()),
                                 ("second_order", pa.string()), ("reason", pa.string()), ("judge", pa.string())])
        with lake_io.atomic_partition(settings.lake_dir, HUMAN_PAIRS) as folder:
            lake_io.write_table(folder, pa.Table.from_pylist(pair_rows, schema=pair_schema), pair_schema)
        details = [{k: val for k, val in r.items() if not k.startswith("_")} for r in results.values()]
        with lake_io.atomic_partition(settings.lake_dir, HUMAN_AGREEMENT) as folder:
            lake_io.write_table(folder, pa.Table.from_pylist(
                [{"table": "summary_row", "json": json.dumps(r)} for r in rows]
                + [{"table": "result", "json": json.dumps(d, default=str)} for d in details],
                schema=pa.schema([("table", pa.string()), ("json", pa.string())])))
        return {
            "judge": judge_name,
            "pairs_available": sum(available.values()),
            "pairs_judged": len(prepared.items),
            "pairs_left_out": dg.MetadataValue.json(dict(prepared.skipped)),
            "files": dg.MetadataValue.md(markdown_table(files_report) if files_report else "(none configured)"),
            "summary_rows": dg.MetadataValue.md(markdown_table(rows, 10, 200)),
            "results": dg.MetadataValue.json(details),
            "seconds": round(time.perf_counter() - started, 2),
        }

    return _recorded(run)


class SummaryConfig(dg.Config):
    seed: int = 0
    demographic_targets: str = ""  # a target table (JSON); empty: the shipped, cited default


@dg.asset(
    name=SUMMARY,
    op_tags=pod_tags("small"),  # its pod on Kubernetes (zipp_assets/k8s.py)
    deps=[SCORES, USERS, HUMAN_AGREEMENT],
    group_name=GROUP,
    kinds={"deltalake"},
    description="Per method, intervals over users: CLIPScore to the references and to the prompt, lift over generic "
                "in percent, judge win rate over generic, CMMD; the history methods over users with and without a "
                "prompt history; the judge's agreement with human choices; and the demographic table, raw and "
                "IPF-reweighted.",
)
def zipbench_summary(context: dg.AssetExecutionContext, config: SummaryConfig, lake: ZippLake):
    def run() -> dict:
        import json

        from zipp_assets.zipbench.raking import DEFAULT_TARGETS, load_demographic_targets
        from zipp_assets.zipbench.scoring import (
            ALL_USERS,
            ImageScores,
            history_rows,
            judge_is_clipscore,
            label_offline_judge,
            summarise,
        )

        settings = lake.settings
        started = time.perf_counter()
        users = lake_io.read_table(settings.lake_dir, USERS).to_pylist()
        manifest = _all_manifests(settings.lake_dir)
        rows = lake_io.read_table(settings.lake_dir, SCORES).to_pylist()
        judgements = [j for j in lake_io.read_table(settings.lake_dir, JUDGEMENTS).to_pylist() if j.get("method")]
        embedded = lake_io.read_table(settings.lake_dir, GENERATED_EMBEDDINGS)
        vectors = dict(zip(embedded["image_path"].to_pylist(), lake_io.vector_matrix(embedded["embedding"])))
        index = {u["user_id"]: i for i, u in enumerate(users)}
        manifest = [m for m in manifest if m["user_id"] in index]
        references = lake_io.read_table(settings.lake_dir, REFERENCE_EMBEDDINGS)
        scores = ImageScores(rows=rows, judgements=judgements,
                             generated_embeddings=np.stack([vectors[m["image_path"]] for m in manifest]),
                             reference_embeddings=lake_io.vector_matrix(references["embedding"]),
                             reference_user=np.asarray([index[u] for u in references["user_id"].to_pylist()], np.int64),
                             judge=judgements[0]["judge"] if judgements else "none",
                             text_scores=any(np.isfinite(r["clip_text"]) for r in rows), seconds=0.0)
        targets = load_demographic_targets(config.demographic_targets or DEFAULT_TARGETS)
        summary = summarise(scores, manifest, users, METHODS, targets, seed=config.seed)
        results = summary["results"]
        table = [{"method": r["method"], "group": ALL_USERS, **{k: v for k, v in r.items() if not k.startswith("_")}}
                 for r in results]
        by_history = history_rows(scores, users, METHODS, seed=config.seed)
        human = _human_agreement_rows(settings.lake_dir)
        rows_out = label_offline_judge(table + by_history, scores.judge) + human
        columns = list(dict.fromkeys(["method", "group", *(k for r in rows_out for k in r)]))
        with lake_io.atomic_partition(settings.lake_dir, SUMMARY) as folder:
            lake_io.write_table(folder, pa.Table.from_pylist(
                [{c: str(r.get(c, "–") if r.get(c) is not None else "–") for c in columns} for r in rows_out]))
        table = [r for r in rows_out if r["group"] == ALL_USERS]
        demographics = summary["demographics"]
        demo_rows = [{"table": "reweighted", **{k: str(v) for k, v in r.items()}} for r in demographics["rows"]]
        with lake_io.atomic_partition(settings.lake_dir, DEMOGRAPHICS) as folder:
            lake_io.write_table(folder, pa.Table.from_pylist(
                [{"table": "reweighted", "json": json.dumps(r)} for r in demographics["rows"]] +
                [{"table": "groups", "json": json.dumps(r)} for r in demographics["groups"]] +
                [{"table": "fit", "json": json.dumps(demographics["fit"])}]))
        figure, axes = new_figure(7, 3.2)
        names = [r["method"] for r in results]
        est = np.array([r["_clip_ref"].estimate for r in results])
        err = np.array([[r["_clip_ref"].estimate - r["_clip_ref"].low, r["_clip_ref"].high - r["_clip_ref"].estimate]
                        for r in results]).T
        colours = ["#888" if n == "generic" else "#c44" if n.startswith("zipp") and n != "zipp_shuffled" else "#69c"
                   for n in names]
        axes.bar(range(len(names)), est, yerr=err, color=colours, capsize=3)
        axes.set_xticks(range(len(names)), names, rotation=30, fontsize=7)
        axes.set_ylabel("CLIPScore to references (x100)")
        axes.set_ylim(max(0.0, float(est.min()) - 5), float(est.max()) + 3)
        context.log.info("\n" + "\n".join(f"{r['method']}: {r['CLIPScore (ref)']} lift {r['lift % over generic']}"
                                          for r in table))
        return {
            "results": dg.MetadataValue.md(markdown_table(table, 20, 80)),
            "by_prompt_history": dg.MetadataValue.md(markdown_table(by_history, 20, 80)),
            "judge_vs_humans": dg.MetadataValue.md(markdown_table(human, 10, 400)),
            "judge": scores.judge + (f" ({OFFLINE_JUDGE_NOTE})" if judge_is_clipscore(scores.judge) else ""),
            "demographics_reweighted": dg.MetadataValue.md(markdown_table(demo_rows, 20, 80)),
            "raking": dg.MetadataValue.json(demographics["fit"] or {}),
            "verdicts": dg.MetadataValue.json({r["method"]: r["verdict vs generic"] for r in results}),
            "clip_ref_plot": png_markdown(figure),
            "users": len(users),
            "seconds": round(time.perf_counter() - started, 2),
        }

    return _recorded(run)


OFFLINE_JUDGE_NOTE = ("its verdicts are the sign of the CLIPScore (ref) difference between the two images: the same "
                      "metric as CLIPScore, not a separate finding")


def _human_agreement_rows(lake_dir: Path) -> list[dict]:
    """The summary's rows for the judge against people, from zipbench_human_agreement (or why there are none)."""
    import json

    if not lake_io.table_exists(lake_dir, HUMAN_AGREEMENT):
        return [{"method": "judge vs human choices", "group": "human preference pairs", "users": "0",
                 "judge agreement with humans": "–", "judge verdict": "–",
                 "note": f"{HUMAN_AGREEMENT} not materialized"}]
    return [json.loads(r["json"]) for r in lake_io.read_table(lake_dir, HUMAN_AGREEMENT).to_pylist()
            if r["table"] == "summary_row"]


class ReportConfig(dg.Config):
    gallery_users: int = 6
    prompts_per_user: int = 2
    seed: int = 0


@dg.asset(
    name="zipbench_report",
    op_tags=pod_tags("small"),  # its pod on Kubernetes (zipp_assets/k8s.py)
    deps=[SUMMARY, REWRITES, IMAGES],
    group_name=GROUP,
    kinds={"html"},
    description="A self-contained HTML page (opens from disk): the results table in the paper's shape with "
                "intervals, the demographic table, plots, and a gallery of each method's prompt and image per user.",
)
def zipbench_report(context: dg.AssetExecutionContext, config: ReportConfig, lake: ZippLake,
                    image_generator: ImageGeneratorResource, llm: LLMResource, image_encoder: ImageEncoderResource):
    def run() -> dict:
        import hashlib
        import json

        from zipp_assets.zipbench.report import build_report

        settings = lake.settings
        summary = lake_io.read_table(settings.lake_dir, SUMMARY).to_pylist()
        demographics = lake_io.read_table(settings.lake_dir, DEMOGRAPHICS).to_pylist()
        users = lake_io.read_table(settings.lake_dir, USERS).to_pylist()
        manifest = _all_manifests(settings.lake_dir)
        rewrites = lake_io.read_table(settings.lake_dir, REWRITES).to_pylist()
        personas = _effective_personas(settings.lake_dir)
        judged = lake_io.read_table(settings.lake_dir, JUDGEMENTS)
        judge_name = judged["judge"][0].as_py() if "judge" in judged.column_names and judged.num_rows else "none"
        chosen = sorted(users, key=lambda u: hashlib.sha256(f"{config.seed}/{u['user_id']}".encode()).hexdigest())
        chosen = chosen[: config.gallery_users]
        page, markdown = build_report(
            summary=summary,
            demographic_rows=[json.loads(r["json"]) for r in demographics if r["table"] == "reweighted"],
            demographic_groups=[json.loads(r["json"]) for r in demographics if r["table"] == "groups"],
            raking=next((json.loads(r["json"]) for r in demographics if r["table"] == "fit"), None),
            gallery_users=chosen, personas=personas, manifest=manifest, rewrites=rewrites, methods=METHODS,
            images_root=images_root(settings), reference_cache=settings.image_cache_dir,
            prompts_per_user=config.prompts_per_user,
            components={"rewriter (LLM)": llm.description, "image generator": image_generator.description,
                        "image encoder (scores)": image_encoder.encoder_name,
                        "pairwise judge": judge_name})
        out = settings.data_dir / "zipbench" / "report" / "index.html"
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(".index.html.tmp")
        tmp.write_text(page, encoding="utf-8")
        tmp.replace(out)
        return {
            "report": dg.MetadataValue.path(str(out)),
            "report_bytes": len(page.encode()),
            "results": dg.MetadataValue.md(markdown),
            "gallery_users": len(chosen),
        }

    return _recorded(run)


zipbench_assets = [zipbench_users, zipbench_prompts, zipbench_rewrites, zipbench_images, zipbench_scores,
                   zipbench_summary, zipbench_report, zipbench_human_agreement]
