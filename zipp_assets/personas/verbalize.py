"""Personas from evidence, shard by shard: incremental, resumable, validated.

Incremental: a user whose stored, schema-valid persona has the fingerprint of the request that
would be sent now is not sent again; its persona is carried over. The fingerprint covers everything
that shapes the output: the whole request (prompt template, evidence, JSON schema, decoding
settings), the schema and prompt versions, the backend, the model and its version (for the template,
a digest of its rules' source). A user whose re-verbalization fails keeps its last good persona,
marked stale with the reason (and sent again next time), rather than losing it.

Resumable: each shard's share of a finished batch is kept as a file under a work folder for the shard; a killed run
finds them and sends only what is left; the shard's partition is replaced once, at the end, and the
work folder removed.

Model output is untrusted: it is validated against the persona schema whatever it says, and a
request that fails is a row with its reason, never a crash that loses the shard's earlier work.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError

from zipp_assets import lake
from zipp_assets.llm.base import LLM, generate_pooled, pooling
from zipp_assets.llm.jsonio import validate
from zipp_assets.llm.types import LLMRequest
from zipp_assets.personas.evidence import EVIDENCE
from zipp_assets.personas.prompt import PROMPT_VERSION, verbalization_request
from zipp_assets.personas.schema import SCHEMA_VERSION, Persona, persona_json_schema

PERSONAS = "personas"
CHANGES = "persona_changes"  # append-only: per re-mining, each re-verbalized user and the fields that moved
CHANGES_SCHEMA = pa.schema([
    ("remining_id", pa.string()), ("mined_utc", pa.timestamp("us", tz="UTC")), ("shard", pa.string()),
    ("user_id", pa.string()), ("status", pa.string()), ("changed_fields", pa.list_(pa.string())),
])
PERSONAS_SCHEMA = pa.schema([
    ("user_index", pa.int64()), ("user_id", pa.string()), ("shard", pa.string()),
    ("evidence_hash", pa.string()), ("prompt_version", pa.string()), ("schema_version", pa.string()),
    ("model", pa.string()), ("ok", pa.bool_()), ("error", pa.string()), ("persona_json", pa.string()),
    ("summary", pa.string()), ("prompt_tokens", pa.int64()), ("completion_tokens", pa.int64()),
    ("seconds", pa.float64()), ("mined_utc", pa.timestamp("us", tz="UTC")),
    ("fingerprint", pa.string()),  # of what produced the persona (persona_fingerprint)
    ("stale", pa.bool_()),  # a kept persona whose re-verbalization failed (the reason is in `error`)
])


@dataclass
class VerbalizeReport:
    shard: str
    users: int = 0
    reused: int = 0
    resumed: int = 0
    sent: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    failure_reasons: dict[str, int] = field(default_factory=dict)
    changed: int = 0  # re-verbalized users whose persona differs from their previous one
    new: int = 0
    stale: int = 0  # failed users who keep their last good persona


def validate_persona(parsed: dict | None) -> tuple[Persona | None, str | None]:
    """The persona, or the reason it is none: every field must be present (the strict schema), and
    each within the model's limits. `{}` is no persona, whatever defaults the model class has."""
    if parsed is None:
        return None, "no JSON object in the output"
    violation = validate(parsed, persona_json_schema())
    if violation is not None:
        return None, f"schema: {violation}"
    try:
        return Persona.model_validate(parsed), None
    except ValidationError as error:
        first = error.errors()[0]
        return None, f"schema: {'.'.join(str(p) for p in first['loc'])}: {first['msg']}"


