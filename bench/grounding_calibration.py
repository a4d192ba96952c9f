"""The grounding check's two thresholds (`personas.grounding`), from pairs written for this and nothing else.

    ZIPP_MINILM_DIR=data/models/all-minilm-l6-v2 .venv/bin/python bench/grounding_calibration.py

Each pair is a persona claim and a subreddit name or a comment, related or not, written from general
knowledge of Reddit (real subreddit names, in the spellings Reddit uses: `personalfinance`,
`CampingandHiking`), never from a generated world's names or phrases. For each kind it prints every
pair's similarity, the threshold that separates the classes best (the midpoint of the widest gap among
the thresholds with the highest balanced accuracy) and that accuracy. `grounding.py` holds the
thresholds this printed; a change of encoder or of pairs needs a new run.
"""

import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zipp_assets.personas.grounding import COMMENT_THRESHOLD, COMMUNITY_THRESHOLD, SentenceEncoder, community_phrase  # noqa: E402

RELATED_COMMUNITIES = [
    ("nurse", "nursing"), ("software developer", "programming"), ("teacher", "Teachers"), ("chef", "Cooking"),
    ("truck driver", "Truckers"), ("photographer", "photography"), ("electrician", "electricians"),
    ("lawyer", "LawSchool"), ("pilot", "flying"), ("gardening", "gardening"), ("hiking", "CampingandHiking"),
    ("woodworking", "woodworking"), ("knitting", "knitting"), ("video games", "gaming"), ("astronomy", "Astronomy"),
    ("running", "running"), ("baking", "Baking"), ("cycling", "bicycling"), ("fishing", "Fishing"),
    ("personal finance", "personalfinance"), ("accountant", "Accounting"), ("mechanic", "MechanicAdvice"),
    ("firefighter", "Firefighting"), ("veterinarian", "Veterinary"), ("architect", "architecture"),
    ("musician", "WeAreTheMusicMakers"), ("painter", "painting"), ("soldier", "army"), ("farmer", "farming"),
    ("bird watching", "birding"), ("computer building", "buildapc"), ("astronaut", "space"),
]
UNRELATED_COMMUNITIES = [
    ("nurse", "woodworking"), ("software developer", "gardening"), ("teacher", "Fishing"), ("chef", "buildapc"),
    ("truck driver", "knitting"), ("photographer", "personalfinance"), ("electrician", "Baking"),
    ("lawyer", "running"), ("pilot", "aww"), ("gardening", "gaming"), ("hiking", "Accounting"),
    ("woodworking", "LawSchool"), ("knitting", "army"), ("video games", "Veterinary"), ("astronomy", "Cooking"),
    ("running", "electricians"), ("baking", "flying"), ("cycling", "Teachers"), ("fishing", "programming"),
    ("personal finance", "birding"), ("accountant", "CampingandHiking"), ("mechanic", "knitting"),
    ("firefighter", "photography"), ("veterinarian", "Truckers"), ("architect", "running"),
    ("musician", "personalfinance"), ("painter", "MechanicAdvice"), ("soldier", "Baking"), ("farmer", "gaming"),
    ("astronaut", "AskReddit"), ("nurse", "funny"), ("architect", "pics"), ("chef", "worldnews"),
    ("teacher", "movies"), ("astronaut", "Cooking"), ("photographer", "nba"),
]
COMMENTS = {
    "nurse": "Twelve hour shift on the ward again, my feet are killing me.",
    "electrician": "Rewired the whole panel today and it passed inspection.",
    "teacher": "Grading thirty essays tonight before class tomorrow.",
    "chef": "Service was slammed, we ran out of mise by eight.",
    "truck driver": "Eleven hours on I-80 today, the rig handled fine.",
    "photographer": "Shot this at f/2.8 with my 50mm at golden hour.",
    "gardening": "My tomatoes finally ripened after all that rain.",
    "running": "Finally broke 25 minutes on my 5k this morning.",
    "baking": "The sourdough starter is bubbling nicely now.",
    "fishing": "Caught a decent bass off the dock at dawn.",
    "knitting": "Finished the sweater, the cable pattern took weeks.",
    "video games": "Beat the final boss after forty attempts.",
    "pilot": "Logged my first solo cross-country flight today.",
    "lawyer": "Spent all day drafting a motion for the court.",
    "cycling": "Did a century ride this weekend, legs are toast.",
    "astronaut": "Training for the space station mission starts next month.",
}


def best_threshold(related: np.ndarray, unrelated: np.ndarray) -> tuple[float, float]:
    """The midpoint of the widest gap among thresholds of the highest balanced accuracy, and that accuracy."""
    scores = np.sort(np.concatenate([related, unrelated]))
    candidates = (scores[:-1] + scores[1:]) / 2

    def accuracy(t: float) -> float:
        return ((related >= t).mean() + (unrelated < t).mean()) / 2

    accuracies = np.array([accuracy(t) for t in candidates])
    best = np.flatnonzero(np.isclose(accuracies, accuracies.max()))
    gaps = scores[best + 1] - scores[best]
    return float(candidates[best[int(gaps.argmax())]]), float(accuracies.max())


def similarities(encoder: SentenceEncoder, pairs: list[tuple[str, str]]) -> np.ndarray:
    left = encoder.encode([a for a, _ in pairs])
    right = encoder.encode([b for _, b in pairs])
    return (left * right).sum(axis=1)


def main() -> None:
    encoder = SentenceEncoder(os.environ.get("ZIPP_MINILM_DIR", "data/models/all-minilm-l6-v2"))
    claims = list(COMMENTS)
    kinds = {
        "community": ([(c, community_phrase(s)) for c, s in RELATED_COMMUNITIES],
                      [(c, community_phrase(s)) for c, s in UNRELATED_COMMUNITIES], COMMUNITY_THRESHOLD),
        # Each claim against its own comment, and against the comment of the claim after it (unrelated).
        "comment": ([(c, COMMENTS[c]) for c in claims],
                    [(c, COMMENTS[claims[(i + 1) % len(claims)]]) for i, c in enumerate(claims)], COMMENT_THRESHOLD),
    }
    for kind, (related, unrelated, in_use) in kinds.items():
        r, u = similarities(encoder, related), similarities(encoder, unrelated)
        threshold, accuracy = best_threshold(r, u)
        print(f"\n{kind}: {len(related)} related pairs, {len(unrelated)} unrelated")
        for label, pairs, sims in (("related", related, r), ("unrelated", unrelated, u)):
            for (a, b), s in sorted(zip(pairs, sims), key=lambda x: x[1]):
                print(f"  {label:9s} {s:.3f}  {a!r} ~ {b!r}")
        in_use_accuracy = ((r >= in_use).mean() + (u < in_use).mean()) / 2
        print(f"{kind}: best threshold {threshold:.3f} (balanced accuracy {accuracy:.3f}); in grounding.py "
              f"{in_use:.2f} (balanced accuracy {in_use_accuracy:.3f}); related min {r.min():.3f}, "
              f"unrelated max {u.max():.3f}")


if __name__ == "__main__":
    main()
