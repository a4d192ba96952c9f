"""What the persona browser shows, read from the lake: search, and one user's persona with its evidence,
edits, reference images and benchmark images. Read-only; edits go through `personas.overrides`.

Everything returned is data for templates to escape; the only paths are built here from validated
ids (pseudonyms, shard keys, method names, hex image keys), never from stored text.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from zipp_assets import lake
from zipp_assets.personas.evidence import EVIDENCE, parse_evidence
from zipp_assets.personas.overrides import apply_overrides, overrides_by_user
from zipp_assets.personas.shards import SHARD_KEYS, shard_of
from zipp_assets.personas.verbalize import PERSONAS, persona_of
from zipp_assets.zipbench.prompts import prompts_for_user
from zipp_assets.zipbench.rewrite import METHODS

USER_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
QUERY = re.compile(r"^[A-Za-z0-9_-]{0,64}$")
IMAGE_KEY = re.compile(r"^[0-9a-f]{64}$")
IMAGE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,200}\.png$")
BENCH_USERS, BENCH_PROMPTS, BENCH_IMAGES = "zipbench_users", "zipbench_prompts", "zipbench_images"
DEFAULT_PROMPT_CHOICES = 8


def _read(lake_dir: Path, dataset: str, partitions=None, columns=None) -> list[dict]:
    """Rows of a table (or of some partitions), or none when it was never materialized."""
    try:
        return lake.read_table(lake_dir, dataset, partitions, columns).to_pylist()
    except FileNotFoundError:
        return []


def check_user_id(user_id: str) -> str:
    if not isinstance(user_id, str) or not USER_ID.match(user_id):
        raise ValueError("not a pseudonym")
    return user_id


def search_personas(lake_dir: Path, query: str = "", shard: str = "", limit: int = 50) -> tuple[list[dict], int]:
    """(up to `limit` users whose pseudonym starts with `query`, within `shard` if given; how many matched).
    A full pseudonym reads only its own shard."""
    if not QUERY.match(query or ""):
        raise ValueError("search by pseudonym: letters, digits, '_' and '-' only, at most 64")
    if shard and shard not in SHARD_KEYS:
        raise ValueError(f"shard must be one of {SHARD_KEYS[0]}..{SHARD_KEYS[-1]}")
    shards = [shard] if shard else ([shard_of(query)] if re.fullmatch(r"u_[0-9a-f]{20}", query or "") else SHARD_KEYS)
    partitions = [{"shard": s} for s in shards if lake.partition_exists(lake_dir, PERSONAS, {"shard": s})]
    if not partitions:
        return [], 0
    rows = _read(lake_dir, PERSONAS, partitions, ["user_id", "shard", "ok", "summary", "model"])
    needle = (query or "").lower()
    found = sorted((r for r in rows if r["user_id"].lower().startswith(needle)), key=lambda r: r["user_id"])
    edited = overrides_by_user(lake_dir)
    shown = [r | {"edited": sorted({e["field"] for e in edited.get(r["user_id"], [])})} for r in found[:limit]]
    return shown, len(found)


def snippets_of(evidence_text: str) -> list[dict]:
    """The comment snippets quoted in a user's evidence (what the verbalizer read); none when the
    evidence is not a document this version writes."""
    try:
        comments = parse_evidence(evidence_text).comments
    except ValueError:
        return []
    return [{"subreddit": subreddit, "text": text} for subreddit, text in comments]


def persona_detail(lake_dir: Path, data_dir: Path, user_id: str) -> dict | None:
    """Everything the persona page shows, or None when the user has no persona row."""
    check_user_id(user_id)
    shard = {"shard": shard_of(user_id)}
    if not lake.partition_exists(lake_dir, PERSONAS, shard):
        return None
    rows = [r for r in _read(lake_dir, PERSONAS, [shard]) if r["user_id"] == user_id]
    if not rows:
        return None
    row = rows[0]
    mined = persona_of(row)
    edits = overrides_by_user(lake_dir).get(user_id, [])
    effective = apply_overrides(mined, edits) if (mined and edits) else mined
    evidence = None
    if lake.partition_exists(lake_dir, EVIDENCE, shard):
        found = [r for r in _read(lake_dir, EVIDENCE, [shard]) if r["user_id"] == user_id]
        if found:
            e = found[0]
            evidence = {"communities": [{"subreddit": s, "weight": float(w)}
                                        for s, w in zip(e["top_subreddits"] or [], e["top_weights"] or [])],
                        "snippets": snippets_of(e["evidence_text"]), "visual": list(e["visual_descriptors"] or []),
                        "tokens": e["tokens"], "token_counter": e["token_counter"],
                        "snippets_used": e["snippets_used"], "snippets_available": e["snippets_available"]}
    bench_user = next((u for u in _read(lake_dir, BENCH_USERS) if u["user_id"] == user_id), None)
    references = [k for k in (bench_user or {}).get("reference_url_keys") or [] if IMAGE_KEY.match(k)]
    # The benchmark's prompts for this user, or (not a benchmark user) the ones it would get.
    prompts = [p for p in _read(lake_dir, BENCH_PROMPTS) if p["user_id"] == user_id] or \
        prompts_for_user(user_id, DEFAULT_PROMPT_CHOICES)
    images = []
    for method in METHODS:
        partition = {"method": method, "shard": shard["shard"]}
        if lake.partition_exists(lake_dir, BENCH_IMAGES, partition):
            images += [r | {"method": method} for r in _read(lake_dir, BENCH_IMAGES, [partition])
                       if r["user_id"] == user_id]
    return {
        "user_id": user_id, "shard": shard["shard"], "row": row, "mined": mined, "persona": effective,
        "edits": sorted(edits, key=lambda e: e["edited_utc"], reverse=True), "evidence": evidence,
        "references": references, "benchmark_user": bench_user is not None,
        "prompts": sorted(prompts, key=lambda p: p["prompt_id"]),
        "images": sorted(images, key=lambda r: (r["prompt_id"], METHODS.index(r["method"]))),
        "regenerated": regenerated_records(data_dir, user_id),
    }


def regenerated_dir(data_dir: Path, user_id: str) -> Path:
    return Path(data_dir) / "studio" / "regenerated" / check_user_id(user_id)


def regenerated_records(data_dir: Path, user_id: str) -> list[dict]:
    """Images regenerated in the studio for this user, newest first."""
    index = regenerated_dir(data_dir, user_id) / "regenerated.jsonl"
    if not index.is_file():
        return []
    out = []
    for line in index.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill; its image is listed by no one
        if isinstance(record, dict) and IMAGE_NAME.match(str(record.get("image", ""))):
            out.append(record)
    return out[::-1]


def all_edits(lake_dir: Path, limit: int = 500) -> list[dict]:
    """The audit trail of persona edits, newest first."""
    edits = [e for mine in overrides_by_user(lake_dir).values() for e in mine]
    return sorted(edits, key=lambda e: e["edited_utc"], reverse=True)[:limit]


def user_prompt(detail: dict, prompt_id: str) -> dict | None:
    return next((p for p in detail["prompts"] if p["prompt_id"] == prompt_id), None)
