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
from collections.abc import Callable, Iterator, Sequence
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
from zipp_assets.personas.shards import shard_sql
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


def iter_evidence(lake_dir: Path, key: bytes, shards: Sequence[str], config: EvidenceConfig,
                  describe: Callable[[np.ndarray], list[str]] | None, profiles_partition: dict | None,
                  batch_users: int = 20_000, memory_limit: str = "2GB",
                  ) -> Iterator[tuple[str, Iterator[list[UserEvidence]]]]:
    """Evidence of every graph user in `shards`, from the lake (users, attention, comments, profiles):
    for each shard in turn, (shard, its users in batches of at most `batch_users`, in user index
    order). Each shard's batches must be read before the next shard is asked for.

    The joins run in DuckDB and come back as Arrow tables of one shard (about 1.4M users and 14M
    attention rows at 22M users); Python objects exist only for the batch being built, so memory
    follows the shard and the batch, not the graph. Comment authors are pseudonymised once for all
    the shards of a run."""
    graph = lake.open_tables(lake_dir, GRAPH_TABLES)
    # One encoding run: the pair shares its own build id (a run killed between the two commits is refused).
    attention = lake.open_tables(lake_dir, ["user_embeddings", "user_top_subreddits"])
    # Attention rows are numbered by the graph they were encoded from (the build each commit records):
    # refuse a graph rebuilt since, and join on the user's key, so no row can attach one user's
    # communities to another.
    lake.check_built_from(attention["user_top_subreddits"], None, graph["users"])
    profiles = lake.open_table(lake_dir, PROFILES) if describe is not None and profiles_partition is not None \
        and lake.table_exists(lake_dir, PROFILES) else None
    if profiles is not None and not profiles.has_partition(profiles_partition):
        profiles = None
    if profiles is not None:
        lake.check_built_from(profiles, profiles_partition, graph["users"])  # indexed by this graph's users
    # Bounded like the graph tables' (DuckDB's own default is 80% of the machine), spilling past it.
    with lake.spilling_duckdb(memory_limit) as con:
        con.register("users", graph["users"].to_dataset())
        con.register("top", attention["user_top_subreddits"].to_dataset())
        if profiles is not None:
            con.register("profiles", profiles.to_dataset([profiles_partition]))
        comments_join = _prepare_comments(con, lake_dir, key)
        for shard in shards:
            users = con.sql(f"SELECT * FROM users WHERE {shard_sql('user_id')} = $shard ORDER BY user_index",
                            params={"shard": shard}).to_arrow_table()
            if users.num_rows == 0:
                yield shard, iter(())
                continue
            con.register("shard_users", users.select(["user_index", "user_id"]))
            con.sql("""CREATE OR REPLACE TEMP TABLE wanted AS
                       SELECT u.user_index, u.user_id, t.subreddit, t.weight,
                              row_number() OVER (PARTITION BY u.user_index ORDER BY t.rank) - 1 AS subreddit_rank
                       FROM top t JOIN shard_users u USING (user_id) WHERE t.rank <= $k""",
                    params={"k": config.top_subreddits})
            top = con.sql("SELECT user_index, subreddit, weight FROM wanted ORDER BY user_index, subreddit_rank").to_arrow_table()
            visual = con.sql("SELECT p.user_index, p.profile FROM profiles p JOIN shard_users u USING (user_index) "
                             "WHERE p.n_train_images > 0 ORDER BY p.user_index").to_arrow_table() if profiles is not None else None
            comments = _candidate_comments(con, comments_join, config) if comments_join is not None else None
            yield shard, _batches(users, top, visual, comments, config, describe, batch_users)
            con.unregister("shard_users")


def _batches(users: pa.Table, top: pa.Table, visual: pa.Table | None, comments: pa.Table | None,
             config: EvidenceConfig, describe: Callable[[np.ndarray], list[str]] | None,
             batch_users: int) -> Iterator[list[UserEvidence]]:
    index = users["user_index"].to_numpy()
    for first in range(0, users.num_rows, batch_users):
        low, high = int(index[first]), int(index[min(first + batch_users, users.num_rows) - 1])
        yield _evidence_batch(users.slice(first, batch_users), _rows_between(top, low, high),
                              _rows_between(visual, low, high), _rows_between(comments, low, high), config, describe)


def _rows_between(table: pa.Table | None, low: int, high: int) -> pa.Table | None:
    """Rows of `table` (sorted by user_index) whose user_index is within [low, high]."""
    if table is None:
        return None
    index = table["user_index"].to_numpy()
    start, stop = np.searchsorted(index, low, side="left"), np.searchsorted(index, high, side="right")
    return table.slice(int(start), int(stop - start))


