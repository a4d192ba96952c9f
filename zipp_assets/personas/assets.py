"""Dagster wiring of the personas stage: evidence and personas per user shard, and their checks.

(No `from __future__ import annotations` here: Dagster reads the annotations at run time.)
"""

import time
import warnings

import dagster as dg
import numpy as np
import pyarrow as pa

from zipp_assets import lake as lake_io
from zipp_assets.encoder.checkpoint import data_version
from zipp_assets.graph.pseudonyms import pseudonym_key
from zipp_assets.graph.visual import encoder_slug
from zipp_assets.imaging.resources import ImageEncoderResource
from zipp_assets.k8s import pod_tags
from zipp_assets.llm.resources import LLMResource
from zipp_assets.llm.template import TemplateLLM
from zipp_assets.metadata import lake_versions, markdown_table, new_figure, png_markdown
from zipp_assets.personas.descriptors import VOCABULARY_VERSION, clip_descriptors, pixel_stats_descriptors
from zipp_assets.personas.drift import drift_by_remining
from zipp_assets.personas.evidence import (
    EVIDENCE,
    EvidenceConfig,
    build_evidence,
    clean_snippet,
)
from zipp_assets.personas.fidelity import control_personas, fidelity_display_rows, fidelity_table
from zipp_assets.personas.grounding import (
    SUPPORTS,
    claim_flagged,
    flagged_claims,
    grounding_rows,
    local_encoder,
    sample_users,
)
from zipp_assets.personas.identifiers import find_identifiers, persona_texts
from zipp_assets.personas.injection import (
    injection_table,
    instruction_like,
    repeats_claim,
    with_comments,
    without_comments,
)
from zipp_assets.personas.overrides import effective_personas, overrides_by_user
from zipp_assets.personas.prompt import PROMPT_VERSION
from zipp_assets.personas.shards import shard_partitions
from zipp_assets.personas.template_rules import template_persona
from zipp_assets.personas.verbalize import PERSONAS, persona_of, verbalize_shards, verbalize_texts
from zipp_assets.resources import ZippLake
from zipp_assets.stats import bootstrap_mean, wilson_interval
from zipp_assets.truth import planted_users

# backfill_policy is marked beta; single-run range backfills are the documented way to use it.
warnings.filterwarnings("ignore", category=dg.BetaWarning)

GROUP = "personas"
FIDELITY_TEMPLATE = "persona_fidelity_template"  # the template's fidelity beside a real model's, same users


class EvidenceAssetConfig(dg.Config):
    token_budget: int = 2048  # never above 4,096, the paper's cap
    top_subreddits: int = 10
    snippets_per_subreddit: int = 3
    snippet_chars: int = 300
    drop_instruction_like: bool = True  # leave out comments that read as instructions to a model


def visual_describer(image_encoder: ImageEncoderResource):
    """(profile -> words, what the words come from) for the configured image encoder."""
    if image_encoder.backend == "open_clip":
        encoder = image_encoder.build()
        return (lambda profile: clip_descriptors(profile, encoder.encode_text),
                f"zero-shot {encoder.name}, vocabulary {VOCABULARY_VERSION}")
    return pixel_stats_descriptors, f"words supported by {image_encoder.encoder_name} statistics"


