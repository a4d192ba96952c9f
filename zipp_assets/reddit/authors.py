"""Which authors are people: `[deleted]`, AutoModerator and known bots are not."""

from __future__ import annotations

import re

DELETED_AUTHORS = frozenset({"[deleted]", "[removed]", ""})
KNOWN_BOTS = frozenset(
    {
        "AutoModerator",
        "RemindMeBot",
        "WikiTextBot",
        "RepostSleuthBot",
        "sneakpeek_bot",
        "converter-bot",
        "gifv-bot",
        "imguralbumbot",
        "SaveVideo",
        "savevideobot",
        "B0tRank",
        "TweetPoster",
        "tweettranscriberbot",
        "MTGCardFetcher",
        "LinkifyBot",
        "timezone_bot",
        "Decronym",
        "transcribot",
        "GoodBot_BadBot",
        "SmallSubBot",
        "alphabet_order_bot",
        "haikusbot",
        "nice-scores",
        "FatFingerHelperBot",
        "VredditDownloader",
        "stabbot",
        "CommonMisspellingBot",
        "of_patrol_bot",
    }
)
# Names ending in "Bot" or "_bot"/"-bot" are bots by convention; "Abbot" or "robot" stay people.
BOT_NAME_PATTERN = r"(Bot|[_-][Bb][Oo][Tt])$"
_BOT_NAME = re.compile(BOT_NAME_PATTERN)


def is_person(author: str | None) -> bool:
    if author is None or author in DELETED_AUTHORS or author in KNOWN_BOTS:
        return False
    return _BOT_NAME.search(author) is None


def person_filter_sql(column: str = "author") -> str:
    """A SQL predicate (DuckDB) equivalent to `is_person`."""
    excluded = ", ".join("'" + name.replace("'", "''") + "'" for name in sorted(DELETED_AUTHORS | KNOWN_BOTS))
    return (
        f"({column} IS NOT NULL AND {column} NOT IN ({excluded}) "
        f"AND NOT regexp_matches({column}, '{BOT_NAME_PATTERN}'))"
    )