def _evidence_batch(users: pa.Table, top: pa.Table, visual: pa.Table | None, comments: pa.Table | None,
                    config: EvidenceConfig, describe: Callable[[np.ndarray], list[str]] | None) -> list[UserEvidence]:
    by_user: dict[int, list[tuple[str, float]]] = {}
    for user, subreddit, weight in zip(*(top[c].to_pylist() for c in ("user_index", "subreddit", "weight"))):
        by_user.setdefault(user, []).append((subreddit, float(weight)))
    described: dict[int, list[str]] = {}
    if visual is not None and describe is not None:
        profiles = visual["profile"].to_numpy(zero_copy_only=False)
        for user, profile in zip(visual["user_index"].to_pylist(), profiles):
            described[user] = describe(np.asarray(profile, dtype=np.float32))
    dropped: dict[int, int] = {}
    snippets = _snippets(comments, config, dropped) if comments is not None else {}
    out = []
    for u in users.to_pylist():
        facts = (f"{describe_count_bin(u['comments_bin'])} comments and {describe_count_bin(u['submissions_bin'])} posts "
                 f"over {u['active_months']} "
                 f"active month(s) ({_month(u['first_utc'])} to {_month(u['last_utc'])}), "
                 f"in {u['subreddit_count']} communities")
        out.append(UserEvidence(u["user_index"], u["user_id"], facts, by_user.get(u["user_index"], []),
                                described.get(u["user_index"], []), snippets.get(u["user_index"], []),
                                dropped.get(u["user_index"], 0)))
    return out


def load_evidence(lake_dir: Path, key: bytes, shards: Sequence[str], config: EvidenceConfig,
                  describe: Callable[[np.ndarray], list[str]] | None, profiles_partition: dict | None) -> list[UserEvidence]:
    """Every user's evidence of `shards` in one list (small graphs, tests); `iter_evidence` in batches."""
    return [u for _, batches in iter_evidence(lake_dir, key, shards, config, describe, profiles_partition)
            for batch in batches for u in batch]


def _prepare_comments(con: duckdb.DuckDBPyConnection, lake_dir: Path, key: bytes) -> str | None:
    """Register the comments and pseudonymise their authors once (temp table `pseudonyms`); the join
    clause from a comment to its author's canonical key, or None where no comments were ingested."""
    if not lake.table_exists(lake_dir, "reddit_comments"):
        return None
    con.register("comments", open_ingested(lake_dir, "comments").to_dataset())
    create_user_aliases(con, lake_dir)
    canonical, join = canonical_key_sql("c.user_key")
    con.sql(f"CREATE TEMP TABLE comment_keys AS SELECT DISTINCT {canonical} AS user_key "
            f"FROM comments c {join} WHERE c.user_key IS NOT NULL").fetchall()
    create_pseudonym_table(con, "SELECT user_key FROM comment_keys", key, "pseudonyms")
    return join


def _candidate_comments(con: duckdb.DuckDBPyConnection, join: str, config: EvidenceConfig) -> pa.Table:
    """The `wanted` users' comments in their most-attended subreddits, a few candidates per subreddit,
    by user, attention rank of the subreddit, then score."""
    canonical, _ = canonical_key_sql("c.user_key")
    return con.sql(
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
    ).to_arrow_table()


def _snippets(comments: pa.Table, config: EvidenceConfig, dropped: dict[int, int] | None = None
              ) -> dict[int, list[tuple[str, str]]]:
    """Per user: cleaned, deduplicated comments from its most-attended subreddits, by attention rank
    of the subreddit, then score. Instruction-like comments are left out (with `drop_instruction_like`)
    and counted per user in `dropped`."""
    out: dict[int, list[tuple[str, str]]] = {}
    seen: dict[int, set[str]] = {}
    per_subreddit: dict[tuple[int, str], int] = {}
    for user, subreddit, body in zip(*(comments[c].to_pylist() for c in ("user_index", "subreddit", "body"))):
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
                   visual_source: str = "", progress: Callable[[str], None] | None = None,
                   batch_users: int = 20_000) -> list[EvidenceReport]:
    """Write the `persona_evidence` partition of each shard (each replaced whole on a re-run), a batch
    of users at a time: packed, written and let go."""
    reports = []
    for shard, batches in iter_evidence(lake_dir, key, shards, config, describe, profiles_partition, batch_users):
        report = EvidenceReport(shard, 0, [], 0, 0, 0, counter.name, counter.approximate)
        with lake.atomic_partition(lake_dir, EVIDENCE, {"shard": shard}) as folder:
            with lake.RotatingParquetWriter(folder, EVIDENCE_SCHEMA) as writer:
                for users in batches:
                    writer.write(_packed_table(shard, users, config, counter, visual_source, report))
            if writer.rows_written == 0:  # a shard without users still gets its (empty) partition
                lake.write_table(folder, EVIDENCE_SCHEMA.empty_table(), EVIDENCE_SCHEMA)
        reports.append(report)
        if progress:
            progress(f"shard {shard}: {report.users:,} users")
    return reports


def _packed_table(shard: str, users: list[UserEvidence], config: EvidenceConfig, counter: TokenCounter,
                  visual_source: str, report: EvidenceReport) -> pa.Table:
    packed = [pack(u, counter, config.token_budget, visual_source) for u in users]
    report.users += len(users)
    report.tokens.extend(p.tokens for p in packed)
    report.snippets_used += sum(p.snippets_used for p in packed)
    report.snippets_available += sum(p.snippets_available for p in packed)
    report.users_with_visual += sum(1 for u in users if u.visual)
    report.instruction_like_dropped += sum(u.instruction_like for u in users)
    report.users_with_instruction_like += sum(1 for u in users if u.instruction_like)
    return pa.table({
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
