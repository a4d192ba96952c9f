"""Per-user evidence for persona verbalization, packed under a token budget.

A user's evidence: the subreddits the encoder's last layer attends to most (with weights), comment
snippets from those communities (highest scoring first, cleaned, deduplicated, usernames, links,
e-mail addresses and phone numbers removed), words for the visual profile (descriptors.py) and
activity facts. It is one JSON document (`render`), packed so that it never exceeds the budget in
the verbalizing model's tokens, and hashed, so a later run recognises unchanged evidence and does
not verbalize it again.

Reddit text is untrusted: it only ever appears as a JSON string value inside the evidence document,
so no comment can close the document, add a community or pose as another field; the verbalization
prompt sends the document as its own message and says that it is data, not instructions.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from zipp_assets import lake
from zipp_assets.graph.tables import GRAPH_TABLES, describe_count_bin
from zipp_assets.graph.user_keys import canonical_key_sql, create_pseudonym_table, create_user_aliases
from zipp_assets.graph.visual import PROFILES
from zipp_assets.llm.tokens import TokenCounter
from zipp_assets.personas.injection import instruction_like
from zipp_assets.personas.shards import shard_of
from zipp_assets.reddit.ingest import open_ingested

EVIDENCE_VERSION = "evidence-v3"  # v2: activity counts as ranges; v3: a JSON document, attention joined by user key
PAPER_TOKEN_CAP = 4096  # the paper's cap on evidence; gains saturate near 2K
EVIDENCE = "persona_evidence"


@dataclass(frozen=True)
class EvidenceConfig:
    token_budget: int = 2048
    top_subreddits: int = 10
    snippets_per_subreddit: int = 3
    snippet_chars: int = 300
    min_snippet_chars: int = 20
    # Comments that read as instructions to a model (injection.py) are left out of the evidence and counted.
    drop_instruction_like: bool = True

    def __post_init__(self) -> None:
        if not 64 <= self.token_budget <= PAPER_TOKEN_CAP:
            raise ValueError(f"token_budget must be within 64..{PAPER_TOKEN_CAP} (the paper's cap), got {self.token_budget}")


_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
# A domain with a path (reddit.com/u/Name, old.reddit.com/user/x, imgur.com/a/...), or a bare common domain.
_DOMAIN_PATH = re.compile(r"\b(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}/\S*")
_BARE_DOMAIN = re.compile(r"\b(?:[A-Za-z0-9-]+\.)+(?:com|org|net|io|co|uk|de|fr|me|tv|gg|ly|be|it|us|ca|au)\b",
                          re.IGNORECASE)
_MARKDOWN_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_USER_MENTION = re.compile(r"(?<![\w/])/?(?:u|user)/[A-Za-z0-9_-]+", re.IGNORECASE)
_EMAIL = re.compile(r"[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_HANDLE = re.compile(r"(?<![\w@])@[A-Za-z0-9_.]{2,30}")  # @name on Twitter, Instagram and the like
# Nine to fifteen digits with the usual separators: phone numbers (a date or a year has eight or fewer).
_PHONE = re.compile(r"(?<![\w+])\+?\(?\d[\d\s().-]{6,20}\d(?!\w)")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")
_BLOCK_MARKERS = re.compile(r"`{3,}|<{3,}|>{3,}|\"{3,}")
_SPACE = re.compile(r"\s+")


def _phone_or_keep(match: re.Match) -> str:
    digits = sum(c.isdigit() for c in match.group(0))
    return "a phone number" if 9 <= digits <= 15 else match.group(0)


def _until_stable(pattern: re.Pattern, text: str, replacement: str = "") -> str:
    """Substitute until nothing matches: removing one marker must not join its neighbours into another
    (EVIDENCE>>```> would become EVIDENCE>>> after one pass)."""
    while True:
        changed = pattern.sub(replacement, text)
        if changed == text:
            return text
        text = changed


def clean_snippet(text: str | None, max_chars: int = 300, min_chars: int = 20) -> str | None:
    """A comment made fit to quote: links, user mentions and profile links, e-mail addresses, @handles,
    phone numbers, control characters and block markers out, whitespace collapsed, cut at a word
    boundary. None when nothing worth quoting is left."""
    if not text or text.strip() in ("[deleted]", "[removed]"):
        return None
    text = _CONTROL.sub("", text)  # first: a control character must not hide a link or a mention from the rest
    text = _MARKDOWN_LINK.sub(r"\1", text)
    text = _EMAIL.sub("an e-mail address", text)
    text = _URL.sub("", text)
    text = _DOMAIN_PATH.sub("", text)
    text = _USER_MENTION.sub("someone", text)
    text = _BARE_DOMAIN.sub("", text)
    text = _HANDLE.sub("someone", text)
    text = _PHONE.sub(_phone_or_keep, text)
    text = _until_stable(_BLOCK_MARKERS, text)
    text = _SPACE.sub(" ", text).strip()
    if len(text) > max_chars:
        cut = text[:max_chars].rsplit(" ", 1)[0]
        text = (cut or text[:max_chars]) + " ..."
    return text if len(text) >= min_chars else None


@dataclass
class UserEvidence:
    user_index: int
    user_id: str
    facts: str
    top_subreddits: list[tuple[str, float]]
    visual: list[str]
    snippets: list[tuple[str, str]] = field(default_factory=list)  # (subreddit, cleaned text), best first
    instruction_like: int = 0  # comments left out because they read as instructions to a model


def evidence_document(evidence: UserEvidence, snippets: int | None = None, visual_source: str = "") -> dict:
    """The evidence as data: every value from Reddit is a string inside it, never structure."""
    kept = evidence.snippets if snippets is None else evidence.snippets[:snippets]
    return {
        "activity": evidence.facts,
        # One decimal: enough to tell a main community from a side one, and it keeps a user's evidence
        # (and hash) still when re-embedding after a new month moves weights by a hair.
        "communities_by_attention": [{"subreddit": s, "weight": round(float(w), 1)}
                                     for s, w in evidence.top_subreddits],
        "visual_profile": {"source": visual_source, "words": list(evidence.visual)},
        "comments": [{"subreddit": subreddit, "text": text} for subreddit, text in kept],
    }


def render(evidence: UserEvidence, snippets: int | None = None, visual_source: str = "") -> str:
    """The evidence document as the text that is stored, hashed, counted and sent."""
    return json.dumps(evidence_document(evidence, snippets, visual_source), ensure_ascii=False)


@dataclass(frozen=True)
class ParsedEvidence:
    activity: str
    communities: list[tuple[str, float]]
    visual: list[str]
    comments: list[tuple[str, str]]  # (subreddit, text)


def parse_evidence(text: str) -> ParsedEvidence:
    """The fields of a rendered evidence document, type-checked: a weight that is not a finite number,
    or an entry of the wrong shape, is dropped rather than trusted. ValueError if it is not a document."""
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, TypeError) as error:
        raise ValueError(f"evidence is not a JSON document: {error}") from None
    if not isinstance(document, dict):
        raise ValueError("evidence is not a JSON object")

    def entries(name: str) -> list[dict]:
        value = document.get(name)
        return [e for e in value if isinstance(e, dict)] if isinstance(value, list) else []

    communities = [(e["subreddit"], float(e["weight"])) for e in entries("communities_by_attention")
                   if isinstance(e.get("subreddit"), str) and isinstance(e.get("weight"), (int, float))
                   and not isinstance(e.get("weight"), bool) and math.isfinite(e["weight"])]
    comments = [(e["subreddit"], e["text"]) for e in entries("comments")
                if isinstance(e.get("subreddit"), str) and isinstance(e.get("text"), str)]
    visual = document.get("visual_profile")
    words = visual.get("words") if isinstance(visual, dict) else None
    activity = document.get("activity")
    return ParsedEvidence(activity if isinstance(activity, str) else "", communities,
                          [w for w in words if isinstance(w, str)] if isinstance(words, list) else [], comments)


@dataclass
class PackedEvidence:
    text: str
    tokens: int
    snippets_used: int
    snippets_available: int
    evidence_hash: str


def pack(evidence: UserEvidence, counter: TokenCounter, budget: int, visual_source: str = "") -> PackedEvidence:
    """The evidence with as many snippets (best first) as fit in `budget` tokens. The header (facts,
    communities, visual words) always goes in; if even it exceeds the budget, communities are cut."""
    header = render(UserEvidence(evidence.user_index, evidence.user_id, evidence.facts, evidence.top_subreddits,
                                 evidence.visual), visual_source=visual_source)
    lines = [json.dumps({"subreddit": s, "text": t}, ensure_ascii=False) for s, t in evidence.snippets]
    header_tokens, *line_tokens = counter.count([header, *lines])
    used, total = 0, header_tokens
    for tokens in line_tokens:
        if total + tokens + 1 > budget:  # +1: the separator between entries
            break
        total += tokens + 1
        used += 1
    trimmed = evidence
    while True:  # token counts of pieces need not add up exactly: check the whole, shrink until it fits
        text = render(trimmed, used, visual_source)
        tokens = counter.count([text])[0]
        if tokens <= budget:
            break
        if used > 0:
            used -= 1
        elif trimmed.top_subreddits:
            trimmed = UserEvidence(trimmed.user_index, trimmed.user_id, trimmed.facts, trimmed.top_subreddits[:-1],
                                   trimmed.visual)
        else:
            raise ValueError(f"the activity line alone exceeds the budget of {budget} tokens")
    digest = hashlib.sha256(f"{EVIDENCE_VERSION}\n{text}".encode()).hexdigest()[:20]
    return PackedEvidence(text, tokens, used, len(evidence.snippets), digest)


def _month(value) -> str:
    return value.strftime("%Y-%m") if value is not None else "?"


def load_evidence(lake_dir: Path, key: bytes, shards: Sequence[str], config: EvidenceConfig,
                  describe: Callable[[np.ndarray], list[str]] | None, profiles_partition: dict | None) -> list[UserEvidence]:
    """Evidence of every graph user in `shards`, from the lake (users, attention, comments, profiles).
    One pass for all the shards of a range run: comment keys are pseudonymised once."""
    graph = lake.open_tables(lake_dir, GRAPH_TABLES)
    # One encoding run: the pair shares its own build id (a run killed between the two commits is refused).
    attention = lake.open_tables(lake_dir, ["user_embeddings", "user_top_subreddits"])
    # Attention rows are numbered by the graph they were encoded from (the build each commit records):
    # refuse a graph rebuilt since, and join on the user's key, so no row can attach one user's
    # communities to another.
    lake.check_built_from(attention["user_top_subreddits"], None, graph["users"])
    users = graph["users"].read().to_pylist()
    wanted_shards = set(shards)
    mine = [u for u in users if shard_of(u["user_id"]) in wanted_shards]
    if not mine:
        return []
    index = {u["user_index"] for u in mine}
    keys = {u["user_id"] for u in mine}
    columns = ["user_id", "rank", "subreddit", "weight"]
    top = [r for r in attention["user_top_subreddits"].read(columns=columns).to_pylist()
           if r["user_id"] in keys and r["rank"] <= config.top_subreddits]
    by_key: dict[str, list[tuple[str, float]]] = {}
    for r in sorted(top, key=lambda r: (r["user_id"], r["rank"])):
        by_key.setdefault(r["user_id"], []).append((r["subreddit"], float(r["weight"])))
    by_user = {u["user_index"]: by_key.get(u["user_id"], []) for u in mine}
    visual: dict[int, list[str]] = {}
    profiles = lake.open_table(lake_dir, PROFILES) if describe is not None and profiles_partition is not None \
        and lake.table_exists(lake_dir, PROFILES) else None
    if profiles is not None and profiles.has_partition(profiles_partition):
        lake.check_built_from(profiles, profiles_partition, graph["users"])  # indexed by this graph's users
        for p in profiles.read([profiles_partition]).to_pylist():
            if p["user_index"] in index and p["n_train_images"] + p["n_heldout_images"] > 0 and p["n_train_images"] > 0:
                visual[p["user_index"]] = describe(np.asarray(p["profile"], dtype=np.float32))
    dropped: dict[int, int] = {}
    snippets = _top_comments(lake_dir, key, mine, by_user, config, dropped)
    out = []
    for u in mine:
        facts = (f"{describe_count_bin(u['comments_bin'])} comments and {describe_count_bin(u['submissions_bin'])} posts "
                 f"over {u['active_months']} "
                 f"active month(s) ({_month(u['first_utc'])} to {_month(u['last_utc'])}), "
                 f"in {u['subreddit_count']} communities")
        out.append(UserEvidence(u["user_index"], u["user_id"], facts, by_user[u["user_index"]],
                                visual.get(u["user_index"], []), snippets.get(u["user_index"], []),
                                dropped.get(u["user_index"], 0)))
    return out


def _top_comments(lake_dir: Path, key: bytes, users: list[dict], top: dict[int, list[tuple[str, float]]],
                  config: EvidenceConfig, dropped: dict[int, int] | None = None) -> dict[int, list[tuple[str, str]]]:
    """Per user: cleaned, deduplicated comments from its most-attended subreddits, by attention rank
    of the subreddit, then score. Instruction-like comments are left out (with `drop_instruction_like`)
    and counted per user in `dropped`."""
    wanted = pa.table({
        "user_id": [u["user_id"] for u in users for _ in top.get(u["user_index"], [])],
        "user_index": [u["user_index"] for u in users for _ in top.get(u["user_index"], [])],
        "subreddit": [s for u in users for s, _ in top.get(u["user_index"], [])],
        "subreddit_rank": [r for u in users for r, _ in enumerate(top.get(u["user_index"], []))],
    }, schema=pa.schema([("user_id", pa.string()), ("user_index", pa.int64()), ("subreddit", pa.string()),
                         ("subreddit_rank", pa.int64())]))
    if not lake.table_exists(lake_dir, "reddit_comments") or wanted.num_rows == 0:
        return {}
    with duckdb.connect() as con:
        con.register("comments", open_ingested(lake_dir, "comments").to_dataset())
        create_user_aliases(con, lake_dir)
        canonical, join = canonical_key_sql("c.user_key")
        con.sql(f"CREATE TEMP TABLE comment_keys AS SELECT DISTINCT {canonical} AS user_key "
                f"FROM comments c {join} WHERE c.user_key IS NOT NULL").fetchall()
        create_pseudonym_table(con, "SELECT user_key FROM comment_keys", key, "pseudonyms")
        con.register("wanted", wanted)
        rows = con.sql(
            f"""
            SELECT w.user_index, w.subreddit, w.subreddit_rank, c.body, coalesce(c.score, 0) AS score, c.id
            FROM comments c {join}
            JOIN pseudonyms p ON p.user_key = {canonical}
            JOIN wanted w ON w.user_id = p.user_id AND w.subreddit = c.subreddit
            WHERE c.body IS NOT NULL
            QUALIFY row_number() OVER (PARTITION BY w.user_index, w.subreddit ORDER BY coalesce(c.score, 0) DESC, c.id)
                    <= $candidates
            ORDER BY w.user_index, w.subreddit_rank, score DESC, c.id
            """,
            params={"candidates": config.snippets_per_subreddit * 4},
        ).fetchall()
    out: dict[int, list[tuple[str, str]]] = {}
    seen: dict[int, set[str]] = {}
    per_subreddit: dict[tuple[int, str], int] = {}
    for user, subreddit, _rank, body, _score, _id in rows:
        text = clean_snippet(body, config.snippet_chars, config.min_snippet_chars)
        if text is None or per_subreddit.get((user, subreddit), 0) >= config.snippets_per_subreddit:
            continue
        if config.drop_instruction_like and instruction_like(text):
            if dropped is not None:
                dropped[user] = dropped.get(user, 0) + 1
            continue
        fingerprint = re.sub(r"\W+", " ", text.lower()).strip()
        if fingerprint in seen.setdefault(user, set()):
            continue
        seen[user].add(fingerprint)
        per_subreddit[(user, subreddit)] = per_subreddit.get((user, subreddit), 0) + 1
        out.setdefault(user, []).append((subreddit, text))
    return out


EVIDENCE_SCHEMA = pa.schema([
    ("user_index", pa.int64()), ("user_id", pa.string()), ("shard", pa.string()),
    ("top_subreddits", pa.list_(pa.string())), ("top_weights", pa.list_(pa.float32())),
    ("visual_descriptors", pa.list_(pa.string())), ("snippets_used", pa.int32()), ("snippets_available", pa.int32()),
    ("evidence_text", pa.string()), ("tokens", pa.int32()), ("token_counter", pa.string()),
    ("evidence_hash", pa.string()), ("evidence_version", pa.string()),
])


@dataclass
class EvidenceReport:
    shard: str
    users: int
    tokens: list[int]
    snippets_used: int
    snippets_available: int
    users_with_visual: int
    token_counter: str
    approximate_tokens: bool
    instruction_like_dropped: int = 0  # comments left out as instructions to a model
    users_with_instruction_like: int = 0


def build_evidence(lake_dir: Path, key: bytes, shards: Sequence[str], config: EvidenceConfig, counter: TokenCounter,
                   describe: Callable[[np.ndarray], list[str]] | None = None, profiles_partition: dict | None = None,
                   visual_source: str = "", progress: Callable[[str], None] | None = None) -> list[EvidenceReport]:
    """Write the `persona_evidence` partition of each shard (each replaced whole on a re-run)."""
    everyone = load_evidence(lake_dir, key, shards, config, describe, profiles_partition)
    reports = []
    for shard in shards:
        users = [u for u in everyone if shard_of(u.user_id) == shard]
        reports.append(_write_shard(lake_dir, shard, users, config, counter, visual_source))
        if progress:
            progress(f"shard {shard}: {len(users):,} users")
    return reports


def _write_shard(lake_dir: Path, shard: str, users: list[UserEvidence], config: EvidenceConfig, counter: TokenCounter,
                 visual_source: str) -> EvidenceReport:
    packed = [pack(u, counter, config.token_budget, visual_source) for u in users]
    table = pa.table({
        "user_index": [u.user_index for u in users], "user_id": [u.user_id for u in users],
        "shard": [shard] * len(users),
        "top_subreddits": [[s for s, _ in u.top_subreddits] for u in users],
        "top_weights": [[w for _, w in u.top_subreddits] for u in users],
        "visual_descriptors": [u.visual for u in users],
        "snippets_used": [p.snippets_used for p in packed], "snippets_available": [p.snippets_available for p in packed],
        "evidence_text": [p.text for p in packed], "tokens": [p.tokens for p in packed],
        "token_counter": [counter.name] * len(users), "evidence_hash": [p.evidence_hash for p in packed],
        "evidence_version": [EVIDENCE_VERSION] * len(users),
    }, schema=EVIDENCE_SCHEMA)
    with lake.atomic_partition(lake_dir, EVIDENCE, {"shard": shard}) as folder:
        lake.write_table(folder, table, EVIDENCE_SCHEMA)
    return EvidenceReport(shard, len(users), [p.tokens for p in packed], sum(p.snippets_used for p in packed),
                          sum(p.snippets_available for p in packed), sum(1 for u in users if u.visual),
                          counter.name, counter.approximate, sum(u.instruction_like for u in users),
                          sum(1 for u in users if u.instruction_like))
