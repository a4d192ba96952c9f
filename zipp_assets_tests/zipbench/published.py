"""Small files written in each published layout, with the dirt the real ones carry.

The layouts are taken from the datasets' own cards and READMEs (see `loaders.formats`): the column names,
their dtypes (ZIP-Bench's float64 seed and steps with NaN where missing, Pick-a-Pic's float labels and
binary jpg_0/jpg_1, Rapidata's image features and detailed_results JSON string), PIP's one JSON Lines
file per user with `query` on the last two rows, and a Civitai gallery scrape in JSON Lines under .txt.
Each writer returns what a correct loader must make of the file, so tests compare against it.
"""

from __future__ import annotations

import io
import json
import math
from datetime import datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image


def png(colour: tuple[int, int, int], size: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg(colour: tuple[int, int, int], size: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="JPEG")
    return buffer.getvalue()


# --- ZIP-Bench: Parquet as the Hugging Face dataset publishes it ------------------------------------

def zipbench_rows() -> list[dict]:
    base = {"modelVersionId": 128713, "postId": 1, "hash": "U5AB", "nsfw": 0, "browsingLevel": 1, "type": "image",
            "height": 768, "width": 512, "seed": 1234567.0, "steps": 30.0, "prompt": "a lighthouse at dusk, 8k",
            "negativePrompt": "blurry, lowres", "sampler": "DPM++ 2M Karras", "cfgScale": 7.0, "clipSkip": 2.0,
            "hiresUpscale": math.nan, "hiresUpscaler": None, "denoisingStrength": math.nan,
            "createdAt": "2024-03-01T10:00:00.000Z", "comfy": None, "cryCount": 0, "laughCount": 0, "likeCount": 3,
            "dislikeCount": 0, "heartCount": 1, "commentCount": 0, "userHash": "9f8e", "civitai_username": "pixel.fox",
            "reddit_username": "Some_Redditor-1"}
    return [
        {**base, "imageId": 1},
        # NaN where missing: seed and steps are float64 in the card; no negative prompt
        {**base, "imageId": 2, "prompt": "a fox in the snow", "seed": math.nan, "steps": math.nan,
         "negativePrompt": None, "sampler": None},
        # a seed above 2^53, as a float: kept, its low bits lost
        {**base, "imageId": 3, "prompt": "a red bicycle", "seed": float(2**60 + 12345), "cfgScale": 4.5},
        # another user; an unparsed A1111 block left inside the negative prompt
        {**base, "imageId": 4, "prompt": "night market", "reddit_username": "other_user", "seed": math.nan,
         "negativePrompt": "ugly\nSteps: 25, Sampler: Euler a, CFG scale: 6, Seed: 99, Size: 640x640"},
        # the same image twice (a duplicate record)
        {**base, "imageId": 1},
        # bad rows: no Reddit user (the link is what ZIP-Bench is), a width that is no size
        {**base, "imageId": 6, "reddit_username": None},
        {**base, "imageId": 7, "width": -512},
    ]


def write_zipbench(path: Path) -> Path:
    pq.write_table(pa.Table.from_pandas(pd.DataFrame(zipbench_rows()), preserve_index=False), path)
    return path


ZIPBENCH_EXPECTED = {"loaded": 4, "rejected": {("reddit_username", "missing required value"): 1,
                                               ("width", "integer out of range"): 1}, "duplicates": 1}


# --- PIP of Tailored Visions: a folder of per-user JSON Lines files ---------------------------------

def pip_user_rows(user: str, n: int, user_id_as_int: bool = False) -> list[dict]:
    rows = []
    for i in range(n):
        rows.append({"result_url": f"https://cdn.example/{user}/{i}.png",
                     "prompt": f"prompt {i} of {user}, a castle on a cliff, oil painting, dramatic light",
                     "resolution_power": 1.0 if i % 2 else math.nan, "NSFW": bool(i % 3 == 0) if i % 2 else 0.0,
                     "proportion": 1.5, "user_id": int(user) if user_id_as_int else user, "id": 100 * i + 7})
    for row in rows[-2:]:  # the dataset's processing adds the shortened prompt to the test rows
        row["query"] = f"castle {row['id']}"
    return rows


def write_pip_folder(folder: Path, users: dict[str, int] | None = None, bad: bool = True,
                     user_id_as_int: bool = True) -> Path:
    """One file per user, named by the user id (with .jsonl, or none at all); NaN and mixed int/float values;
    a README that is not data; with `bad`, one row naming another user and one without a prompt."""
    folder.mkdir(parents=True, exist_ok=True)
    users = users or {"1001": 5, "1002": 4, "1003": 3}
    for k, (user, n) in enumerate(users.items()):
        rows = pip_user_rows(user, n, user_id_as_int=user_id_as_int and user.isdigit())
        if bad and k == 0:
            rows[1]["user_id"] = "9999"  # a row of another user in this user's file
            rows[2]["prompt"] = None  # no prompt
        name = f"{user}.jsonl" if k != 1 else user  # a file with no extension at all
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "README.md").write_text("# PIP\n")
    return folder