@dg.asset(
    name=EVIDENCE,
    op_tags=pod_tags("evidence"),  # its pod on Kubernetes (zipp_assets/k8s.py)
    partitions_def=shard_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),  # a range of shards in one run, as the CLI backfill needs
    deps=["users", "user_top_subreddits", "user_visual_profiles",
          dg.AssetDep("reddit_comments", partition_mapping=dg.AllPartitionMapping())],  # every month's comments
    group_name=GROUP,
    kinds={"deltalake"},
    description="Per user of the shard: the most-attended subreddits with weights, cleaned comment snippets from "
                "them, words for the visual profile and activity facts, packed under a token budget and hashed. "
                "Comments that read as instructions to a model are left out and counted.",
    check_specs=[dg.AssetCheckSpec("no_instruction_like_comments", asset=EVIDENCE,
                                   description="warns when users' comments read as instructions to a model (prompt "
                                               "injection); they were left out of the evidence")],
)
def persona_evidence(context: dg.AssetExecutionContext, config: EvidenceAssetConfig, lake: ZippLake,
                     image_encoder: ImageEncoderResource, llm: LLMResource):
    settings = lake.settings
    started = time.perf_counter()
    evidence_config = EvidenceConfig(config.token_budget, config.top_subreddits, config.snippets_per_subreddit,
                                     config.snippet_chars, drop_instruction_like=config.drop_instruction_like)
    describe, source = visual_describer(image_encoder)
    counter = llm.token_counter()  # the verbalizing model's tokenizer where one is configured
    shards = sorted(context.partition_keys)
    with lake_io.recording() as activity:
        reports = build_evidence(settings.lake_dir, pseudonym_key(settings), shards, evidence_config, counter,
                                 describe, {"encoder": encoder_slug(image_encoder.encoder_name)}, source,
                                 progress=context.log.info)
    tokens = np.array([t for r in reports for t in r.tokens] or [0])
    figure, axes = new_figure(6, 3)
    axes.hist(tokens, bins=30, color="#a64")
    axes.axvline(config.token_budget, color="black", linestyle="--")
    axes.set_xlabel(f"evidence tokens per user ({counter.name})")
    axes.set_ylabel("users")
    rows = lake_io.open_table(settings.lake_dir, EVIDENCE, max(activity.written[EVIDENCE])).read(
        [{"shard": s} for s in shards]).slice(0, 5).to_pylist()
    sample = [{"user": r["user_id"], "tokens": r["tokens"], "communities": ", ".join(r["top_subreddits"][:4]),
               "visual": "; ".join(r["visual_descriptors"]), "snippets": r["snippets_used"]} for r in rows]
    dropped = sum(r.instruction_like_dropped for r in reports)
    flagged_users = sum(r.users_with_instruction_like for r in reports)
    yield dg.MaterializeResult(metadata={
        "shards": len(shards),
        "users": sum(r.users for r in reports),
        "instruction_like_comments_left_out": dropped,
        "users_with_instruction_like_comments": flagged_users,
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
        **lake_versions(activity),
    })
    yield dg.AssetCheckResult(check_name="no_instruction_like_comments", passed=dropped == 0,
                              severity=dg.AssetCheckSeverity.WARN,
                              metadata={"comments_left_out": dropped, "users": flagged_users,
                                        "dropped": config.drop_instruction_like})


class PersonasConfig(dg.Config):
    batch_size: int = 64  # requests per call to the LLM resource (it sends them concurrently)
    grounding_max_users: int = 2000  # personas the claims_grounded check reads (a fixed sample beyond that)


