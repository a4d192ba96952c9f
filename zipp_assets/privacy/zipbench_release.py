"""A ZIPBench release: the benchmark's per-user tables made fit to leave the lake (docs/privacy.md).

What a shared release holds, per released benchmark user (a random release id, no pseudonym):
- `users`: the persona release row (export.py): the generalised quasi-identifier, the persona without
  its summary or any value quoting the evidence; and `own_prompts`, whether the user's prompts include
  their own (a prompt history linked to their username). That flag is part of the quasi-identifier:
  users with and without own prompts are made k-anonymous separately, so every released group of k
  agrees on it too.
- `prompts`: per prompt and method, the category, the base prompt and the prompt the image model got
  (`final_prompt`). The user's own prompts (history and held-out) are their own published text,
  searchable where they were published: their text is withheld, with every rewrite of them, and their
  ids (hashes of the text) are replaced. A rewrite of a public prompt-set prompt that repeats a run of
  words from the user's evidence (Reddit comments) or own prompts is withheld as well.
- `scores`: per prompt and method, CLIPScore to the references and the prompt, and the judge's
  verdict against generic.
Dropped: user ids and indexes, shards and seeds (both derived from the pseudonym), reference image
keys (the user's own Reddit posts), counts of references and history prompts, the rewriter's
persona partner. Users the generalisation cannot hide among k are suppressed with all their rows.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import pyarrow as pa

from zipp_assets.privacy.export import RELEASE_SCHEMA, ReleaseRisk, build_persona_release, release_risk, word_runs
from zipp_assets.zipbench.prompts import PROMPT_SET_VERSION

USERS_SCHEMA = RELEASE_SCHEMA.append(pa.field("own_prompts", pa.bool_()))
USER_GROUP = ("generalisation", "quasi_identifier", "own_prompts")  # what a released group of k shares
PROMPTS_SCHEMA = pa.schema([
    ("user_id", pa.string()),  # inside the lake only, for the audit: never exported
    ("release_id", pa.string()), ("prompt_id", pa.string()), ("method", pa.string()), ("category", pa.string()),
    ("source", pa.string()), ("base_prompt", pa.string()), ("final_prompt", pa.string()), ("ok", pa.bool_()),
    ("truncated", pa.bool_()), ("model", pa.string()), ("template_version", pa.string()),
    ("text_withheld", pa.string()),  # why the text is not released (None: released)
])
SCORES_SCHEMA = pa.schema([
    ("release_id", pa.string()), ("prompt_id", pa.string()), ("method", pa.string()), ("clip_ref", pa.float64()),
    ("clip_text", pa.float64()), ("judge_winner", pa.string()),
])
TABLES = ("users", "prompts", "scores")  # each a lake table zipbench_release_candidate[_prompts|_scores]
EXPORTED_COLUMNS = {"users": [n for n in USERS_SCHEMA.names if n != "user_id"],
                    "prompts": [n for n in PROMPTS_SCHEMA.names if n != "user_id"],
                    "scores": SCORES_SCHEMA.names}
OWN_PROMPT = "the user's own prompt"
QUOTES_EVIDENCE = "quotes the user's comments"
QUOTES_OWN_PROMPTS = "quotes the user's own prompts"
PROMPT_SET_SOURCE = f"prompt set {PROMPT_SET_VERSION}"
OWN_SOURCE = "the user's own prompts (text withheld)"


def is_own_prompt(prompt: Mapping) -> bool:
    """A base prompt from the user's own history or held-out prompts, not the public prompt set."""
    return prompt.get("source") != PROMPT_SET_VERSION


@dataclass
class ZipbenchRelease:
    tables: dict[str, pa.Table]  # users, prompts, scores
    k: int
    candidates: int  # benchmark users offered
    suppressed: int
    dropped_verbatim_values: int  # persona values
    withheld: dict[str, int] = field(default_factory=dict)  # prompt texts withheld, by reason


def withheld_reason(text: str | None, evidence_runs: set, own_runs: set) -> str | None:
    runs = word_runs(text or "")
    if runs & evidence_runs:
        return QUOTES_EVIDENCE
    if runs & own_runs:
        return QUOTES_OWN_PROMPTS
    return None