# --- Pick-a-Pic v2: Parquet with the images' bytes ---------------------------------------------------

RED, GREEN, BLUE, GREY = (220, 30, 30), (30, 200, 30), (30, 30, 220), (128, 128, 128)


def pickapic_rows() -> list[dict]:
    def row(ranking, user, caption, uid0, uid1, l0, l1, best, **extra):
        return {"are_different": True, "best_image_uid": best, "caption": caption,
                "created_at": datetime(2023, 4, 1, 12, ranking % 60), "has_label": True, "image_0_uid": uid0,
                "image_0_url": f"https://pickapic.example/{uid0}.png", "image_1_uid": uid1,
                "image_1_url": f"https://pickapic.example/{uid1}.png", "jpg_0": jpeg(RED), "jpg_1": jpeg(BLUE),
                "label_0": l0, "label_1": l1, "model_0": "sdxl", "model_1": "sd-2.1", "ranking_id": ranking,
                "user_id": user, "num_example_per_prompt": 1, "__index_level_0__": ranking, **extra}
    return [
        row(1, 11, "a red apple", "u-a1", "u-b1", 1.0, 0.0, "u-a1"),
        row(2, 11, "a red car", "u-a2", "u-b2", 0.0, 1.0, "u-b2"),
        row(3, 12, "a red kite", "u-a3", "u-b3", 0.5, 0.5, ""),  # a tie
        row(4, 12, "a red boat", "u-a4", "u-b4", 1.0, 0.0, "u-a4"),
        row(4, 12, "a red boat", "u-a4", "u-b4", 1.0, 0.0, "u-a4"),  # the same vote twice
        row(5, 13, "unlabelled", "u-a5", "u-b5", 0.0, 0.0, "", has_label=False),
        row(6, 13, "same image", "u-a6", "u-b6", 1.0, 0.0, "u-a6", are_different=False),
        row(7, 13, "bad labels", "u-a7", "u-b7", 0.7, 0.3, "u-a7"),
        row(8, 13, "wrong best", "u-a8", "u-b8", 1.0, 0.0, "u-b8"),
    ]


def write_pickapic(path: Path) -> Path:
    pq.write_table(pa.Table.from_pylist(pickapic_rows()), path)
    return path


PICKAPIC_EXPECTED = {"loaded": 4, "skipped": 2, "duplicates": 1,
                     "rejected": {("label_0", "labels inconsistent"): 1,
                                  ("best_image_uid", "best image disagrees with the labels"): 1}}


def write_pickapic_jsonl(path: Path) -> Path:
    """The same layout exported to JSON Lines: labels as ints 1/0 (mixed int/float), no image bytes."""
    rows = []
    for r in pickapic_rows()[:4]:
        r = {k: v for k, v in r.items() if k not in ("jpg_0", "jpg_1")}
        r["created_at"] = r["created_at"].isoformat()
        if r["label_0"] in (0.0, 1.0):
            r["label_0"], r["label_1"] = int(r["label_0"]), int(r["label_1"])
        rows.append(r)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# --- Rapidata: Parquet with image features and per-annotator detailed_results ------------------------