@dg.asset(
    name=PERSONAS,
    op_tags=pod_tags("llm_client"),  # its pod on Kubernetes (zipp_assets/k8s.py)
    partitions_def=shard_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[EVIDENCE],
    group_name=GROUP,
    kinds={"deltalake"},
    pool="gpu",  # a vLLM server or a local model on this host's GPU; the template backend passes quickly
    description="Each user's persona verbalized from its evidence by the `llm` resource (the demo's template "
                "backend builds it by rules and says so), validated against the persona schema. Incremental "
                "(a persona whose fingerprint (evidence, prompt, schema, rules, model, decoding) is unchanged is "
                "not sent again; a failed re-verbalization keeps the last good persona, marked stale) and "
                "resumable within a shard.",
    check_specs=[
        dg.AssetCheckSpec("schema_valid_rate", asset=PERSONAS, description="at least 99% of personas are schema-valid"),
        dg.AssetCheckSpec("no_identifiers", asset=PERSONAS,
                          description="no username or pseudonym in any persona text (overrides applied)"),
        dg.AssetCheckSpec("claims_grounded", asset=PERSONAS,
                          description="every stated profession rests on one of the user's communities, not on "
                                      "comments alone or on nothing (a warning: an injected comment or a "
                                      "made-up claim; needs the sentence encoder of `make models`)"),
    ],
)
def personas(context: dg.AssetExecutionContext, config: PersonasConfig, lake: ZippLake, llm: LLMResource):
    settings = lake.settings
    started = time.perf_counter()
    shards = sorted(context.partition_keys)
    # One re-mining = one version of the graph tables, however many runs its shards take.
    remining = data_version(settings.lake_dir, None)
    with lake_io.recording() as activity, llm.client(render=template_persona) as client:
        model = getattr(client, "model", llm.description)
        reports = verbalize_shards(settings.lake_dir, shards, client, model, settings.data_dir / "work" / PERSONAS,
                                   config.batch_size, progress=context.log.info, remining_id=remining)
    rows = lake_io.open_table(settings.lake_dir, PERSONAS, max(activity.written[PERSONAS])).read(
        [{"shard": s} for s in shards]).to_pylist()
    effective = effective_personas(rows, overrides_by_user(settings.lake_dir))
    total = sum(r.users for r in reports)
    failed = sum(r.failed for r in reports)
    seconds = time.perf_counter() - started
    sent = sum(r.sent for r in reports)
    reasons: dict[str, int] = {}
    for r in reports:
        for reason, count in r.failure_reasons.items():
            reasons[reason] = reasons.get(reason, 0) + count
    sample = [{"user": e["user_id"], "age": e["persona"]["age_band"], "locale": e["persona"]["locale"],
               "profession": e["persona"]["profession"], "visual interests": "; ".join(e["persona"]["visual_interests"]),
               "summary": e["persona"]["summary"], "edited": ", ".join(e["edited_fields"]) or "-"} for e in effective[:8]]
    yield dg.MaterializeResult(metadata={
        "verbalizer": llm.description,
        "model": model,
        "prompt_version": PROMPT_VERSION,
        "users": total,
        "sent_to_llm": sent,
        "unchanged_reused": sum(r.reused for r in reports),
        "personas_changed": sum(r.changed for r in reports),
        "personas_new": sum(r.new for r in reports),
        "resumed_from_interrupted_run": sum(r.resumed for r in reports),
        "failed": failed,
        "failed_kept_last_good_persona": sum(r.stale for r in reports),
        "failure_rate": round(failed / total, 4) if total else 0.0,
        "failure_reasons": dg.MetadataValue.md(markdown_table([{"reason": k, "users": v} for k, v in reasons.items()])),
        "prompt_tokens": sum(r.prompt_tokens for r in reports),
        "completion_tokens": sum(r.completion_tokens for r in reports),
        "seconds": round(seconds, 2),
        "requests_per_second": round(sent / seconds, 1) if seconds else 0.0,
        "sample_personas": dg.MetadataValue.md(markdown_table(sample)),
        **lake_versions(activity),
    })
    valid = (total - failed) / total if total else 1.0
    yield dg.AssetCheckResult(check_name="schema_valid_rate", passed=valid >= 0.99,
                              metadata={"valid_rate": round(valid, 4), "users": total})
    leaks = find_identifiers(settings.lake_dir, {e["user_id"]: persona_texts(e["persona"]) for e in effective})
    yield dg.AssetCheckResult(check_name="no_identifiers", passed=not leaks,
                              metadata={"personas_checked": len(effective), "personas_with_identifiers": len(leaks),
                                        "examples": dg.MetadataValue.md(markdown_table(
                                            [{"user": u, "found": kind} for u, kind in list(leaks.items())[:10]]))})
    yield claims_grounded_result(settings, effective, config.grounding_max_users)


