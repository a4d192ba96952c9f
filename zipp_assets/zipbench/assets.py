"""Dagster wiring of ZIPBench: users and prompts, rewrites and images per method x shard, scores, report.

(No `from __future__ import annotations` here: Dagster reads the annotations at run time.)
"""

import time
import warnings
from collections import Counter
from pathlib import Path

import dagster as dg
import pyarrow as pa

from zipp_assets import lake as lake_io
from zipp_assets.graph.pseudonyms import pseudonym_key
from zipp_assets.graph.user_keys import user_ids_for_usernames
from zipp_assets.graph.visual import PROFILES, encoder_slug
from zipp_assets.imaging.resources import ImageEncoderResource, ImageGeneratorResource
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
from zipp_assets.zipbench.rewrite import METHODS, REWRITE_TEMPLATE_VERSION, REWRITES_SCHEMA, rewrite_rows, shuffled_partner, template_rewrite

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
    # Prompt-history files (Civitai generation records, PIP-style histories); relative paths are under the
    # raw folder. Missing files are skipped and said so.
    history_files: list[str] = ["zipbench/civitai_generations.jsonl"]
    # PIP-style prompt histories (Tailored Visions) whose user id is a Reddit username.
    prompt_history_files: list[str] = []


def _effective_personas(lake_dir: Path) -> dict[str, dict]:
    rows = [r for r in lake_io.read_table(lake_dir, PERSONAS).to_pylist() if r["ok"]]
    return {e["user_id"]: e["persona"] for e in effective_personas(rows, overrides_by_user(lake_dir))}