def _annotator(voted_for: str, age="25-34", gender="Female", country="US", score=0.8) -> dict:
    return {"votedFor": voted_for, "userDetails": {"country": country, "language": "en", "userScore": score,
                                                  "age": age, "gender": gender, "occupation": "Healthcare"}}


def rapidata_rows() -> list[dict]:
    def row(n, prompt, v1, v2, details, **extra):
        return {"prompt": prompt, "image1": {"bytes": png(GREEN), "path": f"flux_{n}.png"},
                "image2": {"bytes": png(GREY), "path": f"dalle3_{n}.png"}, "votes_image1": v1, "votes_image2": v2,
                "model1": "flux", "model2": "dalle3",
                "detailed_results": details if isinstance(details, (str, type(None))) else json.dumps(details),
                "image1_path": f"flux_{n}.png", "image2_path": f"dalle3_{n}.png", **extra}
    return [
        row(1, "a green meadow", 2, 1, [_annotator("flux_1.png"), _annotator("flux_1.png", age="45-54", gender="Male"),
                                         _annotator("dalle3_1.png", age="Unknown", gender="Other")]),
        # votes named by model; a band cut another way; counts that disagree with the entries
        row(2, "a green frog", 1, 1, [_annotator("dalle3", age="18-29"), _annotator("dalle3", gender="Male")]),
        # no detailed_results: votes from the counts, no demographics
        row(3, "a green bottle", 0, 2, None),
        # bad rows: a vote naming neither image; detailed_results that is not JSON
        row(4, "a green hat", 1, 0, [_annotator("midjourney_4.png")]),
        row(5, "a green tree", 1, 0, "[{not json"),
    ]


def write_rapidata(path: Path) -> Path:
    pq.write_table(pa.Table.from_pylist(rapidata_rows()), path)
    return path


RAPIDATA_EXPECTED = {"loaded_votes": 3 + 2 + 2, "pairs": 3,
                     "rejected": {("detailed_results", "vote names neither image"): 1,
                                  ("detailed_results", "malformed JSON"): 1}}


# --- a Civitai gallery scrape: image API records in JSON Lines under .txt ----------------------------

def civitai_records() -> list[dict]:
    def record(i, meta, **extra):
        return {"id": i, "url": f"https://image.civitai.com/x/{i}.jpeg", "nsfw": False, "width": 512, "height": 768,
                "createdAt": "2024-05-02T08:00:00.000Z", "username": "gallery_owner", "meta": meta, **extra}
    full = {"prompt": "a tabby cat, film grain", "negative_prompt": "blurry", "seed": 42, "steps": 28,
            "sampler": "Euler a", "cfg_scale": 7, "model": "dreamshaper_8"}
    return [
        record(1, full),
        record(2, {**full, "prompt": "a sailboat", "cfg_scale": 6.5, "seed": None, "sampler": None}),  # nulls
        record(3, {**full, "prompt": "an old tram", "seed": None, "steps": None, "sampler": None, "cfg_scale": None,
                   "negative_prompt": "lowres, bad hands\nSteps: 30, Sampler: DPM++ 2M Karras, CFG scale: 7.5, "
                                      "Seed: 3141592, Size: 832x1216, Model: juggernautXL"}),
        record(1, full),  # a duplicate record
        record(5, None),  # no generation data
        record(6, {**full, "prompt": "a lynx"}, width=None, height=None, nsfw=None),
        record(7, {**full, "seed": "abc"}),  # bad: a seed that is no number
        record(8, {**full}, width="wide"),  # bad: a width that is no number
    ]


def write_civitai(path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in civitai_records()))
    return path


CIVITAI_EXPECTED = {"loaded": 4, "skipped": 1, "duplicates": 1,
                    "rejected": {("seed", "not an integer"): 1, ("width", "not an integer"): 1}}