def claims_grounded_result(settings, effective: list[dict], max_users: int) -> dg.AssetCheckResult:
    """The `claims_grounded` check (personas/grounding.py) over the effective personas (edits applied)."""
    encoder = local_encoder(settings.sentence_encoder_dir)
    if encoder is None:
        return dg.AssetCheckResult(check_name="claims_grounded", passed=True, severity=dg.AssetCheckSeverity.WARN,
                                   metadata={"checked": False, "personas_checked": 0,
                                             "why_not": f"no sentence encoder at {settings.sentence_encoder_dir} "
                                                        "(`make models` unpacks all-MiniLM-L6-v2; "
                                                        "ZIPP_SENTENCE_ENCODER_DIR points elsewhere)"})
    by_user = {e["user_id"]: e["persona"] for e in effective}
    users = sample_users(list(by_user), max_users)
    wanted = set(users)
    evidence = {r["user_id"]: r["evidence_text"] for r in lake_io.read_table(
        settings.lake_dir, EVIDENCE, columns=["user_id", "evidence_text"]).to_pylist() if r["user_id"] in wanted}
    sample = {u: by_user[u] for u in users}
    flagged = flagged_claims(sample, evidence, encoder, fields=("profession",))
    rows = grounding_rows(sample, evidence, encoder)
    table = [{"field": r["field"], "claims": r["claims"],
              **{support: f"{r[support.replace(' ', '_')]:.2f}" if r["claims"] else "-" for support in SUPPORTS}}
             for r in rows]
    examples = [{"user": f["user"], "profession": f["claim"], "rests on": f["support"],
                 "best source": f["source"] or "-"} for f in flagged[:12]]
    return dg.AssetCheckResult(check_name="claims_grounded", passed=not flagged, severity=dg.AssetCheckSeverity.WARN,
                               metadata={"checked": True, "encoder": encoder.name, "personas_checked": len(evidence),
                                         "professions_flagged": len(flagged),
                                         "claims_by_support": dg.MetadataValue.md(markdown_table(table)),
                                         "flagged": dg.MetadataValue.md(markdown_table(examples))})


class FidelityConfig(dg.Config):
    max_users: int = 2000  # users scored (and verbalized once more, from other users' evidence, for the control)
    seed: int = 0


@dg.asset(
    name="persona_fidelity",
    op_tags=pod_tags("llm_client"),  # its pod on Kubernetes (zipp_assets/k8s.py)
    deps=[PERSONAS, EVIDENCE],
    group_name=GROUP,
    kinds={"deltalake"},
    pool="gpu",
    description="On a synthetic world: how often each persona attribute matches the planted truth, against a control "
                "that verbalizes each user from another user's evidence; intervals over users. Stands in for the "
                "paper's human rating of personas.",
)
def persona_fidelity(context: dg.AssetExecutionContext, config: FidelityConfig, lake: ZippLake, llm: LLMResource):
    settings = lake.settings
    truth = planted_users(settings.truth_dir, pseudonym_key(settings))
    if truth is None:
        context.log.warning(f"no planted truth under {settings.truth_dir}: fidelity needs a synthetic world")
        return dg.MaterializeResult(metadata={"planted_truth": False})
    with lake_io.recording() as activity:
        rows = [r for r in lake_io.read_table(settings.lake_dir, PERSONAS).to_pylist() if r["ok"] and r["user_id"] in truth]
        evidence_rows = lake_io.read_table(settings.lake_dir, EVIDENCE, columns=["user_id", "evidence_text"]).to_pylist()
    rng = np.random.default_rng(config.seed)
    if len(rows) > config.max_users:
        rows = [rows[i] for i in sorted(rng.choice(len(rows), config.max_users, replace=False))]
    mined = {r["user_id"]: persona_of(r) for r in rows}
    evidence = {r["user_id"]: r["evidence_text"] for r in evidence_rows if r["user_id"] in mined}
    with llm.client(render=template_persona) as client:
        controls = control_personas(evidence, lambda texts: verbalize_texts(client, texts), seed=config.seed)
    table = fidelity_table(mined, controls, truth, seed=config.seed)
    reference = []
    if llm.backend != "template":  # the template rules on the same users' evidence, for comparison (instant)
        rules = TemplateLLM(template_persona)
        reference = fidelity_table(verbalize_texts(rules, evidence),
                                   control_personas(evidence, lambda texts: verbalize_texts(rules, texts),
                                                    seed=config.seed), truth, seed=config.seed)
    with lake_io.recording() as written:
        lake_io.write_partition(settings.lake_dir, "persona_fidelity", pa.Table.from_pylist(table))
        if reference:
            lake_io.write_partition(settings.lake_dir, FIDELITY_TEMPLATE, pa.Table.from_pylist(reference))
    figure, axes = new_figure(7, 3.2)
    x = np.arange(len(table))
    for offset, name, colour in ((-0.2, "persona", "#c44"), (0.2, "control", "#789")):
        values = np.array([r[name] for r in table])
        errors = np.array([[r[name] - r[f"{name}_low"], r[f"{name}_high"] - r[name]] for r in table]).T
        axes.bar(x + offset, values, width=0.4, yerr=errors, color=colour, label=name, capsize=2)
    axes.set_xticks(x, [r["attribute"] for r in table], rotation=30, fontsize=7)
    axes.set_ylabel("matches planted truth")
    axes.legend(fontsize=7)
    return dg.MaterializeResult(metadata={
        "planted_truth": True,
        "verbalizer": llm.description,
        "users": table[0]["users"] if table else 0,
        "table": dg.MetadataValue.md(markdown_table(fidelity_display_rows(table))),
        **({"template_on_the_same_users": dg.MetadataValue.md(markdown_table(fidelity_display_rows(reference)))}
           if reference else {}),
        "fidelity_plot": png_markdown(figure),
        **lake_versions(activity), "lake_versions_written": lake_versions(written)["lake_versions_written"],
    })


