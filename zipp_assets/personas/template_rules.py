"""The template backend's rule: a persona built from the evidence alone, with no language model.

It is the demo profile's verbalizer and is named "template" wherever its output appears. It reads
only what the evidence states outright: first-person statements in comments ("I work as ...",
"I'm 34", "here in Lisbon"), the visual profile's words, and the attended communities, mapped to
the paper's visual-interest categories by a keyword table of its own. It reads the evidence
document's fields (evidence.parse_evidence), never its text: communities and weights come from the
structured list only, so a comment that says "r/spacex (0.9)" adds no community. Everything else stays
"unknown". Being rules, it cannot be talked into anything by a comment: an instruction inside the
evidence is just text that matches no rule.
"""

from __future__ import annotations

import json
import re

from zipp_assets.llm.types import LLMRequest
from zipp_assets.personas.evidence import parse_evidence
from zipp_assets.personas.prompt import evidence_of
from zipp_assets.personas.schema import UNKNOWN, VISUAL_INTERESTS, Aesthetics, Persona

# Keywords (lower case, matched inside subreddit names and comment words) for each visual interest.
INTEREST_KEYWORDS: dict[str, tuple[str, ...]] = {
    "architecture and interior design": ("interior", "architecture", "midcentury", "home", "house", "cozy", "minimal"),
    "products, logos and packaging": ("keyboard", "keycap", "switch", "gear", "product", "logo", "packaging", "car",
                                      "chrome", "restoration"),
    "people, family and lifestyle": ("family", "parent", "wedding", "food", "ramen", "taco", "noodle", "cooking",
                                     "garden", "knit", "yarn", "crochet"),
    "nature, wildlife and animals": ("bird", "owl", "raptor", "warbler", "aquarium", "reef", "shrimp", "cichlid",
                                     "betta", "hiking", "trail", "alpine", "summit", "wildlife", "animal", "aww"),
    "graphic design and typography": ("typography", "font", "poster", "graphic", "design", "lettering"),
    "culture and religious aesthetics": ("temple", "church", "religion", "culture", "festival", "heritage"),
    "cinematic portrait photography": ("portrait", "film", "analog", "darkroom", "leica", "portra", "cinematic",
                                       "photography", "grain"),
    "illustration and concept art": ("art", "pixel", "sprite", "watercolor", "sketch", "draw", "illustration",
                                     "tattoo", "ink", "linework", "concept", "painting"),
    "sci-fi and robotics": ("cyberpunk", "robot", "space", "astro", "nebula", "galaxy", "telescope", "synthwave",
                            "neon", "scifi"),
    "fashion and beauty": ("fashion", "makeup", "beauty", "style", "sneaker", "outfit", "skate"),
}
assert set(INTEREST_KEYWORDS) == set(VISUAL_INTERESTS)

_AGE = re.compile(r"\b(?:I'?m|I am|as an?) (\d{2})(?:[- ]years?[- ]old)?\b|\b(\d{2}) years old\b", re.IGNORECASE)
_JOB = re.compile(r"\bI work as an? ([a-z]+(?: [a-z]+)?)|\bI'?m an? ([a-z]+) by (?:trade|profession)", re.IGNORECASE)
_PLACE = re.compile(r"\b(?:I live in|here in|I'?m from|living in|based in) ([A-Z][A-Za-z]+(?: [A-Z][A-Za-z]+)?)")
_GENDER = re.compile(r"\bas an? (woman|man|mom|dad|mother|father|guy|girl|nonbinary person)\b", re.IGNORECASE)
_HOBBY = re.compile(r"\b(?:my hobby is|I got into|I'?ve been into|in my free time I do) ([a-z]+(?: [a-z]+)??)"
                    r"(?: a few| for| since|[.!,;]|$)", re.IGNORECASE)
_TASTE = re.compile(r"\b(?:I love|I'?m into|my whole aesthetic is|always go for|can'?t get enough of|drawn to) "
                    r"([a-z][a-z -]{2,40}?)(?:[.!,;]|$)|([a-z][a-z -]{2,40}?) is my whole aesthetic", re.IGNORECASE)
_FILLER = re.compile(r"^(?:honestly|really|just|totally|so) ")
_GENDER_OF = {"woman": "female", "mom": "female", "mother": "female", "girl": "female", "man": "male", "dad": "male",
              "father": "male", "guy": "male", "nonbinary person": "nonbinary"}


def _age_band(age: int) -> str:
    for low, high, band in ((13, 17, "13-17"), (18, 24, "18-24"), (25, 34, "25-34"), (35, 44, "35-44"),
                            (45, 54, "45-54"), (55, 64, "55-64"), (65, 120, "65+")):
        if low <= age <= high:
            return band
    return UNKNOWN


def _first(pattern: re.Pattern, comments: list[str]) -> str | None:
    for text in comments:
        match = pattern.search(text)
        if match:
            return next(g for g in match.groups() if g)
    return None


def persona_from_evidence(evidence: str) -> Persona:
    """The persona of a rendered evidence document (evidence.render); ValueError if it is not one."""
    parsed = parse_evidence(evidence)
    communities = parsed.communities
    comments = [text for _subreddit, text in parsed.comments]
    visual = [w.strip() for w in parsed.visual if w.strip()]
    age = _first(_AGE, comments)
    job = _first(_JOB, comments)
    place = _first(_PLACE, comments)
    gender = _first(_GENDER, comments)
    hobby = _first(_HOBBY, comments)
    tastes = [_FILLER.sub("", next(g for g in m if g).strip().lower()) for text in comments
              for m in _TASTE.findall(text)][:4]
    scores = dict.fromkeys(VISUAL_INTERESTS, 0.0)
    for name, weight in communities:
        for category, words in INTEREST_KEYWORDS.items():
            if any(w in name.lower() for w in words):
                scores[category] += weight
    interests = [c for c, s in sorted(scores.items(), key=lambda kv: -kv[1]) if s > 0][:2]
    palette = [w for w in visual if "hue" in w or "colour" in w]
    lighting = [w for w in visual if "key" in w or "tone" in w]
    styles = [w for w in visual if "texture" in w or "shapes" in w or "lines" in w]
    main = [name for name, weight in communities if weight >= 0.1][:5]
    fields = {
        "age_band": _age_band(int(age)) if age else UNKNOWN,
        "gender": _GENDER_OF.get(gender.lower(), UNKNOWN) if gender else UNKNOWN,
        "locale": place or UNKNOWN,
        "profession": job.lower() if job else UNKNOWN,
    }
    known = sum(v != UNKNOWN for v in fields.values()) + bool(interests) + bool(visual) + bool(tastes)
    look = ", ".join((tastes or palette)[:2])
    summary = f"I spend most of my time in {', '.join('r/' + m for m in main[:3])}." if main else \
        "I do not say much about myself."
    if look:
        summary += f" I am drawn to {look}."
    return Persona(
        **fields,
        hobbies=[hobby.lower()] if hobby else [],
        interests=main,
        visual_interests=interests,
        aesthetics=Aesthetics(palette=(tastes + palette)[:8], lighting=lighting[:8], mood=[], styles=styles[:8]),
        summary=summary,
        confidence=round(known / 7, 2),
    )


def template_persona(request: LLMRequest) -> str:
    """The template backend's render function: the persona of the request's evidence, as JSON."""
    return json.dumps(persona_from_evidence(evidence_of(request)).model_dump())
