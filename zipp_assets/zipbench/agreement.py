"""The pairwise judge against human choices: Pick-a-Pic v2 and Rapidata pairs, judged like ZIPBench's own
pairs (both orders; a win only when both agree), scored by how often the judge picks what people picked.

- `human_pairs(votes)`: the loaders' preference votes grouped into pairs, with their majority ("a", "b" or
  "tie") and every vote with the voter's demographics.
- `judge_items(pairs, find, embed, ...)`: one judge case per pair whose two images are on disk (looked
  up by `loaders.images.find_image` under the image root; nothing is fetched), images as file paths
  (`with_image_bytes` reads them, a chunk at a time, for a judge that looks at pixels). A Pick-a-Pic user's
  own choices in their other pairs are that user's reference images (leave the pair out): what the
  judge is asked is which image this person would prefer, as in ZIPBench. Rapidata publishes no
  annotator ids, so its pairs have no references (the embedding judge then has nothing to go on and
  says so: a forced tie with its reason).
- `agreement(pairs, verdicts, ...)` per source format:
  * pairs: over pairs with a human majority, 1 when the judge picks it, 0.5 for a judge tie, 0 for the
    other image; the mean over annotators (Pick-a-Pic; a pair is its own cluster where no annotator is
    published, as in Rapidata) with a percentile bootstrap interval over them (`stats.bootstrap_mean`);
  * decided pairs: where both the judge and the people chose, the share that agree, with a Wilson
    interval (`stats.wilson_interval`);
  * votes: the same score per human vote (the judge against each person, ties by people left out),
    raw and IPF-reweighted to the demographic targets from the voters' age and gender
    (`scoring.rake_users`, `raking`), resampling pairs with their votes' weights;
  * the human ceiling where pairs have several votes: the mean share of votes for the majority.
  Chance is 0.5; the verdict says whether the pairs' interval lies above, below or around it.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow as pa

from zipp_assets.personas.schema import UNKNOWN
from zipp_assets.stats import Interval, bootstrap_mean, weighted_bootstrap_mean, wilson_interval
from zipp_assets.zipbench.judge import Candidate, JudgeCase, PairVerdict

CHANCE = 0.5
AGE_BANDS = ("13-17", "18-24", "25-34", "35-44", "45-54", "55-64", "65+")
_MINOR_BANDS = {"0-17", "<18", "under18", "13-17", "12-17", "under 18"}
_GENDERS = {"male": "male", "m": "male", "man": "male", "female": "female", "f": "female", "woman": "female",
            "other": "nonbinary", "nonbinary": "nonbinary", "non-binary": "nonbinary", "diverse": "nonbinary"}


@dataclass
class HumanPair:
    pair_id: str
    format: str
    prompt: str
    image_a: str
    image_b: str
    annotator: str | None  # Pick-a-Pic's user id; None where none is published
    votes: list[dict] = field(default_factory=list)  # {"preferred", "age", "gender", ...}

    @property
    def tally(self) -> tuple[int, int, int]:
        count = Counter(v["preferred"] for v in self.votes)
        return count["a"], count["b"], count["tie"]

    @property
    def majority(self) -> str:
        a, b, _ = self.tally
        return "a" if a > b else "b" if b > a else "tie"

    @property
    def cluster(self) -> str:
        """The unit intervals resample: the annotator where one is published, else the pair."""
        return f"annotator:{self.annotator}" if self.annotator else f"pair:{self.pair_id}"


def human_pairs(votes: pa.Table) -> list[HumanPair]:
    """PREFERENCE_SCHEMA rows (one per vote) -> pairs, in first-seen order."""
    pairs: dict[str, HumanPair] = {}
    keep = ("preferred", "age", "gender", "country", "language", "occupation", "annotator_score")
    for row in votes.to_pylist():
        pair = pairs.get(row["pair_id"])
        if pair is None:
            pair = pairs[row["pair_id"]] = HumanPair(row["pair_id"], row["format"], row["prompt"], row["image_a"],
                                                    row["image_b"], row["annotator_id"])
        pair.votes.append({k: row[k] for k in keep})
    return list(pairs.values())


def age_band(value: str | None) -> tuple[str, bool]:
    """(the persona schema's age band, whether the published value mapped onto one): '25-34' stays,
    '0-17' and the like are minors ('13-17', kept at their sample share by the targets), 'Unknown' or a
    band cut another way ('18-29') is unknown."""
    if value is None:
        return UNKNOWN, True
    text = value.strip().lower().replace(" ", "")
    if text in ("unknown", "", "n/a", "none"):
        return UNKNOWN, True
    if text in AGE_BANDS:
        return text, True
    if text in {b.replace(" ", "") for b in _MINOR_BANDS}:
        return "13-17", True
    if text in ("65-", "65andover", ">65", "65plus"):
        return "65+", True
    return UNKNOWN, False


def gender(value: str | None) -> str:
    return _GENDERS.get((value or "").strip().lower(), UNKNOWN)


@dataclass
class Prepared:
    items: list[tuple[JudgeCase, Candidate, Candidate]]
    pairs: list[HumanPair]  # the pairs of `items`, in order
    skipped: Counter  # reason -> pairs left out


def sample_pairs(pairs: Sequence[HumanPair], max_pairs: int, seed: int) -> list[HumanPair]:
    """At most `max_pairs` pairs, a keyed-hash sample (stable, seed-dependent), in their own order."""
    if len(pairs) <= max_pairs:
        return list(pairs)
    ranked = sorted(pairs, key=lambda p: hashlib.sha256(f"{seed}/{p.pair_id}".encode()).hexdigest())[:max_pairs]
    chosen = {p.pair_id for p in ranked}
    return [p for p in pairs if p.pair_id in chosen]


def judge_items(pairs: Sequence[HumanPair], find: Callable[[str], Path | None],
                embed: Callable[[list[Path]], np.ndarray], references_per_user: int = 8) -> Prepared:
    """One judge case per pair with both images on disk. `find(image_id)` -> its file or None;
    `embed(paths)` -> the image encoder's rows for those files."""
    skipped: Counter = Counter()
    usable: list[tuple[HumanPair, Path, Path]] = []
    for pair in pairs:
        if pair.majority == "tie":
            skipped["people tied (no majority to agree with)"] += 1
            continue
        a, b = find(pair.image_a), find(pair.image_b)
        if a is None or b is None:
            skipped["an image is not on disk under the image root"] += 1
            continue
        usable.append((pair, a, b))
    # A user's references: the images they chose in their other pairs (Pick-a-Pic), up to k, in order.
    chosen_by: dict[str, list[tuple[str, Path]]] = defaultdict(list)
    for pair, a, b in usable:
        if pair.annotator:
            chosen_by[pair.annotator].append((pair.pair_id, a if pair.majority == "a" else b))
    paths = sorted({p for _, a, b in usable for p in (a, b)} | {p for v in chosen_by.values() for _, p in v})
    vectors = np.asarray(embed(paths), dtype=np.float32) if paths else np.zeros((0, 1), np.float32)
    row = {p: i for i, p in enumerate(paths)}
    clusters = {c: i for i, c in enumerate(sorted({p.cluster for p, _, _ in usable}))}
    items = []
    for pair, a, b in usable:
        refs = [p for pid, p in chosen_by.get(pair.annotator or "", []) if pid != pair.pair_id and p not in (a, b)]
        refs = list(dict.fromkeys(refs))[:references_per_user]
        case = JudgeCase(case_id=pair.pair_id, user=clusters[pair.cluster], persona_text="", prompt=pair.prompt,
                         reference_images=tuple(str(p) for p in refs),
                         reference_embeddings=vectors[[row[p] for p in refs]] if refs else None)
        items.append((case, Candidate("a", str(a), vectors[row[a]]), Candidate("b", str(b), vectors[row[b]])))
    return Prepared(items=items, pairs=[p for p, _, _ in usable], skipped=skipped)


def with_image_bytes(item: tuple[JudgeCase, Candidate, Candidate]) -> tuple[JudgeCase, Candidate, Candidate]:
    """A case whose images (file paths from `judge_items`) are read into bytes, for a judge that looks at
    them; read a chunk at a time, so a large sample never holds every image in memory at once."""
    case, a, b = item
    return (replace(case, reference_images=tuple(Path(p).read_bytes() for p in case.reference_images)),
            replace(a, image=Path(a.image).read_bytes()), replace(b, image=Path(b.image).read_bytes()))


def _score(judge_winner: str, human: str) -> float:
    if judge_winner == "tie":
        return 0.5
    return 1.0 if judge_winner == human else 0.0


def _interval_dict(interval: Interval) -> dict:
    return {"estimate": interval.estimate, "low": interval.low, "high": interval.high, "n": interval.n}


def chance_verdict(interval: Interval) -> str:
    if interval.n == 0 or not np.isfinite(interval.low):
        return "–"
    if interval.low > CHANCE:
        return "above chance"
    if interval.high < CHANCE:
        return "below chance"
    return "at chance"


def agreement(pairs: Sequence[HumanPair], verdicts: Sequence[PairVerdict], targets=None, seed: int = 0) -> dict:
    """Per source format: the judge's agreement with people (see the module's docstring), as JSON-able dicts
    with Interval fields kept as `Interval` under keys starting with '_'."""
    from zipp_assets.zipbench.scoring import rake_users

    by_format: dict[str, list[tuple[HumanPair, PairVerdict]]] = defaultdict(list)
    for pair, verdict in zip(pairs, verdicts):
        by_format[pair.format].append((pair, verdict))
    out = {}
    for name, judged in sorted(by_format.items()):
        per_cluster: dict[str, list[float]] = defaultdict(list)
        decided = agree = 0
        vote_rows, pair_scores, pair_votes = [], [], []
        unmapped_ages: Counter = Counter()
        for pair, verdict in judged:
            human = pair.majority
            per_cluster[pair.cluster].append(_score(verdict.winner, human))
            if verdict.winner != "tie":
                decided += 1
                agree += verdict.winner == human
            scores = []
            for vote in pair.votes:
                if vote["preferred"] == "tie":
                    continue
                band, mapped = age_band(vote.get("age"))
                if not mapped:
                    unmapped_ages[vote.get("age")] += 1
                vote_rows.append({"age_band": band, "gender": gender(vote.get("gender")), "_pair": len(pair_scores)})
                scores.append(_score(verdict.winner, vote["preferred"]))
            pair_scores.append(scores)
            pair_votes.append(len(scores))
        clusters = sorted(per_cluster)
        overall = bootstrap_mean(np.array([np.mean(per_cluster[c]) for c in clusters]), seed=seed)
        decided_interval = wilson_interval(agree, decided)
        has_votes = [i for i, s in enumerate(pair_scores) if s]
        vote_means = np.array([np.mean(pair_scores[i]) for i in has_votes])
        vote_weights = np.array([pair_votes[i] for i in has_votes], dtype=np.float64)
        votes_raw = weighted_bootstrap_mean(vote_means, vote_weights, seed=seed) if has_votes else None
        multi = [p for p, _ in judged if len(p.votes) > 1]
        ceiling = bootstrap_mean(np.array([max(p.tally[:2]) / max(1, p.tally[0] + p.tally[1]) for p in multi]),
                                 seed=seed) if multi else None
        reweighted, fit = None, None
        known = sum(1 for r in vote_rows if r["age_band"] != UNKNOWN or r["gender"] != UNKNOWN)
        if targets is not None and vote_rows and known:
            try:
                weights, fit = rake_users(vote_rows, targets)
            except ValueError as error:
                fit = {"error": str(error)}
            else:
                per_pair_weight = defaultdict(float)
                per_pair_sum = defaultdict(float)
                position = 0
                for i, scores in enumerate(pair_scores):
                    for s in scores:
                        per_pair_weight[i] += weights[position]
                        per_pair_sum[i] += weights[position] * s
                        position += 1
                used = [i for i in has_votes if per_pair_weight[i] > 0]
                reweighted = weighted_bootstrap_mean(
                    np.array([per_pair_sum[i] / per_pair_weight[i] for i in used]),
                    np.array([per_pair_weight[i] for i in used]), seed=seed)
        failures = sum(1 for _, v in judged if v.failed)
        out[name] = {
            "format": name, "pairs": len(judged), "clusters": len(clusters),
            "cluster_unit": "annotator" if any(p.annotator for p, _ in judged) else "pair",
            "votes": int(sum(pair_votes)), "judge_ties": sum(1 for _, v in judged if v.winner == "tie"),
            "judge_failures": failures,
            "failure_reasons": dict(Counter((v.verdict_ab.reason or v.verdict_ba.reason) for _, v in judged
                                            if v.failed).most_common(5)),
            "agreement": _interval_dict(overall), "verdict": chance_verdict(overall),
            "decided_agreement": _interval_dict(decided_interval), "decided_pairs": decided,
            "votes_agreement": _interval_dict(votes_raw) if votes_raw else None,
            "votes_agreement_reweighted": _interval_dict(reweighted) if reweighted else None,
            "raking": fit, "ages_not_in_target_bands": {str(k): n for k, n in unmapped_ages.most_common(10)},
            "human_ceiling": _interval_dict(ceiling) if ceiling else None,
            "_agreement": overall,
        }
    return out


def _fmt(interval: dict | None, digits: int = 3) -> str:
    if not interval or not interval.get("n") or not np.isfinite(interval["estimate"]):
        return "–"
    low, high = interval["low"], interval["high"]
    bounds = f" [{low:.{digits}f}, {high:.{digits}f}]" if np.isfinite(low) and np.isfinite(high) else ""
    return f"{interval['estimate']:.{digits}f}{bounds}"


def summary_rows(results: dict, judge: str, available: dict[str, int] | None = None, note: str = "") -> list[dict]:
    """The ZIPBench summary's rows for the judge against people: one per source format, or one saying why
    there is none."""
    if not results:
        return [{"method": "judge vs human choices", "group": "human preference pairs", "users": "0",
                 "judge agreement with humans": "–", "judge verdict": "–",
                 "note": note or "no preference pairs judged"}]
    from zipp_assets.zipbench.scoring import OFFLINE_JUDGE_LABEL, judge_is_clipscore

    label = f" ({OFFLINE_JUDGE_LABEL}: CLIPScore to the annotator's other choices)" if judge_is_clipscore(judge) \
        else ""
    rows = []
    for name, r in results.items():
        details = [f"{r['pairs']} pairs judged" + (f" of {available[name]}" if available and name in available
                                                   else ""),
                   f"{r['votes']} votes", f"judge ties {r['judge_ties']} (failures {r['judge_failures']})",
                   f"decided pairs {_fmt(r['decided_agreement'])} (Wilson)"]
        if r["votes_agreement"]:
            details.append(f"per vote {_fmt(r['votes_agreement'])}")
        if r["votes_agreement_reweighted"]:
            details.append(f"per vote IPF-reweighted {_fmt(r['votes_agreement_reweighted'])}")
        if r["human_ceiling"]:
            details.append(f"human ceiling (majority share) {_fmt(r['human_ceiling'])}")
        rows.append({"method": f"judge vs human choices ({name})", "group": "human preference pairs",
                     "users": str(r["clusters"]), "judge agreement with humans": _fmt(r["agreement"]),
                     "judge verdict": r["verdict"] + (label if r["verdict"] != "–" else ""),
                     "note": f"{judge}; intervals over {r['cluster_unit']}s; " + "; ".join(details)
                     + (f"; {note}" if note else "")})
    return rows