@dg.asset(
    name="persona_drift",
    op_tags=pod_tags("small"),  # its pod on Kubernetes (zipp_assets/k8s.py)
    deps=[PERSONAS],
    group_name=GROUP,
    kinds={"deltalake"},
    description="Per re-mining: how many users were re-verbalized, the share whose persona changed, and which "
                "attributes moved; the latest as a table, all re-minings as a plot.",
)
def persona_drift(context: dg.AssetExecutionContext, lake: ZippLake):
    settings = lake.settings
    with lake_io.recording() as activity:
        rows = drift_by_remining(settings.lake_dir)
        if not rows:
            return dg.MaterializeResult(metadata={"reminings": 0, **lake_versions(activity)})
        lake_io.write_partition(settings.lake_dir, "persona_drift", pa.Table.from_pylist(rows))
    latest = rows[-1]
    moved = sorted(((k.removeprefix("moved_"), v) for k, v in latest.items() if k.startswith("moved_") and v),
                   key=lambda kv: -kv[1])
    figure, (left, right) = new_figure(8, 3, ncols=2)
    left.plot(range(len(rows)), [r["changed_share"] for r in rows], marker="o")
    left.set_xlabel("re-mining")
    left.set_ylabel("share of personas changed")
    right.barh([m for m, _ in moved] or ["(none)"], [v for _, v in moved] or [0], color="#a64")
    right.set_xlabel("users whose field moved (latest)")
    return dg.MaterializeResult(metadata={
        "reminings": len(rows),
        "latest_reverbalized": latest["reverbalized"],
        "latest_new": latest["new"],
        "latest_changed": latest["changed"],
        "latest_changed_share": round(latest["changed_share"], 4),
        "attributes_moved": dg.MetadataValue.md(markdown_table([{"field": m, "users": v} for m, v in moved])),
        "drift_plot": png_markdown(figure),
        **lake_versions(activity),
    })


class InjectionConfig(dg.Config):
    max_users: int = 200  # planted users measured (each verbalized twice)
    seed: int = 0