@dg.asset(
    name=USERS,
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

        history, history_report = load_history_files(
            under_raw(config.history_files),
            lambda names: user_ids_for_usernames(settings.lake_dir, names, pseudonym_key(settings)),
            under_raw(config.prompt_history_files))
        users = sample_users(profiles, personas, history, config.n_users, config.min_references, config.seed)
        chosen = {u["user_id"] for u in users}
        history_rows = [{"user_id": u, "position": i, "prompt": p} for u in sorted(chosen) for i, p in enumerate(history.get(u, []))]
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
            "history_files": dg.MetadataValue.md(markdown_table(history_report)),
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
        rows = build_prompts(users, history, config.prompts_per_user)
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
    out: dict[str, list[str]] = {}
    for row in sorted(lake_io.read_table(lake_dir, HISTORY).to_pylist(), key=lambda r: (r["user_id"], r["position"])):
        out.setdefault(row["user_id"], []).append(row["prompt"])
    return out


class RewritesConfig(dg.Config):
    batch_size: int = 64
    shuffle_seed: int = 0


@dg.asset(
    name=REWRITES,
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
            for method, shard in partition_pairs(context):
                mine = [p for p in prompts if p["shard"] == shard]
                rows = rewrite_rows(method, mine, personas, history, partner, client, generator.fit_prompt,
                                    generator.count_tokens, model, config.batch_size, progress=context.log.info)
                with lake_io.atomic_partition(settings.lake_dir, REWRITES, {"method": method, "shard": shard}) as folder:
                    lake_io.write_table(folder, pa.Table.from_pylist(rows, schema=REWRITES_SCHEMA), REWRITES_SCHEMA)
                summary.append({"method": method, "shard": shard, "prompts": len(rows),
                                "failed": sum(not r["ok"] for r in rows), "truncated": sum(r["truncated"] for r in rows),
                                "mean tokens": round(sum(r["prompt_tokens"] for r in rows) / max(len(rows), 1), 1),
                                "llm tokens": sum(r["llm_prompt_tokens"] + r["llm_completion_tokens"] for r in rows)})
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


def _reference_embeddings(lake_dir: Path, encoder_name: str, users: list[dict]) -> dict[str, list[float]]:
    wanted = {k for u in users for k in u["reference_url_keys"]}
    table = lake_io.read_table(lake_dir, "image_embeddings", [{"encoder": encoder_slug(encoder_name)}])
    return {k: e for k, e in zip(table["url_key"].to_pylist(), table["embedding"].to_pylist()) if k in wanted}


@dg.asset(
    name=SCORES,
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
        import numpy as np

        from zipp_assets.zipbench.judge import EmbeddingJudge, VisionLanguageJudge
        from zipp_assets.zipbench.rewrite import persona_roleplay
        from zipp_assets.zipbench.scoring import score_images

        settings = lake.settings
        users = lake_io.read_table(settings.lake_dir, USERS).to_pylist()
        manifest = _all_manifests(settings.lake_dir)
        encoder = image_encoder.build()
        references = {k: np.asarray(v, np.float32) for k, v in
                      _reference_embeddings(settings.lake_dir, image_encoder.encoder_name, users).items()}
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
        embedded = pa.table({"image_path": [m["image_path"] for m in manifest if m["user_id"] in {u["user_id"] for u in users}],
                             "embedding": pa.FixedSizeListArray.from_arrays(
                                 pa.array(scores.generated_embeddings.reshape(-1), pa.float32()), dim)})
        with lake_io.atomic_partition(settings.lake_dir, GENERATED_EMBEDDINGS) as folder:
            lake_io.write_table(folder, embedded)
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


class SummaryConfig(dg.Config):
    seed: int = 0
    demographic_targets: str = ""  # a target table (JSON); empty: the shipped, cited default


@dg.asset(
    name=SUMMARY,
    deps=[SCORES, USERS],
    group_name=GROUP,
    kinds={"deltalake"},
    description="Per method, intervals over users: CLIPScore to the references and to the prompt, lift over generic "
                "in percent, judge win rate over generic, CMMD; and the demographic table, raw and IPF-reweighted.",
)
def zipbench_summary(context: dg.AssetExecutionContext, config: SummaryConfig, lake: ZippLake,
                     image_encoder: ImageEncoderResource):
    def run() -> dict:
        import json

        import numpy as np

        from zipp_assets.zipbench.raking import DEFAULT_TARGETS, load_demographic_targets
        from zipp_assets.zipbench.scoring import ImageScores, summarise

        settings = lake.settings
        started = time.perf_counter()
        users = lake_io.read_table(settings.lake_dir, USERS).to_pylist()
        manifest = _all_manifests(settings.lake_dir)
        rows = lake_io.read_table(settings.lake_dir, SCORES).to_pylist()
        judgements = [j for j in lake_io.read_table(settings.lake_dir, JUDGEMENTS).to_pylist() if j.get("method")]
        embedded = lake_io.read_table(settings.lake_dir, GENERATED_EMBEDDINGS)
        vectors = dict(zip(embedded["image_path"].to_pylist(), np.asarray(embedded["embedding"].to_pylist(), np.float32)))
        index = {u["user_id"]: i for i, u in enumerate(users)}
        manifest = [m for m in manifest if m["user_id"] in index]
        references = _reference_embeddings(settings.lake_dir, image_encoder.encoder_name, users)
        ref_emb, ref_user = [], []
        for u in users:
            for key in u["reference_url_keys"]:
                if key in references:
                    ref_emb.append(references[key])
                    ref_user.append(index[u["user_id"]])
        scores = ImageScores(rows=rows, judgements=judgements,
                             generated_embeddings=np.stack([vectors[m["image_path"]] for m in manifest]),
                             reference_embeddings=np.asarray(ref_emb, np.float32), reference_user=np.asarray(ref_user),
                             judge=judgements[0]["judge"] if judgements else "none",
                             text_scores=any(np.isfinite(r["clip_text"]) for r in rows), seconds=0.0)
        targets = load_demographic_targets(config.demographic_targets or DEFAULT_TARGETS)
        summary = summarise(scores, manifest, users, METHODS, targets, seed=config.seed)
        results = summary["results"]
        table = [{k: v for k, v in r.items() if not k.startswith("_")} for r in results]
        with lake_io.atomic_partition(settings.lake_dir, SUMMARY) as folder:
            lake_io.write_table(folder, pa.Table.from_pylist([{k: str(v) for k, v in r.items()} for r in table]))
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
            "demographics_reweighted": dg.MetadataValue.md(markdown_table(demo_rows, 20, 80)),
            "raking": dg.MetadataValue.json(demographics["fit"] or {}),
            "verdicts": dg.MetadataValue.json({r["method"]: r["verdict vs generic"] for r in results}),
            "clip_ref_plot": png_markdown(figure),
            "users": len(users),
            "seconds": round(time.perf_counter() - started, 2),
        }

    return _recorded(run)


class ReportConfig(dg.Config):
    gallery_users: int = 6
    prompts_per_user: int = 2
    seed: int = 0


@dg.asset(
    name="zipbench_report",
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
                   zipbench_summary, zipbench_report]
