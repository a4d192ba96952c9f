"""A synthetic world's configuration and the month arithmetic its dumps are cut by.

Defaults and where each comes from are in the package docstring (`zipp_assets.simworld`).
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime

from zipp_assets.simworld.content import THEMES
from zipp_assets.simworld.phrasebook import DEFAULT_PHRASEBOOK, load


@dataclass
class WorldConfig:
    users: int = 2000
    months: tuple[str, ...] = ("2019-01", "2019-02", "2019-03")
    seed: int = 0
    communities: int = 12
    subreddits_per_community: int = 6
    comments_per_user_month: float = 6.0
    submissions_per_user_month: float = 1.0
    image_post_fraction: float = 0.5
    nsfw_fraction: float = 0.02
    deleted_fraction: float = 0.03
    string_timestamp_fraction: float = 0.03
    malformed_rate: float = 0.0002
    image_size: int = 32
    write_images: bool = True
    dump_style: str = "auto"  # auto (by era) | pushshift | arctic_shift
    compression_level: int = 3
    # The words the world writes in: a phrasebook's name under simworld/phrasebooks/ or a path to one.
    # Only the words change with it; every planted number (truth, taste, membership) stays the same.
    phrasebook: str = DEFAULT_PHRASEBOOK
    # Taste and persona evidence
    personal_share: float = 0.5  # of a user's visual taste that is theirs, not their communities'
    trait_join_rate: float = 0.2  # of users with a locale/profession/hobby who join its subreddit
    trait_post_share: float = 0.1  # of a joined user's posts and comments that go to those subreddits
    interest_from_community: float = 0.3  # chance a user's visual interest is their primary community's
    aesthetic_comment_rate: float = 0.03  # of a user's comments that state an aesthetic preference
    fact_comment_rate: float = 0.03  # of a user's comments that state a fact about them
    # Of a user's community activity, the share that goes to the community whose style is nearest their
    # personal taste (taste-aligned communities: film photography, pastel art, neon city scenes). 0 (the
    # default) is the world before this knob: membership follows the community mixture alone.
    taste_aligned_share: float = 0.0
    # Civitai-like prompt histories (`civitai`), written to <raw>/zipbench/civitai_generations.jsonl
    prompt_history_share: float = 0.1  # of image-posting users with a linked Civitai account; 0 writes none
    prompts_per_user: tuple[int, int] = (5, 40)  # fewest and most prompts in a history, drawn uniformly
    # Of users, the share whose last month carries prompt-injection comments (simworld/injection.py), from a
    # random stream of its own; 0 (the default) plants none and leaves the world as it was.
    injection_share: float = 0.0

    def __post_init__(self) -> None:
        if self.users < 1:
            raise ValueError("users must be at least 1")
        if not 1 <= self.communities <= len(THEMES):
            raise ValueError(f"communities must be within 1..{len(THEMES)}")
        if not self.months:
            raise ValueError("at least one month is needed")
        for month in self.months:
            parse_month(month)
        if self.dump_style not in ("auto", "pushshift", "arctic_shift"):
            raise ValueError(f"unknown dump_style {self.dump_style!r}")
        for name in ("personal_share", "trait_join_rate", "trait_post_share", "interest_from_community",
                     "aesthetic_comment_rate", "fact_comment_rate", "prompt_history_share", "taste_aligned_share",
                     "injection_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within 0..1, not {getattr(self, name)!r}")
        if self.aesthetic_comment_rate + self.fact_comment_rate > 1.0:
            raise ValueError("aesthetic_comment_rate + fact_comment_rate must not exceed 1")
        load(self.phrasebook)  # a phrasebook that cannot be written from fails here, not mid-world
        low, high = self.prompts_per_user
        if not 1 <= low <= high:
            raise ValueError(f"prompts_per_user must be (fewest, most), 1 <= fewest <= most, not {self.prompts_per_user!r}")


def parse_month(text: str) -> datetime:
    try:
        return datetime.strptime(text.strip(), "%Y-%m")
    except ValueError:
        raise ValueError(f"not a month (YYYY-MM): {text!r}") from None


def parse_month_range(text: str) -> tuple[str, ...]:
    """'2019-01:2019-03' -> ('2019-01', '2019-02', '2019-03'); a single month is a range of one."""
    start_text, _, end_text = text.partition(":")
    start = parse_month(start_text)
    end = parse_month(end_text or start_text)
    if end < start:
        raise ValueError(f"month range ends before it starts: {text!r}")
    months = []
    year, month = start.year, start.month
    while (year, month) <= (end.year, end.month):
        months.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return tuple(months)


def month_bounds(month: str) -> tuple[int, int]:
    """[start, end) of a month as UTC epoch seconds."""
    year, mon = int(month[:4]), int(month[5:7])
    start = calendar.timegm((year, mon, 1, 0, 0, 0))
    days = calendar.monthrange(year, mon)[1]
    return start, start + days * 86400