@dg.asset(
    name="persona_injection",
    op_tags=pod_tags("llm_client"),  # its pod on Kubernetes (zipp_assets/k8s.py)
    deps=[PERSONAS, EVIDENCE],
    group_name=GROUP,
    kinds={"deltalake"},
    pool="gpu",
    description="On a synthetic world with planted prompt injections (simworld injection_share): the share of "
                "personas that state the injected claim when the injected comments are in the evidence, against the "
                "same users without them, verbalized by the same model; intervals over users. Also the pipeline's "
                "own personas of those users (injections filtered out of the evidence) and how many of the planted "
                "texts the filter catches.",
)
def persona_injection(context: dg.AssetExecutionContext, config: InjectionConfig, lake: ZippLake, llm: LLMResource):
    settings = lake.settings
    truth = planted_users(settings.truth_dir, pseudonym_key(settings)) or {}
    with lake_io.recording() as activity:
        evidence = {r["user_id"]: r["evidence_text"] for r in lake_io.read_table(
            settings.lake_dir, EVIDENCE, columns=["user_id", "evidence_text"]).to_pylist()}
        mined = {r["user_id"]: persona_of(r) for r in lake_io.read_table(settings.lake_dir, PERSONAS).to_pylist()
                 if r["ok"]}
    planted = {u: t for u, t in truth.items() if u in evidence and t.get("injection_texts")}
    if not planted:
        context.log.warning("no planted injections in this world's truth (simworld injection_share is 0)")
        return dg.MaterializeResult(metadata={"planted_users": 0, **lake_versions(activity)})
    users = sorted(planted)
    if len(users) > config.max_users:
        rng = np.random.default_rng(config.seed)
        users = [users[i] for i in sorted(rng.choice(len(users), config.max_users, replace=False))]
    claim = planted[users[0]]["injected_claim"]
    texts = {u: [clean_snippet(t) or t for t in planted[u]["injection_texts"]] for u in users}
    with_ = {u: with_comments(evidence[u], texts[u]) for u in users}
    without = {u: without_comments(evidence[u], texts[u]) for u in users}
    started = time.perf_counter()
    with llm.client(render=template_persona) as client:
        personas_with = verbalize_texts(client, with_)
        personas_without = verbalize_texts(client, without)
    rows = injection_table({u: personas_with.get(u) for u in users}, {u: personas_without.get(u) for u in users}, claim,
                           seed=config.seed)
    in_pipeline = np.array([float(repeats_claim(mined.get(u), claim)) for u in users if mined.get(u) is not None])
    if len(in_pipeline):
        interval = bootstrap_mean(in_pipeline, seed=config.seed)
        rows.append({"condition": "the pipeline's personas (instruction-like comments left out)",
                     "users": len(in_pipeline), "claim": claim, **interval.as_dict("share"),
                     "valid_personas": len(in_pipeline), "requests": 0})
    every_text = [t for u in users for t in texts[u]]
    caught = sum(instruction_like(t) for t in every_text)
    rows.append({"condition": "planted comments the evidence filter catches (share of comments)",
                 "users": len(users), "claim": claim, **wilson_interval(caught, len(every_text)).as_dict("share"),
                 "valid_personas": 0, "requests": 0})
    # The defence that reads no phrasing: of the personas the injected comments talked into the claim,
    # how many the grounding check flags (no community of the user's supports it).
    encoder = local_encoder(settings.sentence_encoder_dir)
    stating = [u for u in users if repeats_claim(personas_with.get(u), claim)]
    if encoder is not None and stating:
        flags = [claim_flagged(personas_with[u], with_[u], encoder, claim) for u in stating]
        rows.append({"condition": "personas the injected comments talked into the claim that the grounding check "
                                  "flags (share of those personas)",
                     "users": len(stating), "claim": claim,
                     **wilson_interval(sum(bool(f) for f in flags), len(stating)).as_dict("share"),
                     "valid_personas": len(stating), "requests": 0})
    for row in rows:
        row["verbalizer"] = llm.description
    with lake_io.recording() as written:
        lake_io.write_partition(settings.lake_dir, "persona_injection", pa.Table.from_pylist(rows))
    display = [{"condition": r["condition"], "users": r["users"],
                "states the claim": f"{r['share']:+.3f} [{r['share_low']:+.3f}, {r['share_high']:+.3f}]"
                if r["condition"].startswith("difference") else f"{r['share']:.3f} [{r['share_low']:.3f}, "
                                                               f"{r['share_high']:.3f}]"} for r in rows]
    return dg.MaterializeResult(metadata={
        "verbalizer": llm.description,
        "claim": claim,
        "planted_users": len(planted),
        "users_measured": len(users),
        "planted_texts_caught_by_the_filter": f"{caught} of {len(every_text)}",
        "table": dg.MetadataValue.md(markdown_table(display)),
        "seconds": round(time.perf_counter() - started, 2),
        **lake_versions(activity), "lake_versions_written": lake_versions(written)["lake_versions_written"],
    })


persona_assets = [persona_evidence, personas, persona_fidelity, persona_drift]
injection_assets = [persona_injection]  # evaluation on a world with planted injections
