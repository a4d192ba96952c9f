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

# Keywords (lower case, matched inside subreddit names) for each visual interest: the content words of
# the paper's own category names and their singular stems, nothing else. They are written for the
# world at large, not for the synthetic world (whose phrasebooks a test holds them against), so a
# community whose name says nothing of these words leaves its users' interest unknown.
INTEREST_KEYWORDS: dict[str, tuple[str, ...]] = {
    "architecture and interior design": ("architecture", "architect", "interior"),
    "products, logos and packaging": ("product", "logo", "packaging"),
    "people, family and lifestyle": ("people", "family", "lifestyle"),
    "nature, wildlife and animals": ("nature", "wildlife", "animal"),
    "graphic design and typography": ("graphic", "typography"),
    "culture and religious aesthetics": ("culture", "religio"),
    "cinematic portrait photography": ("cinematic", "portrait", "photography"),
    "illustration and concept art": ("illustration", "conceptart"),
    "sci-fi and robotics": ("scifi", "robot"),
    "fashion and beauty": ("fashion", "beauty"),
}
assert set(INTEREST_KEYWORDS) == set(VISUAL_INTERESTS)

# First-person self-disclosure patterns of the kind used to label Reddit attribute data sets (RedDust,
# Tigunova et al. 2020: "I am a <profession>", "I work as a ..."; Reddit's own "I (28F)" convention
# of stating age and gender), written for English at large, not copied from any generator.
_AGE = re.compile(r"\b(?:I'?m|I am) (\d{2})(?: years old| y/?o)?\b(?! (?:minutes|hours|days|weeks|months|percent|%))"
                  r"|\b(\d{2}) years old\b|\bI \((\d{2}) ?[MFmf]\)", re.IGNORECASE)
_JOB = re.compile(r"\bI work as an? ([a-z]+(?: [a-z]+)?)\b|\bI'?m an? ([a-z]+) by (?:trade|profession)\b"
                  r"|\bmy job as an? ([a-z]+(?: [a-z]+)?)\b", re.IGNORECASE)
_PLACE = re.compile(r"\b(?:I live in|I'?m from|here in|living in|based in|I grew up in|moved to) "
                    r"([A-Z][A-Za-z]+(?: [A-Z][A-Za-z]+)?)")
_GENDER = re.compile(r"\b(?:as|I'?m|I am) an? (woman|man|mom|mum|dad|mother|father|girl|boy|nonbinary person)\b"
                     r"|\bI \(\d{2} ?([MFmf])\)", re.IGNORECASE)
_HOBBY = re.compile(r"\b(?:my hobby is|my hobbies are|I'?ve been into|in my (?:free|spare) time I (?:do|go|play)?) ?"
                    r"([a-z]+(?: [a-z]+)??)(?:[.!,;]| and|$)", re.IGNORECASE)
_TASTE = re.compile(r"\b(?:I love|I'?m into|I prefer|I like) ([a-z][a-z -]{2,40}?) "
                    r"(?:colou?rs?|tones?|light|lighting)\b"
                    r"|\b(?:drawn to|partial to|a fan of) ([a-z][a-z -]{2,40}?) (?:colou?rs?|tones?|light|lighting)\b",
                    re.IGNORECASE)
_FILLER = re.compile(r"^(?:really|just|totally|so) ")
_GENDER_OF = {"woman": "female", "mom": "female", "mum": "female", "mother": "female", "girl": "female",
              "f": "female", "man": "male", "dad": "male", "father": "male", "boy": "male", "m": "male",
              "nonbinary person": "nonbinary"}


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