def build_zipbench_release(users: list[dict], personas: Mapping[str, dict], quasi_identifiers: list[dict],
                           evidence_text: Mapping[str, str], own_prompts: Mapping[str, list[str]],
                           prompts: list[dict], rewrites: list[dict], scores: list[dict], judgements: list[dict],
                           k: int, seed: int | None = None) -> ZipbenchRelease:
    """`users`, `prompts`, `rewrites`, `scores`, `judgements`: rows of the zipbench tables; `personas`:
    user_id -> effective persona; `quasi_identifiers`: per user_id, from the lake; `evidence_text`: per
    user_id, the evidence its persona was written from; `own_prompts`: per user_id, every prompt of its
    own (history and held-out: the verbatim sources besides the evidence)."""
    with_own = {p["user_id"] for p in prompts if is_own_prompt(p)}
    offered = [u["user_id"] for u in users if u["user_id"] in personas]
    parts, suppressed, dropped = [], 0, 0
    for cohort, flag in enumerate((False, True)):  # k-anonymous within each value of own_prompts
        members = [{"user_id": u, "persona": personas[u]} for u in offered if (u in with_own) == flag]
        if not members:
            continue
        release = build_persona_release(members, quasi_identifiers, evidence_text, k,
                                        None if seed is None else seed * 2 + cohort)
        suppressed += release.suppressed + len(members) - release.candidates  # no quasi-identifier: not offered
        dropped += release.dropped_verbatim_values
        parts.append(release.table.append_column("own_prompts", pa.array([flag] * release.table.num_rows, pa.bool_())))
    users_table = pa.concat_tables(parts).cast(USERS_SCHEMA) if parts else USERS_SCHEMA.empty_table()
    release_of = dict(zip(users_table["user_id"].to_pylist(), users_table["release_id"].to_pylist()))

    prompt_of = {(p["user_id"], p["prompt_id"]): p for p in prompts}
    released_prompt_id: dict[tuple[str, str], str] = {}
    own_numbers: Counter = Counter()
    for p in sorted(prompts, key=lambda p: (p["user_id"], p["prompt_id"])):
        if p["user_id"] in release_of:  # own prompts renumbered: their ids are hashes of their text
            if is_own_prompt(p):
                own_numbers[p["user_id"]] += 1
            released_prompt_id[p["user_id"], p["prompt_id"]] = (f"own-{own_numbers[p['user_id']]}" if is_own_prompt(p)
                                                                 else p["prompt_id"])
    prompt_rows, withheld = [], {}
    runs_cache: dict[str, tuple[set, set]] = {}
    for r in sorted(rewrites, key=lambda r: (r["user_id"], r["prompt_id"], r["method"])):
        user = r["user_id"]
        if user not in release_of or (user, r["prompt_id"]) not in prompt_of:
            continue
        if user not in runs_cache:
            runs_cache[user] = (word_runs(evidence_text.get(user, "")),
                                set().union(*(word_runs(t) for t in own_prompts.get(user, []))))
        base = prompt_of[user, r["prompt_id"]]
        own = is_own_prompt(base)
        reason = OWN_PROMPT if own else withheld_reason(
            f"{r['final_prompt'] or ''}\n{r['rewritten_prompt'] or ''}", *runs_cache[user])
        if reason:
            withheld[reason] = withheld.get(reason, 0) + 1
        prompt_rows.append({
            "user_id": user, "release_id": release_of[user], "prompt_id": released_prompt_id[user, r["prompt_id"]],
            "method": r["method"], "category": "own" if own else base["category"],
            "source": OWN_SOURCE if own else PROMPT_SET_SOURCE, "base_prompt": None if own else base["base_prompt"],
            "final_prompt": None if reason else r["final_prompt"], "ok": r["ok"], "truncated": r["truncated"],
            "model": r["model"], "template_version": r["template_version"], "text_withheld": reason})
    verdict = {(j["user_id"], j["prompt_id"], j["method"]): j.get("winner") for j in judgements if j.get("method")}
    score_rows = [{"release_id": release_of[s["user_id"]], "prompt_id": released_prompt_id[s["user_id"], s["prompt_id"]],
                   "method": s["method"], "clip_ref": s["clip_ref"], "clip_text": s["clip_text"],
                   "judge_winner": verdict.get((s["user_id"], s["prompt_id"], s["method"]))}
                  for s in scores if (s["user_id"], s["prompt_id"]) in released_prompt_id]
    tables = {"users": users_table, "prompts": pa.Table.from_pylist(prompt_rows, schema=PROMPTS_SCHEMA),
              "scores": pa.Table.from_pylist(sorted(score_rows, key=lambda s: (s["release_id"], s["prompt_id"], s["method"])),
                                             schema=SCORES_SCHEMA)}
    return ZipbenchRelease(tables, k, len(offered), suppressed, dropped, withheld)


def zipbench_release_risk(tables: Mapping[str, pa.Table], k: int, author_quasi_identifiers: list[dict] | None = None,
                          evidence_text: Mapping[str, str] | None = None,
                          own_prompts: Mapping[str, list[str]] | None = None) -> ReleaseRisk:
    """The release's risk as the persona release's (its users' groups by USER_GROUP, the fewest dump
    authors a row matches, persona values quoting the evidence), plus every released prompt text that
    is a user's own prompt or quotes the evidence or the user's own prompts, counted as verbatim."""
    risk = release_risk(tables["users"], k, author_quasi_identifiers, evidence_text, USER_GROUP)
    verbatim = 0
    evidence_text, own_prompts = evidence_text or {}, own_prompts or {}
    for row in tables["prompts"].to_pylist():
        texts = [t for t in (row["base_prompt"], row["final_prompt"]) if t]
        if not texts:
            continue
        own = set().union(*(word_runs(t) for t in own_prompts.get(row["user_id"], [])))
        if row["source"] != PROMPT_SET_SOURCE or any(
                withheld_reason(t, word_runs(evidence_text.get(row["user_id"], "")), own) for t in texts):
            verbatim += 1
    return dataclasses.replace(risk, verbatim_values=risk.verbatim_values + verbatim)
