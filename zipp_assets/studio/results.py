"""What the human study's votes say: ZIPP's win rate per comparison, overall and by intake demographics.

Per group of votes: the win rate of the ZIPP image, an exact two-sided binomial test against 0.5
(no preference) and a 95% Wilson interval (scipy's `binomtest`). Votes of one participant are not
independent of each other, so beside the vote-level test each row also carries a participant-level
sign test: participants who preferred ZIPP in most of their votes against those who preferred the
baseline (ties left out). Breakdowns use the demographics the participant gave in the intake survey;
"unknown" (prefer not to say) is its own level.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import pyarrow as pa
from scipy.stats import binomtest

BREAKDOWNS = ("age_band", "gender", "country")
LEVEL = 0.95
RESULTS_SCHEMA = pa.schema([
    ("comparison", pa.string()), ("breakdown", pa.string()), ("level", pa.string()), ("participants", pa.int64()),
    ("votes", pa.int64()), ("zipp_wins", pa.int64()), ("win_rate", pa.float64()), ("ci_low", pa.float64()),
    ("ci_high", pa.float64()), ("p_value", pa.float64()), ("participants_preferring_zipp", pa.int64()),
    ("participants_preferring_baseline", pa.int64()), ("participant_p_value", pa.float64()),
    ("median_time_ms", pa.float64()),
])


def unique_votes(votes: Sequence[dict]) -> list[dict]:
    """One vote per (session, comparison): the first recorded, whatever a replay may have repeated."""
    seen, out = set(), []
    for vote in sorted(votes, key=lambda v: (v["voted_utc"], v["vote_id"])):
        key = (vote["session_id"], vote["comparison_index"])
        if key not in seen:
            seen.add(key)
            out.append(vote)
    return out


def _group_row(comparison: str, breakdown: str, level: str, votes: list[dict]) -> dict:
    wins = sum(bool(v["zipp_won"]) for v in votes)
    test = binomtest(wins, len(votes), 0.5)
    interval = test.proportion_ci(confidence_level=LEVEL, method="wilson")
    per_participant: dict[str, list[bool]] = {}
    for vote in votes:
        per_participant.setdefault(vote["session_id"], []).append(bool(vote["zipp_won"]))
    times = [v["time_taken_ms"] for v in votes if v["time_taken_ms"] is not None]  # None: shown before a restart
    zipp = sum(1 for won in per_participant.values() if 2 * sum(won) > len(won))
    baseline = sum(1 for won in per_participant.values() if 2 * sum(won) < len(won))
    return {
        "comparison": comparison, "breakdown": breakdown, "level": level, "participants": len(per_participant),
        "votes": len(votes), "zipp_wins": wins, "win_rate": wins / len(votes), "ci_low": float(interval.low),
        "ci_high": float(interval.high), "p_value": float(test.pvalue), "participants_preferring_zipp": zipp,
        "participants_preferring_baseline": baseline,
        "participant_p_value": float(binomtest(zipp, zipp + baseline, 0.5).pvalue) if zipp + baseline else 1.0,
        "median_time_ms": float(statistics.median(times)) if times else None,
    }


def study_results(votes: Sequence[dict], sessions: Sequence[dict]) -> list[dict]:
    """Rows of `RESULTS_SCHEMA`: per comparison, all votes first, then each demographic level.

    `votes`: rows of the votes table; `sessions`: rows of the sessions table (session_id and the
    intake demographics). A vote whose session is unknown counts under "unknown" in breakdowns.
    """
    demographics = {s["session_id"]: s for s in sessions}
    rows = []
    by_comparison: dict[str, list[dict]] = {}
    for vote in unique_votes(votes):
        by_comparison.setdefault(vote["comparison"], []).append(vote)
    for comparison, mine in sorted(by_comparison.items()):
        rows.append(_group_row(comparison, "all", "all", mine))
        for breakdown in BREAKDOWNS:
            groups: dict[str, list[dict]] = {}
            for vote in mine:
                level = (demographics.get(vote["session_id"]) or {}).get(breakdown) or "unknown"
                groups.setdefault(str(level), []).append(vote)
            rows += [_group_row(comparison, breakdown, level, groups[level]) for level in sorted(groups)]
    return rows


def results_table(rows: Sequence[dict]) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=RESULTS_SCHEMA)