def persona_fingerprint(request: LLMRequest, llm: LLM, model: str) -> str:
    """A digest of everything that shapes a persona's output (see the module docstring)."""
    shaping = {"messages": list(request.messages), "json_schema": request.json_schema,
               "schema_name": request.schema_name, "max_tokens": request.max_tokens,
               "temperature": request.temperature, "prompt_version": PROMPT_VERSION, "schema_version": SCHEMA_VERSION,
               "backend": getattr(llm, "backend", ""), "model": model, "model_version": getattr(llm, "version", "")}
    return hashlib.sha256(json.dumps(shaping, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _rows(evidence: list[dict], results, model: str, fingerprints: list[str]) -> pa.Table:
    now = datetime.now(timezone.utc)
    rows = []
    for e, result, fingerprint in zip(evidence, results, fingerprints):
        persona, reason = validate_persona(result.parsed) if result.ok else (None, result.error or "failed")
        rows.append({
            "user_index": e["user_index"], "user_id": e["user_id"], "shard": e["shard"],
            "evidence_hash": e["evidence_hash"], "prompt_version": PROMPT_VERSION, "schema_version": SCHEMA_VERSION,
            "model": model, "ok": persona is not None, "error": reason,
            "persona_json": persona.model_dump_json() if persona else None,
            "summary": persona.summary if persona else None,
            "prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
            "seconds": result.seconds, "mined_utc": now, "fingerprint": fingerprint, "stale": False,
        })
    return pa.Table.from_pylist(rows, schema=PERSONAS_SCHEMA)


def shard_rows(lake_dir: Path, dataset: str, shard: str) -> list[dict]:
    """The rows of one shard at the table's current version; none when the shard was never written."""
    if not lake.table_exists(lake_dir, dataset):
        return []
    table = lake.open_table(lake_dir, dataset)
    return table.read([{"shard": shard}]).to_pylist() if table.has_partition({"shard": shard}) else []


def changed_fields(before: dict, after: dict) -> list[str]:
    return sorted(k for k in after if before.get(k) != after.get(k))


@dataclass
class _ShardPlan:
    """One shard's state while its requests are out: what to send, what is done, where batches are kept."""
    shard: str
    report: VerbalizeReport
    evidence: list[dict]
    requests: dict[str, LLMRequest]
    fingerprint: dict[str, str]
    previous: list[dict]
    done: dict[str, dict]
    reused_ids: set[str]
    work: Path
    todo: list[dict]
    started: float


def _plan_shard(lake_dir: Path, shard: str, llm: LLM, model: str, work_dir: Path) -> _ShardPlan:
    started = time.perf_counter()
    report = VerbalizeReport(shard)
    evidence = shard_rows(lake_dir, EVIDENCE, shard)
    report.users = len(evidence)
    requests = {e["user_id"]: verbalization_request(e["user_id"], e["evidence_text"]) for e in evidence}
    fingerprint = {u: persona_fingerprint(r, llm, model) for u, r in requests.items()}

    def same_input(row: dict) -> bool:
        return row.get("fingerprint") is not None and row["fingerprint"] == fingerprint.get(row["user_id"])

    previous = shard_rows(lake_dir, PERSONAS, shard)
    # Failures and stale personas are tried again.
    done = {r["user_id"]: r for r in previous if r["ok"] and not r.get("stale") and same_input(r)}
    report.reused = len(done)
    reused_ids = set(done)
    work = Path(work_dir) / f"shard={shard}"
    for path in sorted(work.glob("part-*.parquet")):  # batches a killed run finished (failed rows too)
        for row in pq.read_table(path).to_pylist():
            if row["user_id"] not in done and same_input(row):
                done[row["user_id"]] = row
                report.resumed += 1
    todo = [e for e in evidence if e["user_id"] not in done]
    return _ShardPlan(shard, report, evidence, requests, fingerprint, previous, done, reused_ids, work, todo, started)


def _finish_shard(lake_dir: Path, plan: _ShardPlan, remining_id: str) -> VerbalizeReport:
    shard, report, previous, done = plan.shard, plan.report, plan.previous, plan.done
    last_good = {r["user_id"]: r for r in previous if r["ok"] and r.get("persona_json")}
    for user, row in list(done.items()):
        if not row["ok"] and user in last_good:  # keep the last good persona, marked stale with the reason
            done[user] = last_good[user] | {"stale": True, "error": f"stale: re-verbalization failed: {row['error']}",
                                            "shard": shard}
    rows = [done[e["user_id"]] for e in plan.evidence]
    earlier = {r["user_id"]: persona_of(r) for r in previous if r["ok"]}
    changes = []
    for row in rows:
        if row["user_id"] not in plan.reused_ids and row["ok"] and not row.get("stale"):
            before, after = earlier.get(row["user_id"]), persona_of(row)
            fields = changed_fields(before, after) if before is not None else []
            status = "new" if before is None else "changed" if fields else "unchanged"
            report.changed += status == "changed"
            report.new += status == "new"
            changes.append({"remining_id": remining_id, "mined_utc": row["mined_utc"], "shard": shard,
                            "user_id": row["user_id"], "status": status, "changed_fields": fields})
    for row in rows:
        if not row["ok"] or row.get("stale"):
            report.failed += 1
            report.stale += bool(row.get("stale"))
            error = (row["error"] or "failed").removeprefix("stale: re-verbalization failed: ")
            reason = error.split(":")[0][:60]
            report.failure_reasons[reason] = report.failure_reasons.get(reason, 0) + 1
        report.prompt_tokens += row["prompt_tokens"] or 0
        report.completion_tokens += row["completion_tokens"] or 0
    with lake.atomic_partition(lake_dir, PERSONAS, {"shard": shard}) as folder:
        lake.write_table(folder, pa.Table.from_pylist(rows, schema=PERSONAS_SCHEMA), PERSONAS_SCHEMA)
    if changes:
        lake.append_rows(lake_dir, CHANGES, pa.Table.from_pylist(changes, schema=CHANGES_SCHEMA))
    shutil.rmtree(plan.work, ignore_errors=True)
    report.seconds = time.perf_counter() - plan.started
    return report


def verbalize_shards(lake_dir: Path, shards: Sequence[str], llm: LLM, model: str, work_dir: Path,
                     batch_size: int = 64, progress: Callable[[str], None] | None = None,
                     remining_id: str = "") -> list[VerbalizeReport]:
    """Write the `personas` partition of each shard from its evidence (see the module docstring).

    Requests of consecutive shards share batches (`generate_pooled`): a shard holds few users, and a
    server kept a few requests busy at a time is mostly idle. Each shard's partition is written once
    all its users are answered, in shard order, so at most the shards of one batch are held at once.
    """
    say = progress or (lambda _m: None)
    reports: list[VerbalizeReport] = []
    total_sent = 0

    def plans():
        for shard in shards:
            plan = _plan_shard(lake_dir, shard, llm, model, work_dir)
            report = plan.report
            say(f"shard {shard}: {report.users:,} users, {report.reused:,} unchanged, {report.resumed:,} from an "
                f"interrupted run, {len(plan.todo):,} to verbalize with {model}")
            yield plan, [(e, plan.requests[e["user_id"]]) for e in plan.todo]

    def answered(plan: _ShardPlan, batch: list[dict], results: list) -> None:
        nonlocal total_sent
        table = _rows(batch, results, model, [plan.fingerprint[e["user_id"]] for e in batch])
        lake.append_file(plan.work, table)
        for row in table.to_pylist():
            plan.done[row["user_id"]] = row
        plan.report.sent += len(batch)
        total_sent += len(batch)
        say(f"shard {plan.shard}: {plan.report.sent:,} / {len(plan.todo):,} verbalized ({total_sent:,} in this run)")

    per_call, in_flight = pooling(llm, batch_size)
    generate_pooled(llm, plans(), per_call, answered,
                    lambda plan: reports.append(_finish_shard(lake_dir, plan, remining_id)), in_flight)
    return reports


def verbalize_shard(lake_dir: Path, shard: str, llm: LLM, model: str, work_dir: Path, batch_size: int = 64,
                    progress: Callable[[str], None] | None = None, remining_id: str = "") -> VerbalizeReport:
    """Write the `personas` partition of one shard from its evidence (see the module docstring)."""
    [report] = verbalize_shards(lake_dir, [shard], llm, model, work_dir, batch_size, progress, remining_id)
    return report


def persona_of(row: dict) -> dict | None:
    return json.loads(row["persona_json"]) if row.get("persona_json") else None


def verbalize_texts(llm: LLM, evidence_by_user: dict[str, str], batch_size: int = 64) -> dict[str, dict]:
    """Personas of arbitrary evidence texts, in memory (the fidelity control); failures are left out."""
    out = {}

    def answered(_unit, users: list[str], results: list) -> None:
        for user, result in zip(users, results):
            persona, _reason = validate_persona(result.parsed) if result.ok else (None, result.error)
            if persona is not None:
                out[user] = persona.model_dump()

    work = [(user, verbalization_request(user, text)) for user, text in evidence_by_user.items()]
    per_call, in_flight = pooling(llm, batch_size)
    generate_pooled(llm, [(None, work)], per_call, answered, lambda _unit: None, in_flight)
    return out
