"""Who a synthetic user is: the persona attributes planted per user, from small fixed lists, and the
sentences in which a user states one of them about themselves.

The attributes are the ones a persona stage later infers (ZIPP's taxonomy): age band, gender,
locale, profession, hobby and one of the paper's ten visual-interest categories. Locale, profession
and hobby each have a subreddit of their own (r/london, r/nursing, r/running) that some of the
users with that attribute join. Like `taste_words`, this module belongs to the world: the pipeline
never imports it (a test enforces this), so it cannot read facts back with the world's own templates.
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

# locale -> (region, its subreddit)
LOCALES = {
    "New York": ("north_america", "nyc"),
    "Toronto": ("north_america", "toronto"),
    "Seattle": ("north_america", "Seattle"),
    "Chicago": ("north_america", "chicago"),
    "London": ("europe", "london"),
    "Berlin": ("europe", "berlin"),
    "Paris": ("europe", "paris"),
    "Tokyo": ("asia", "tokyo"),
    "Singapore": ("asia", "singapore"),
    "Sydney": ("other", "sydney"),
    "São Paulo": ("other", "saopaulo"),
}
# profession -> its subreddit
PROFESSIONS = {
    "nurse": "nursing",
    "software developer": "cscareerquestions",
    "teacher": "Teachers",
    "student": "college",
    "graphic designer": "graphic_design",
    "photographer": "photography",
    "chef": "KitchenConfidential",
    "electrician": "electricians",
    "accountant": "Accounting",
    "architect": "architecture",
}
# hobby -> its subreddit
HOBBIES = {
    "running": "running",
    "cooking": "Cooking",
    "cycling": "cycling",
    "board games": "boardgames",
    "yoga": "yoga",
    "fishing": "Fishing",
    "chess": "chess",
    "baking": "Baking",
}
# The paper's ten visual-interest categories: the taxonomy personas are written in, so the world
# plants exactly the values a persona can name (the world reads the pipeline's list, never the reverse).
VISUAL_INTERESTS = PERSONA_VISUAL_INTERESTS
TRAIT_KINDS = ("locale", "profession", "hobby")
FACT_KINDS = ("age", "gender", "locale", "profession", "hobby", "visual_interest")
GENDER_WORDS = {"female": "a woman", "male": "a guy", "nonbinary": "a nonbinary person"}


def trait_subreddits() -> dict[str, tuple[str, str]]:
    """Every locale, profession and hobby subreddit -> (kind, the attribute value it is for)."""
    out: dict[str, tuple[str, str]] = {}
    out.update({subreddit: ("locale", locale) for locale, (_, subreddit) in LOCALES.items()})
    out.update({subreddit: ("profession", p) for p, subreddit in PROFESSIONS.items()})
    out.update({subreddit: ("hobby", h) for h, subreddit in HOBBIES.items()})
    return out


def locales_in(region: str) -> list[str]:
    return [locale for locale, (r, _) in LOCALES.items() if r == region]


def draw_age(rng: np.random.Generator, band: str) -> int:
    low, high = AGE_RANGES[band]
    return int(rng.integers(low, high + 1))


def _article(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def fact_sentence(kind: str, value: str | int) -> str:
    """A first-person statement of one attribute, the way people drop it into a comment."""
    if kind == "age":
        return f"I'm {value}, for what it's worth."
    if kind == "gender":
        return f"As {GENDER_WORDS[str(value)]}, I can relate."
    if kind == "locale":
        return f"Same thing here in {value}."
    if kind == "profession":
        return f"I work as {_article(str(value))}, so this hits home."
    if kind == "hobby":
        return f"I got into {value} a few years ago."
    if kind == "visual_interest":
        return f"I mostly save pictures of {value}."
    raise ValueError(f"unknown fact kind {kind!r}")
