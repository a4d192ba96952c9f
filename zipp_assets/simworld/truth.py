"""The planted truth of a world as tables: for evaluation only, never read by the pipeline.

users: who each user is (communities, demographics, traits), their visual taste with the parts it
is made of (community mixture, personal component, the share between them) and the words
`taste_words` gives it in the world's phrasebook. communities: themes, subreddits, styles, demographic mixes. subreddits:
every subreddit with its community and kind (theme, generic, locale, profession, hobby). bots.
"""

from __future__ import annotations

import pyarrow as pa

from zipp_assets.simworld import taste_words
from zipp_assets.simworld.injection import CLAIM, injected_users
from zipp_assets.simworld.population import User, World
from zipp_assets.simworld.render import Style
from zipp_assets.simworld.traits import TRAIT_KINDS

STYLE_FIELDS = ("hue", "saturation", "brightness", "contrast", "pattern", "frequency")


def _style_columns(prefix: str, styles: list[Style]) -> dict[str, list]:
    return {f"{prefix}{name}": [getattr(s, name) for s in styles] for name in STYLE_FIELDS}


def _users(world: World) -> pa.Table:
    humans: list[User] = [u for u in world.users if not u.is_bot]
    words = [taste_words.labels(u.taste, world.phrasebook) for u in humans]
    columns = {
        "author": [u.name for u in humans],
        "author_fullname": [u.fullname for u in humans],
        "communities": [u.communities for u in humans],
        "community_weights": [u.weights.tolist() for u in humans],
        "primary_community": [u.communities[0] for u in humans],
        "age_band": [u.age_band for u in humans],
        "gender": [u.gender for u in humans],
        "region": [u.region for u in humans],
        "activity": [u.activity for u in humans],
        "age": [u.age for u in humans],
        "locale": [u.locale for u in humans],
        "profession": [u.profession for u in humans],
        "hobby": [u.hobby for u in humans],
        "visual_interest": [u.visual_interest for u in humans],
        "trait_subreddits": [u.trait_subreddits for u in humans],
        "taste_community": [u.taste_community for u in humans],
        "taste_aligned_share": [world.config.taste_aligned_share] * len(humans),
        "personal_share": [world.config.personal_share] * len(humans),
        **_style_columns("taste_", [u.taste for u in humans]),
        **_style_columns("community_taste_", [u.community_taste for u in humans]),
        **_style_columns("personal_taste_", [u.personal_taste for u in humans]),
        "palette_word": [w["palette"] for w in words],
        "lighting_word": [w["lighting"] for w in words],
        "mood_word": [w["mood"] for w in words],
        "texture_word": [w["texture"] for w in words],
        "look_phrase": [w["look"] for w in words],
    }
    if world.config.injection_share:  # only where injections were planted: the default world's truth is unchanged
        planted = injected_users([u.index for u in humans], world.config.injection_share, world.config.seed)
        columns["injected_claim"] = [CLAIM if u.index in planted else None for u in humans]
        columns["injection_texts"] = [planted.get(u.index, []) for u in humans]
        schema_extra = {"injection_texts": pa.list_(pa.string()), "injected_claim": pa.string()}
    else:
        schema_extra = {}
    schema = {"communities": pa.list_(pa.int64()), "community_weights": pa.list_(pa.float64()),
              "trait_subreddits": pa.list_(pa.string()), **schema_extra}
    return pa.table({name: pa.array(values, type=schema.get(name)) for name, values in columns.items()})


def truth_tables(world: World) -> dict[str, pa.Table]:
    """Planted truth: for evaluation only, never read by the pipeline."""
    cs = world.communities
    communities = pa.table(
        {
            "community": [c.index for c in cs],
            "theme": [c.theme for c in cs],
            "subreddits": [c.subreddits for c in cs],
            **{name: [getattr(c.style, name) for c in cs] for name in STYLE_FIELDS},
            "age_band_mix": [c.demographics["age_band"] for c in cs],
            "gender_mix": [c.demographics["gender"] for c in cs],
            "region_mix": [c.demographics["region"] for c in cs],
            "visual_interest": [c.visual_interest for c in cs],
        }
    )
    names = list(world.subreddit_community)
    kinds = [world.subreddit_kind[s] for s in names]
    subreddits = pa.table(
        {
            "subreddit": names,
            "subreddit_id": [world.subreddit_ids[s] for s in names],
            "community": [world.subreddit_community[s] for s in names],
            "kind": [kind for kind, _ in kinds],  # theme | generic | locale | profession | hobby
            "trait": pa.array([value if kind in TRAIT_KINDS else None for kind, value in kinds], type=pa.string()),
        }
    )
    bots = pa.table({"author": [u.name for u in world.users if u.is_bot]})
    return {"users": _users(world), "communities": communities, "subreddits": subreddits, "bots": bots}
