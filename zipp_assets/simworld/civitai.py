"""Civitai-like generation histories for a share of the world's image-posting users, written in the
row format of ZIPBench's released data (one JSON object a line: prompt, negativePrompt, url, seed,
steps, sampler, cfgScale, width, height, civitai_username, reddit_username).

A prompt is what real Civitai prompts look like: a subject first, from one of eight subject
categories (the user leans towards some, by a Dirichlet draw), then now and then style phrases and
generic quality tags. The style phrases come from the user's own taste through `taste_words`, in the
phrasebook's words and prompt forms, with
the same per-image variation their posted images have, so a user near a level boundary sometimes
names the neighbouring level. Which users have a history is the file itself (reddit_username); the
civitai_username is a separate handle, not derived from the Reddit name.

Every draw here comes from random streams of its own ([seed, 4] for who links an account,
[seed, 5, user index] for each history), so the dumps, images and truth are the same with or
without histories. Nothing in the pipeline imports this module.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from zipp_assets.simworld.content import SYLLABLES
from zipp_assets.simworld.phrasebook import ASPECTS, Phrasebook
from zipp_assets.simworld.population import User, World
from zipp_assets.simworld.taste_words import all_phrases, labels

HISTORY_FILE = Path("zipbench") / "civitai_generations.jsonl"  # under the raw folder
LINK_STREAM, HISTORY_STREAM = 4, 5  # the world's other streams are 0 (people), 1 (months), 2 (traits), 3 (taste)

# Subject phrases by category, written for the world; no taste word appears in them.
SUBJECTS: dict[str, tuple[str, ...]] = {
    "portrait": ("portrait of an elderly sailor with a beard", "close-up portrait of a woman with freckles",
                 "portrait of a knight without his helmet", "a young man in a wool coat, half body"),
    "street": ("a crowded alley with paper lanterns", "a rainy crosswalk with umbrellas",
               "a corner shop with bicycles outside", "an old tram on a hillside street"),
    "landscape": ("a fjord between steep cliffs", "a field of lavender under a big sky",
                  "a frozen waterfall in a valley", "sand dunes stretching to the horizon"),
    "animal": ("a lynx on a mossy branch", "a wolf howling on a ridge", "a tabby kitten in a basket",
               "an owl perched on a fence post"),
    "food": ("a bowl of pho with herbs", "a slice of cherry pie on a plate",
             "sushi on a wooden board", "a cup of cappuccino with latte art"),
    "architecture": ("a gothic cathedral facade", "a wooden cabin by a lake", "a brutalist concrete tower",
                     "a tiled courtyard with a fountain"),
    "product": ("a leather backpack, product photo", "a perfume bottle on a pedestal",
                "a pair of headphones on a desk", "a vintage camera, studio shot"),
    "fantasy": ("an elven city in giant trees", "a knight facing a dragon", "a witch's cottage in a swamp",
                "an airship above the clouds"),
}
SUBJECT_CATEGORIES = tuple(SUBJECTS)
QUALITY_TAGS = ("masterpiece", "best quality", "highly detailed", "8k", "4k", "ultra detailed", "sharp focus",
                "trending on artstation")
NEGATIVE_PROMPTS = (
    "lowres, bad anatomy, bad hands, text, error, missing fingers, worst quality, low quality, jpeg artifacts",
    "blurry, watermark, signature, deformed, ugly, extra limbs",
    "worst quality, low quality, normal quality, lowres, watermark",
)
SAMPLERS = ("Euler a", "DPM++ 2M Karras", "DPM++ SDE Karras", "Euler", "DDIM", "UniPC")
SIZES = ((512, 512), (512, 768), (768, 512), (1024, 1024), (832, 1216), (1216, 832))
STEPS = (20, 25, 28, 30, 35, 40)
CFG_SCALES = (5.0, 6.0, 7.0, 7.5, 8.0, 9.0)
# Choices, not measurements: how many style phrases and quality tags a prompt carries, how often a
# user strays from their usual settings, how many users keep no negative prompt.
STYLE_COUNT_SHARES = (0.15, 0.35, 0.35, 0.15)  # 0..3 style phrases
QUALITY_COUNT_SHARES = (0.25, 0.35, 0.25, 0.15)  # 0..3 quality tags
SETTING_CHANGE_RATE = 0.2
NO_NEGATIVE_SHARE = 0.3
SUBJECT_CONCENTRATION = 1.0  # Dirichlet concentration of a user's subject leanings


def style_clauses(book: Phrasebook) -> dict[str, tuple[str, str]]:
    """Every style phrase a prompt can carry -> (aspect, label): what evaluation looks for in prompts.
    How a label reads in a prompt is the phrasebook's `taste.prompt_forms`."""
    forms = book.taste["prompt_forms"]
    return {forms[aspect].format(label=label): (aspect, label) for aspect, label in all_phrases(book).values()}


