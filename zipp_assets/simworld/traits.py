"""Who a synthetic user is: the persona attributes planted per user, from small fixed lists, and the
sentences in which a user states one of them about themselves.

The attributes are the ones a persona stage later infers (ZIPP's taxonomy): age band, gender,
locale, profession, hobby and one of the paper's ten visual-interest categories. Locale, profession
and hobby each have a subreddit of their own that some of the users with that attribute join. The
values are the world's truth; their names, subreddits and the sentences stating them come from the
phrasebook. Like `taste_words`, this module belongs to the world: the pipeline never imports it (a
test enforces this), so it cannot read facts back with the world's own templates.
"""

from __future__ import annotations

import numpy as np

from zipp_assets.personas.schema import VISUAL_INTERESTS as PERSONA_VISUAL_INTERESTS

AGE_BANDS = ("18-24", "25-34", "35-44", "45+")
AGE_RANGES = {"18-24": (18, 24), "25-34": (25, 34), "35-44": (35, 44), "45+": (45, 70)}
GENDERS = ("female", "male", "nonbinary")
REGIONS = ("north_america", "europe", "asia", "other")
# Population shares, shape only (Pew Research Center 2016: Reddit's users are more likely young and
# male than the public; the largest audience is in the US). Round figures, not measurements.
AGE_BAND_SHARES = (0.32, 0.36, 0.18, 0.14)
GENDER_SHARES = (0.35, 0.60, 0.05)
REGION_SHARES = (0.55, 0.25, 0.10, 0.10)

# locale -> region. What a locale, profession or hobby is called, its subreddit and the sentences
# that state it come from the world's phrasebook (`phrasebook`).
LOCALES = {
    "New York": "north_america", "Toronto": "north_america", "Seattle": "north_america", "Chicago": "north_america",
    "London": "europe", "Berlin": "europe", "Paris": "europe",
    "Tokyo": "asia", "Singapore": "asia",
    "Sydney": "other", "São Paulo": "other",
}
PROFESSIONS = ("nurse", "software developer", "teacher", "student", "graphic designer", "photographer", "chef",
               "electrician", "accountant", "architect")
HOBBIES = ("running", "cooking", "cycling", "board games", "yoga", "fishing", "chess", "baking")
# The paper's ten visual-interest categories: the taxonomy personas are written in, so the world
# plants exactly the values a persona can name (the world reads the pipeline's list, never the reverse).
VISUAL_INTERESTS = PERSONA_VISUAL_INTERESTS
TRAIT_KINDS = ("locale", "profession", "hobby")
FACT_KINDS = ("age", "gender", "locale", "profession", "hobby", "visual_interest")
# Of the statements of a fact, the share said outright ("I work as a nurse"); the rest are said the
# indirect way people often drop them ("Just got home after my night shift on the ward"). A choice.
DIRECT_SHARE = 0.5


def locales_in(region: str) -> list[str]:
    return [locale for locale, r in LOCALES.items() if r == region]


def draw_age(rng: np.random.Generator, band: str) -> int:
    low, high = AGE_RANGES[band]
    return int(rng.integers(low, high + 1))


def age_band_of(age: int) -> str:
    return next(band for band, (low, high) in AGE_RANGES.items() if low <= age <= high)


def fact_sentence(book, kind: str, value: str | int, rng: np.random.Generator) -> str:
    """A first-person statement of one attribute in the phrasebook's words: outright with chance
    DIRECT_SHARE, else one of the value's indirect hints."""
    if kind not in FACT_KINDS:
        raise ValueError(f"unknown fact kind {kind!r}")
    block = book.traits[kind]
    key = age_band_of(int(value)) if kind == "age" else str(value)
    entry = block["values"][key]
    if rng.random() < DIRECT_SHARE:
        template = block["direct"][int(rng.integers(len(block["direct"])))]
        return template.format(age=value) if kind == "age" else template.format(name=entry["name"])
    return entry["hints"][int(rng.integers(len(entry["hints"])))]


def fact_statements(book, kind: str) -> dict[str, str]:
    """Every statement of `kind` the phrasebook can make -> the attribute value it states (ages as text,
    one per year of every band): what evaluation looks for in comments."""
    block = book.traits[kind]
    out: dict[str, str] = {}
    for key, entry in block["values"].items():
        for hint in entry["hints"]:
            out[hint] = key
        if kind == "age":
            low, high = AGE_RANGES[key]
            out.update({t.format(age=age): str(age) for t in block["direct"] for age in range(low, high + 1)})
        else:
            out.update({t.format(name=entry["name"]): key for t in block["direct"]})
    return out


def trait_subreddits(book) -> dict[str, tuple[str, str]]:
    """Every locale, profession and hobby subreddit of the phrasebook -> (kind, the value it is for)."""
    return {book.trait_subreddit(kind, value): (kind, value)
            for kind in TRAIT_KINDS for value in book.traits[kind]["values"]}
