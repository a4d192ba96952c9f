"""The benchmark's users and base prompts.

Users are sampled from those with a valid persona and at least `min_references` held-out images:
images the user posted that the encoder never used as ImageAlign targets (the profile builder's
held-out set), which serve as the user's reference images. The sample is stratified over the
persona's first visual interest and gender, with proportional allocation (largest remainders) and
at least one user per non-empty stratum when the sample is large enough, so rare interests are not
sampled away; within a stratum, users are taken in a keyed-hash order (stable, seed-dependent).
Demographics are the persona's (what production has); "unknown" is its own level.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict

from zipp_assets.personas.schema import UNKNOWN
from zipp_assets.personas.shards import shard_of
from zipp_assets.zipbench.prompts import prompts_for_user


def stratum_of(persona: dict) -> str:
    interests = persona.get("visual_interests") or []
    return f"{interests[0] if interests else UNKNOWN} | {persona.get('gender', UNKNOWN)}"


def allocate(sizes: dict[str, int], total: int) -> dict[str, int]:
    """Proportional allocation of `total` over strata of `sizes` by largest remainders, at least one
    per non-empty stratum when `total` allows, never more than a stratum holds."""
    population = sum(sizes.values())
    total = min(total, population)
    if total <= 0:
        return dict.fromkeys(sizes, 0)
    floor_one = total >= sum(1 for n in sizes.values() if n)
    quota = {s: total * n / population for s, n in sizes.items()}
    take = {s: min(n, max(int(math.floor(quota[s])), 1 if floor_one and n else 0)) for s, n in sizes.items()}
    while sum(take.values()) > total:  # the floors of one pushed it over: take back from the largest
        largest = max((s for s in take if take[s] > 1), key=lambda s: take[s] - quota[s])
        take[largest] -= 1
    for s in sorted(sizes, key=lambda s: (-(quota[s] - math.floor(quota[s])), s)):
        if sum(take.values()) >= total:
            break
        if take[s] < sizes[s]:
            take[s] += 1
    while sum(take.values()) < total:  # remainders exhausted: fill where room is left
        s = max((s for s in sizes if take[s] < sizes[s]), key=lambda s: sizes[s] - take[s])
        take[s] += 1
    return take


def _order(user_id: str, seed: int) -> str:
    return hashlib.sha256(f"zipbench/{seed}/{user_id}".encode()).hexdigest()


def sample_users(profiles: list[dict], personas: dict[str, dict], history: dict[str, list[str]], n_users: int,
                 min_references: int = 1, seed: int = 0) -> list[dict]:
    """Benchmark users: one row each with its stratum, demographics, reference images and history size.

    `profiles`: rows of `user_visual_profiles` (user_index, user_id, heldout_url_keys, ...);
    `personas`: user_id -> effective persona; `history`: user_id -> the user's own prompts.
    """
    if n_users < 1:
        raise ValueError("n_users must be at least 1")
    eligible = [p for p in profiles if p["user_id"] in personas and len(p["heldout_url_keys"] or []) >= min_references]
    by_stratum: dict[str, list[dict]] = defaultdict(list)
    for p in eligible:
        by_stratum[stratum_of(personas[p["user_id"]])].append(p)
    take = allocate({s: len(v) for s, v in by_stratum.items()}, n_users)
    rows = []
    for stratum, members in sorted(by_stratum.items()):
        members.sort(key=lambda p: _order(p["user_id"], seed))
        for p in members[: take[stratum]]:
            persona = personas[p["user_id"]]
            interests = persona.get("visual_interests") or []
            rows.append({
                "user_index": int(p["user_index"]), "user_id": p["user_id"], "shard": shard_of(p["user_id"]),
                "stratum": stratum, "visual_interest": interests[0] if interests else UNKNOWN,
                "age_band": persona.get("age_band", UNKNOWN), "gender": persona.get("gender", UNKNOWN),
                "locale": persona.get("locale", UNKNOWN), "profession": persona.get("profession", UNKNOWN),
                "reference_url_keys": list(p["heldout_url_keys"]), "n_references": len(p["heldout_url_keys"]),
                "n_history_prompts": len(history.get(p["user_id"], [])),
            })
    return sorted(rows, key=lambda r: r["user_id"])


def build_prompts(users: list[dict], history: dict[str, list[str]], per_user: int,
                  heldout: dict[str, list[dict]] | None = None) -> list[dict]:
    """Base prompts of every benchmark user (held-out ones first), with the seed all methods share."""
    rows = []
    heldout = heldout or {}
    for user in users:
        for row in prompts_for_user(user["user_id"], per_user, history.get(user["user_id"]),
                                    heldout=heldout.get(user["user_id"])):
            rows.append({"user_id": user["user_id"], "shard": user["shard"], **row})
    return rows
