"""Persona fidelity on a synthetic world: how often an inferred attribute matches the planted truth.

It stands in for the paper's human rating of personas (4.1 of 5), which needs people. Each attribute
is scored per user (1 when the persona states the planted value, 0 otherwise, "unknown" included)
against a control that verbalizes each user from another user's evidence with the same verbalizer:
what a persona would score by the population's base rates alone. A persona is informative on an
attribute only where its lead over the control has an interval above zero.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

from zipp_assets.stats import bootstrap_mean, paired_difference

ATTRIBUTES = ("age_band", "gender", "locale", "profession", "hobby", "visual_interest", "palette", "mood")


def _age_matches(truth_band: str, persona_band: str) -> bool:
    """A persona band lies inside the planted band ('25-34' in '25-34'; '55-64' in '45+')."""
    def bounds(band: str) -> tuple[int, int] | None:
        match = re.fullmatch(r"(\d+)(?:-(\d+)|\+)", band or "")
        if not match:
            return None
        return int(match.group(1)), int(match.group(2)) if match.group(2) else 200

    t, p = bounds(truth_band), bounds(persona_band)
    return t is not None and p is not None and t[0] <= p[0] and p[1] <= t[1]


def _words(values: list[str]) -> str:
    return " | ".join(v.lower() for v in values)


def attribute_matches(persona: dict, truth: dict) -> dict[str, float]:
    """1.0 or 0.0 per attribute: does the persona state the planted value?"""
    aesthetics = persona.get("aesthetics", {})
    every_aesthetic = _words([w for values in aesthetics.values() for w in values])
    return {
        "age_band": float(_age_matches(truth["age_band"], persona["age_band"])),
        "gender": float(persona["gender"] == truth["gender"]),
        "locale": float(persona["locale"].strip().lower() == str(truth["locale"]).lower()),
        "profession": float(persona["profession"].strip().lower() == str(truth["profession"]).lower()),
        "hobby": float(str(truth["hobby"]).lower() in [h.lower() for h in persona["hobbies"]]),
        "visual_interest": float(truth["visual_interest"] in persona["visual_interests"]),
        "palette": float(bool(truth["palette_word"]) and str(truth["palette_word"]).lower() in every_aesthetic),
        "mood": float(bool(truth["mood_word"]) and str(truth["mood_word"]).lower() in every_aesthetic),
    }


def derangement(n: int, seed: int) -> np.ndarray:
    """A permutation with no fixed point: everyone gets someone else's evidence."""
    if n < 2:
        raise ValueError("the control needs at least two users")
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    return np.roll(order, 1)[np.argsort(order)]


def fidelity_table(personas: dict[str, dict], controls: dict[str, dict], truth: dict[str, dict],
                   seed: int = 0) -> list[dict]:
    """Per attribute: persona and control match rates with intervals, and the paired lead."""
    users = sorted(u for u in personas if u in truth and u in controls)
    matches = {u: attribute_matches(personas[u], truth[u]) for u in users}
    control = {u: attribute_matches(controls[u], truth[u]) for u in users}
    rows = []
    for attribute in ATTRIBUTES:
        mine = {u: matches[u][attribute] for u in users}
        theirs = {u: control[u][attribute] for u in users}
        stated = np.mean([_stated(personas[u], attribute) for u in users]) if users else float("nan")
        row = {"attribute": attribute, "users": len(users), "stated_rate": float(stated)}
        row.update(bootstrap_mean(np.array(list(mine.values())), seed=seed).as_dict("persona"))
        row.update(bootstrap_mean(np.array(list(theirs.values())), seed=seed).as_dict("control"))
        lead = paired_difference(mine, theirs, seed=seed)
        row.update(lead.as_dict("lead"))
        row["verdict"] = {"ahead": "informative", "tied": "no better than the control",
                          "behind": "worse than the control"}[lead.verdict()]
        rows.append(row)
    return rows


def _stated(persona: dict, attribute: str) -> bool:
    """Whether the persona says anything for the attribute (not 'unknown' or empty)."""
    if attribute in ("age_band", "gender", "locale", "profession"):
        return persona[attribute] != "unknown"
    if attribute == "hobby":
        return bool(persona["hobbies"])
    if attribute == "visual_interest":
        return bool(persona["visual_interests"])
    return any(persona.get("aesthetics", {}).values())


def control_personas(evidence: dict[str, str], verbalize: Callable[[dict[str, str]], dict[str, dict]],
                     seed: int = 0) -> dict[str, dict]:
    """Each user's persona made from another user's evidence (same verbalizer)."""
    users = sorted(evidence)
    swap = derangement(len(users), seed)
    return verbalize({users[i]: evidence[users[swap[i]]] for i in range(len(users))})


def fidelity_display_rows(table: list[dict]) -> list[dict]:
    """The fidelity table as people read it: persona, control and lead with their intervals, and the verdict."""
    return [{"attribute": r["attribute"], "persona": f"{r['persona']:.3f} [{r['persona_low']:.3f}, {r['persona_high']:.3f}]",
             "control": f"{r['control']:.3f} [{r['control_low']:.3f}, {r['control_high']:.3f}]",
             "lead": f"{r['lead']:+.3f} [{r['lead_low']:+.3f}, {r['lead_high']:+.3f}]", "stated": f"{r['stated_rate']:.2f}",
             "verdict": r["verdict"]} for r in table]
