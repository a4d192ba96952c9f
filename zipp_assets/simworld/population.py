"""Plant a world's communities, subreddits and users: who each user is and what they like.

Draws come from separate random streams (people, traits, taste), so changing one setting, such as
the personal share, leaves every other draw as it was: the same seed gives the same users, the
same communities and the same personal components at any share.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from zipp_assets.simworld.config import WorldConfig, month_bounds
from zipp_assets.simworld.content import BOT_NAMES, SYLLABLES, THEME_VISUAL_INTEREST, THEMES
from zipp_assets.simworld.phrasebook import Phrasebook, load
from zipp_assets.simworld.render import Style
from zipp_assets.simworld.taste import blend, community_mix, draw_style
from zipp_assets.simworld.traits import (
    AGE_BAND_SHARES,
    AGE_BANDS,
    GENDER_SHARES,
    GENDERS,
    HOBBIES,
    PROFESSIONS,
    REGION_SHARES,
    REGIONS,
    VISUAL_INTERESTS,
    draw_age,
    locales_in,
    trait_subreddits,
)

COMMUNITY_COUNT_SHARES = (0.5, 0.35, 0.15)  # users in one, two, three communities
COMMUNITY_POPULARITY_EXPONENT = 0.6  # community c (0-based) has weight (c + 1) ** -0.6
DEMOGRAPHIC_CONCENTRATION = 8.0  # Dirichlet concentration of a community's mix around the population shares
ACTIVITY_SIGMA = 1.0  # log-normal spread of per-user activity
ACTIVITY_CLIP = (0.05, 40.0)


def base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


@dataclass
class Community:
    index: int
    theme: str
    words: list[str]
    subreddits: list[str]
    style: Style
    demographics: dict[str, list[float]]
    popularity: float
    visual_interest: str = ""


@dataclass
class User:
    index: int
    name: str
    fullname: str
    communities: list[int]
    weights: np.ndarray
    activity: float
    age_band: str
    gender: str
    region: str
    created_utc: int
    is_bot: bool = False
    age: int = 0
    locale: str = ""
    profession: str = ""
    hobby: str = ""
    visual_interest: str = ""
    taste: Style | None = None  # what their images follow
    community_taste: Style | None = None  # the part of it their communities give
    personal_taste: Style | None = None  # the part that is theirs alone, drawn apart from communities
    trait_subreddits: list[str] = field(default_factory=list)  # locale/profession/hobby subreddits joined
    taste_community: int = -1  # the community whose style is nearest their personal taste

    def fact(self, kind: str) -> str | int:
        return self.age if kind == "age" else getattr(self, kind)


@dataclass
class World:
    config: WorldConfig
    communities: list[Community]
    users: list[User]
    subreddit_ids: dict[str, str]
    subreddit_community: dict[str, int]  # -1 for generic and trait subreddits
    subreddit_kind: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # -> (kind, theme or trait)
    next_comment_id: int = 36**6
    next_submission_id: int = 36**5
    image_posts: dict[str, list[tuple[str, dict]]] = field(default_factory=lambda: defaultdict(list))
    image_posters: set[int] = field(default_factory=set)  # indices of users who posted an image of their own
    phrasebook: Phrasebook | None = None  # the words the world writes in
    subreddit_topics: dict[str, list[str]] = field(default_factory=dict)  # what a subreddit's comments talk about


def _community_names(stems: list[str], count: int, suffixes: tuple[str, ...]) -> list[str]:
    """`count` subreddit names from a theme's stems: each stem as it is, then with suffixes."""
    names = []
    for k in range(count):
        base = stems[k % len(stems)]
        suffix = suffixes[(k // len(stems) + k) % len(suffixes)] if k >= len(stems) else ""
        names.append(base + suffix)
    return names


def _communities(config: WorldConfig, rng: np.random.Generator, book: Phrasebook) -> list[Community]:
    communities = []
    for index in range(config.communities):
        theme = THEMES[index]
        words = list(book.themes[theme]["topics"])
        # Hues spread round the circle so communities look apart; the rest from the common prior.
        style = draw_style(rng, hue=index / config.communities + rng.uniform(-0.02, 0.02))
        demographics = {
            "age_band": rng.dirichlet(np.array(AGE_BAND_SHARES) * DEMOGRAPHIC_CONCENTRATION).tolist(),
            "gender": rng.dirichlet(np.array(GENDER_SHARES) * DEMOGRAPHIC_CONCENTRATION).tolist(),
            "region": rng.dirichlet(np.array(REGION_SHARES) * DEMOGRAPHIC_CONCENTRATION).tolist(),
        }
        popularity = 1.0 / (index + 1) ** COMMUNITY_POPULARITY_EXPONENT
        names = _community_names(book.theme_stems(theme), config.subreddits_per_community, book.subreddit_suffixes)
        communities.append(Community(index, theme, words, names,
                                     style, demographics, popularity, THEME_VISUAL_INTEREST[theme]))
    return communities


def _unique_name(rng: np.random.Generator, used: set[str]) -> str:
    while True:
        parts = rng.choice(SYLLABLES, size=rng.integers(2, 4))
        name = "".join(parts).capitalize() + (str(rng.integers(10, 9999)) if rng.random() < 0.6 else "")
        if name not in used and not name.lower().endswith("bot"):
            used.add(name)
            return name


def _plant_traits(user: User, communities: list[Community], config: WorldConfig, rng: np.random.Generator,
                  book: Phrasebook) -> None:
    """Locale (within the user's region), exact age, profession, hobby, visual interest, and which of
    the locale/profession/hobby subreddits they join. Every draw is made whatever the config says."""
    draws = rng.random(5)
    user.locale = locales_in(user.region)[int(rng.integers(len(locales_in(user.region))))]
    user.age = draw_age(rng, user.age_band)
    user.profession = list(PROFESSIONS)[int(rng.integers(len(PROFESSIONS)))]
    user.hobby = list(HOBBIES)[int(rng.integers(len(HOBBIES)))]
    population_interest = VISUAL_INTERESTS[int(rng.integers(len(VISUAL_INTERESTS)))]
    from_community = draws[0] < config.interest_from_community
    user.visual_interest = communities[user.communities[0]].visual_interest if from_community else population_interest
    joins = (
        (draws[1], book.trait_subreddit("locale", user.locale)),
        (draws[2], book.trait_subreddit("profession", user.profession)),
        (draws[3], book.trait_subreddit("hobby", user.hobby)),
    )
    user.trait_subreddits = [subreddit for draw, subreddit in joins if draw < config.trait_join_rate]


def style_distance(a: Style, b: Style) -> float:
    """How far apart two styles look: hue along the circle, saturation and brightness on their scales."""
    hue = abs((a.hue - b.hue + 0.5) % 1.0 - 0.5) * 2  # 0..1
    return float(np.hypot(hue, np.hypot(a.saturation - b.saturation, a.brightness - b.brightness)))


def _plant_taste(user: User, communities: list[Community], config: WorldConfig, rng: np.random.Generator) -> None:
    personal = draw_style(rng)  # independent of the user's communities by construction
    community_draw, personal_draw = rng.random(2)
    user.community_taste = community_mix([communities[c].style for c in user.communities], user.weights.tolist(),
                                         community_draw)
    user.personal_taste = personal
    user.taste = blend(user.community_taste, personal, config.personal_share, personal_draw)
    # No draw: the nearest community is a function of the styles, so the knob leaves every stream as it was.
    user.taste_community = min(range(len(communities)), key=lambda c: style_distance(personal, communities[c].style))


def build_world(config: WorldConfig) -> World:
    rng = np.random.default_rng([config.seed, 0])
    trait_rng = np.random.default_rng([config.seed, 2])
    taste_rng = np.random.default_rng([config.seed, 3])
    book = load(config.phrasebook)
    communities = _communities(config, rng, book)
    generic_subreddits = book.generic["subreddits"]
    subreddit_kind: dict[str, tuple[str, str | None]] = {}
    subreddit_community: dict[str, int] = {}
    named = [(s, c.index, ("theme", c.theme)) for c in communities for s in c.subreddits]
    named += [(s, -1, ("generic", None)) for s in generic_subreddits]
    named += [(s, -1, kind_value) for s, kind_value in trait_subreddits(book).items()]
    for s, community, kind_value in named:
        if s.lower() in {name.lower() for name in subreddit_community}:
            raise ValueError(f"phrasebook {book.name}: subreddit {s!r} names two subreddits")
        subreddit_community[s] = community
        subreddit_kind[s] = kind_value
    subreddit_ids = {s: "t5_" + base36(36**4 + 7919 * i) for i, s in enumerate(subreddit_community)}

    popularity = np.array([c.popularity for c in communities])
    popularity /= popularity.sum()
    users = []
    used_names: set[str] = set()
    first_month_start, _ = month_bounds(config.months[0])
    for index in range(config.users):
        name = _unique_name(rng, used_names)
        k = min(int(rng.choice([1, 2, 3], p=COMMUNITY_COUNT_SHARES)), config.communities)
        chosen = rng.choice(config.communities, size=k, replace=False, p=popularity)
        weights = np.sort(rng.dirichlet(np.ones(k) * 2.0))[::-1]
        primary = communities[int(chosen[0])].demographics
        user = User(
            index=index,
            name=name,
            fullname="t2_" + base36(36**6 + 104729 * index + int(rng.integers(0, 1000))),
            communities=[int(c) for c in chosen],
            weights=weights,
            activity=float(np.clip(rng.lognormal(0.0, ACTIVITY_SIGMA), *ACTIVITY_CLIP)),
            age_band=AGE_BANDS[rng.choice(len(AGE_BANDS), p=primary["age_band"])],
            gender=GENDERS[rng.choice(len(GENDERS), p=primary["gender"])],
            region=REGIONS[rng.choice(len(REGIONS), p=primary["region"])],
            created_utc=int(first_month_start - rng.integers(86400, 86400 * 3000)),
        )
        _plant_traits(user, communities, config, trait_rng, book)
        _plant_taste(user, communities, config, taste_rng)
        users.append(user)
    for offset, name in enumerate(["AutoModerator", *BOT_NAMES]):
        users.append(
            User(
                index=config.users + offset,
                name=name,
                fullname="t2_" + base36(36**5 + offset),
                communities=[],
                weights=np.array([]),
                activity=30.0,
                age_band="",
                gender="",
                region="",
                created_utc=first_month_start - 86400 * 4000,
                is_bot=True,
            )
        )
    topics = {s: (communities[c].words if c >= 0 else list(book.generic["topics"]))
              for s, c in subreddit_community.items()}
    return World(config, communities, users, subreddit_ids, subreddit_community, subreddit_kind,
                 phrasebook=book, subreddit_topics=topics)