def linked_users(world: World) -> list[User]:
    """Image-posting users with a linked Civitai account: each with chance `prompt_history_share`."""
    humans = [u for u in world.users if not u.is_bot]
    draws = np.random.default_rng([world.config.seed, LINK_STREAM]).random(len(humans))
    share = world.config.prompt_history_share
    return [u for u, draw in zip(humans, draws) if draw < share and u.index in world.image_posters]


def _handle(rng: np.random.Generator, used: set[str]) -> str:
    while True:
        stem = "".join(rng.choice(SYLLABLES, size=int(rng.integers(2, 4))))
        handle = stem + str(rng.choice(["_art", "_ai", "diffusion", "_gen", "_"])) + str(rng.integers(1, 999))
        if handle not in used:
            used.add(handle)
            return handle


def _prompt(user: User, rng: np.random.Generator, leanings: np.ndarray, book: Phrasebook) -> str:
    category = SUBJECT_CATEGORIES[int(rng.choice(len(SUBJECT_CATEGORIES), p=leanings))]
    options = SUBJECTS[category]
    clauses = [options[int(rng.integers(len(options)))]]
    words = labels(user.taste.jittered(rng), book)  # the same per-image variation their images have
    n_style = int(rng.choice(len(STYLE_COUNT_SHARES), p=STYLE_COUNT_SHARES))
    for aspect in rng.choice(list(ASPECTS), size=n_style, replace=False):
        clauses.append(book.taste["prompt_forms"][str(aspect)].format(label=words[str(aspect)]))
    n_tags = int(rng.choice(len(QUALITY_COUNT_SHARES), p=QUALITY_COUNT_SHARES))
    clauses += [str(tag) for tag in rng.choice(QUALITY_TAGS, size=n_tags, replace=False)]
    return ", ".join(clauses)


def _usual(rng: np.random.Generator, options: tuple, usual: int):
    """The user's usual setting, or now and then another one."""
    return options[usual if rng.random() >= SETTING_CHANGE_RATE else int(rng.integers(len(options)))]


def user_history(world: World, user: User, used_handles: set[str]) -> list[dict]:
    """One user's generation records, in ZIPBench's released row format."""
    rng = np.random.default_rng([world.config.seed, HISTORY_STREAM, user.index])
    handle = _handle(rng, used_handles)
    leanings = rng.dirichlet(np.full(len(SUBJECT_CATEGORIES), SUBJECT_CONCENTRATION))
    negative = None if rng.random() < NO_NEGATIVE_SHARE else NEGATIVE_PROMPTS[int(rng.integers(len(NEGATIVE_PROMPTS)))]
    usual = {name: int(rng.integers(len(options))) for name, options in
             (("sampler", SAMPLERS), ("size", SIZES), ("steps", STEPS), ("cfg", CFG_SCALES))}
    low, high = world.config.prompts_per_user
    rows = []
    for _ in range(int(rng.integers(low, high + 1))):
        width, height = _usual(rng, SIZES, usual["size"])
        image_id = int(rng.integers(10**6, 10**8))
        rows.append({
            "prompt": _prompt(user, rng, leanings, world.phrasebook),
            "negativePrompt": negative,
            "url": f"https://image.civitai.com/simworld/{rng.bytes(8).hex()}/width={width}/{image_id}.jpeg",
            "seed": int(rng.integers(0, 2**32)),
            "steps": _usual(rng, STEPS, usual["steps"]),
            "sampler": _usual(rng, SAMPLERS, usual["sampler"]),
            "cfgScale": _usual(rng, CFG_SCALES, usual["cfg"]),
            "width": width,
            "height": height,
            "civitai_username": handle,
            "reddit_username": user.name,
        })
    return rows


def write_generation_histories(world: World, path: Path) -> tuple[int, int]:
    """Write every linked user's history to `path` as JSONL, atomically; return (users, rows). With
    no linked user no file is left there, so a raw folder never keeps another config's histories."""
    path = Path(path)
    users = linked_users(world)
    if not users:
        path.unlink(missing_ok=True)
        return 0, 0
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    used_handles: set[str] = set()
    rows = 0
    with open(tmp, "w", encoding="utf-8") as out:
        for user in users:
            history = user_history(world, user, used_handles)
            out.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in history)
            rows += len(history)
    os.replace(tmp, path)
    return len(users), rows
