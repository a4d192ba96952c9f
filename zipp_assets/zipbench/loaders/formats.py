"""The published formats, one reader each, and how a file's columns name its format.

| name            | what                                                   | table            |
|-----------------|--------------------------------------------------------|------------------|
| zipbench        | ZIP-Bench: the ZIPP paper's Civitai rows, Reddit-linked | generations      |
| civitai-images  | Civitai image API records (`meta` holds the prompt)     | generations      |
| pip             | PIP of Tailored Visions: one JSON Lines file per user   | prompt_histories |
| pickapic-v2     | Pick-a-Pic v2: one user's choice between two images     | preferences      |
| rapidata        | Rapidata preference sets: per-annotator votes           | preferences      |

A reader gets one file's rows and reports each as loaded (a table row, or several: a Rapidata pair is
one row per vote), rejected (a bad value: file, row, field, reason), skipped (a valid row the
benchmark cannot use, such as Pick-a-Pic's unlabelled pairs), or a duplicate of an earlier record.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from zipp_assets.zipbench.loaders import values as v
from zipp_assets.zipbench.loaders.a1111 import parse_size, split_parameters
from zipp_assets.zipbench.loaders.containers import Unreadable, column_key
from zipp_assets.zipbench.loaders.tables import GENERATIONS, PREFERENCES, PROMPT_HISTORIES, RAW_CAP

MAX_SIZE = 1 << 16  # pixels; anything larger is garbage, not an image size


class BadRow(Exception):
    """A row that cannot be used: the field at fault (None for the row as a whole), the reason, its kind."""

    def __init__(self, field: str | None, reason: str, kind: str):
        super().__init__(reason)
        self.field, self.reason, self.kind = field, reason, kind


@functools.lru_cache(maxsize=1024)
def _alias_keys(aliases: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(map(column_key, aliases)))


class Fields:
    """A record's values by column key (case, '_', '-', '.' and spaces ignored). Two columns that name one
    field with two different values make the row bad when that field is asked for."""

    def __init__(self, record: dict):
        self.values: dict[str, list[tuple[str, object]]] = {}
        for name, value in record.items():
            self.values.setdefault(column_key(name), []).append((str(name), value))

    def has(self, *aliases: str) -> bool:
        return any(column_key(a) in self.values for a in aliases)

    def get(self, field_name: str, aliases: Sequence[str]) -> object:
        present = [(name, value) for key in _alias_keys(tuple(aliases))
                   for name, value in self.values.get(key, ()) if not v.is_missing(value)]
        if len(present) > 1 and len({json.dumps(value, sort_keys=True, default=str) for _, value in present}) > 1:
            raise BadRow(field_name, f"expected one column for it, got {[name for name, _ in present]} with "
                                     "different values", "two columns for one field")
        return present[0][1] if present else None


def parse(fields: Fields, name: str, aliases: Sequence[str], parser: Callable[[object], object],
          required: bool = False) -> object:
    value = fields.get(name, aliases)
    try:
        result = parser(value)
    except v.BadValue as bad:
        raise BadRow(name, bad.message, bad.kind) from None
    if result is None and required:
        raise BadRow(name, f"expected a value, got none (missing or empty; columns: {', '.join(aliases)})",
                     "missing required value")
    return result


def raw_text(record: object) -> str:
    if isinstance(record, Unreadable):
        record = record.raw
    if isinstance(record, dict):
        record = {k: (f"<{len(x)} bytes>" if isinstance(x, (bytes, bytearray)) else x) for k, x in record.items()}
    text = record if isinstance(record, str) else json.dumps(record, default=str, ensure_ascii=False)
    return v.clean_text(text, RAW_CAP)


@dataclass
class FileContext:
    """What a reader reports into, for one file; the loader gathers these over a folder."""

    source_file: str
    format_name: str
    row_word: str
    on_bad_row: str  # "raise" or "skip"
    error: Callable[[int, str | None, str], Exception]  # (row, field, reason) -> the exception to raise
    seen: dict  # duplicate keys -> (file, row), shared over the files of one load
    rows: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    duplicates: list[dict] = field(default_factory=list)
    notes: dict[str, int] = field(default_factory=dict)
    records: int = 0

    def emit(self, number: int, row: dict) -> None:
        self.rows.append({"source_file": self.source_file, "source_row": number, "format": self.format_name, **row})

    def reject(self, number: int, record: object, bad: BadRow) -> None:
        if self.on_bad_row == "raise":
            raise self.error(number, bad.field, bad.reason)
        self.rejected.append({"source_file": self.source_file, "source_row": number, "field": bad.field,
                              "kind": bad.kind, "reason": bad.reason, "raw": raw_text(record)})

    def skip(self, number: int, reason: str) -> None:
        self.skipped.append({"source_file": self.source_file, "source_row": number, "reason": reason})

    def is_duplicate(self, number: int, key: str | None) -> bool:
        """Whether `key` was loaded before in this load (then recorded as a duplicate of the first)."""
        if key is None:
            return False
        first = self.seen.get(key)
        if first is None:
            self.seen[key] = (self.source_file, number)
            return False
        self.duplicates.append({"source_file": self.source_file, "source_row": number, "key": key,
                                "first_file": first[0], "first_row": first[1]})
        return True

    def note(self, message: str, count: int = 1) -> None:
        self.notes[message] = self.notes.get(message, 0) + count


def _object(record: object) -> dict:
    if isinstance(record, Unreadable):
        raise BadRow(None, record.reason, record.kind)
    if not isinstance(record, dict):
        raise BadRow(None, f"expected an object, got {v.type_name(record)} {v.shown(record)}", "not an object")
    return record


class Format:
    name: str
    title: str
    table: str
    source: str  # where the layout is published
    required: tuple[str, ...]  # columns every file of the format has (detection)
    any_of: tuple[str, ...] = ()  # and at least one of these
    columns: tuple[str, ...] = ()  # every column the reader reads (Parquet reads only these)
    skip_columns: tuple[str, ...] = ()  # columns never read (image bytes)

    def matches(self, keys: set[str]) -> bool:
        return all(column_key(c) in keys for c in self.required) and (
            not self.any_of or any(column_key(c) in keys for c in self.any_of))

    def missing(self, keys: set[str]) -> list[str]:
        """What a file lacks to be this format, in words."""
        lacking = [c for c in self.required if column_key(c) not in keys]
        if self.any_of and not any(column_key(c) in keys for c in self.any_of):
            lacking.append("one of " + "/".join(self.any_of))
        return lacking

    def wanted(self, columns: Sequence[str]) -> Callable[[str], bool]:
        known = {column_key(c) for c in self.columns}
        skip = {column_key(c) for c in self.skip_columns}
        return lambda column: column_key(column) in known and column_key(column) not in skip

    def read(self, ctx: FileContext, rows: Iterable[tuple[int, object]], file_stem: str) -> None:
        raise NotImplementedError


# --- generations -------------------------------------------------------------------------------

_GEN_COMMON = {
    "negative_prompt": ("negativePrompt", "negative_prompt"),
    "url": ("url",),
    "seed": ("seed",),
    "steps": ("steps",),
    "sampler": ("sampler",),
    "cfg_scale": ("cfgScale", "cfg_scale", "cfg"),
    "width": ("width",),
    "height": ("height",),
    "model": ("model", "Model"),
}


def _settings(fields: Fields, ctx: FileContext) -> dict:
    """Prompt settings shared by the generation formats; a float seed of 2^53 or more is kept and noted."""
    seed_value = fields.get("seed", _GEN_COMMON["seed"])
    try:
        seed, exact = v.seed(seed_value)
    except v.BadValue as bad:
        raise BadRow("seed", bad.message, bad.kind) from None
    return {
        "negative_prompt": parse(fields, "negative_prompt", _GEN_COMMON["negative_prompt"], v.raw_text),
        "url": parse(fields, "url", _GEN_COMMON["url"], v.text(v.URL_CAP)),
        "seed": seed, "seed_exact": None if seed is None else exact,
        "steps": parse(fields, "steps", _GEN_COMMON["steps"], v.integer(1, 10_000)),
        "sampler": parse(fields, "sampler", _GEN_COMMON["sampler"], v.label),
        "cfg_scale": parse(fields, "cfg_scale", _GEN_COMMON["cfg_scale"], v.number(0.0, 1000.0)),
        "width": parse(fields, "width", _GEN_COMMON["width"], v.integer(1, MAX_SIZE)),
        "height": parse(fields, "height", _GEN_COMMON["height"], v.integer(1, MAX_SIZE)),
        "model": parse(fields, "model", _GEN_COMMON["model"], v.label),
    }


_BLOCK_FIELDS = {"Steps": ("steps", v.integer(1, 10_000)), "Sampler": ("sampler", v.label),
                 "CFG scale": ("cfg_scale", v.number(0.0, 1000.0)), "Model": ("model", v.label)}


def _fold_a1111(row: dict, ctx: FileContext) -> None:
    """An unparsed A1111 parameter block inside the negative prompt: cut it off the negative prompt and
    take from it the settings the record lacks; where both say, the record's own field is kept."""
    negative = row.get("negative_prompt")
    if negative:
        negative, params = split_parameters(negative)
        if params:
            ctx.note("an A1111 parameter block inside negative_prompt was split off and parsed")
        taken: dict[str, object] = {}
        for name, (column, parser) in _BLOCK_FIELDS.items():
            if name in params:
                try:
                    taken[column] = parser(params[name])
                except v.BadValue:
                    ctx.note(f"an A1111 block value could not be read ({name}), ignored")
        if "Seed" in params:
            try:
                taken["seed"] = v.seed(params["Seed"])[0]
            except v.BadValue:
                ctx.note("an A1111 block value could not be read (Seed), ignored")
        size = parse_size(params.get("Size"))
        if size and all(1 <= s <= MAX_SIZE for s in size):
            taken["width"], taken["height"] = size
        for column, value in taken.items():
            if value is None:
                continue
            if row.get(column) is None:
                row[column] = value
                if column == "seed":
                    row["seed_exact"] = True
                ctx.note(f"{column} taken from the A1111 block (the record had none)")
            elif row[column] != value:
                ctx.note(f"{column} in the A1111 block differs from the record's own (the record's kept)")
        row["negative_prompt"] = v.clean_text(negative, v.PROMPT_CAP) or None
    elif negative is not None:
        row["negative_prompt"] = None


def _note_seed(row: dict, ctx: FileContext) -> None:
    if row.get("seed_exact") is False:
        ctx.note("seed of 2^53 or more read from a float: kept, but its low bits are lost (seed_exact false)")


class ZipBench(Format):
    name = "zipbench"
    title = "ZIP-Bench (the ZIPP paper's Civitai generation rows linked to Reddit users)"
    table = GENERATIONS
    source = "huggingface.co/datasets/Harini/Zip-Bench (dataset card: features and dtypes)"
    required = ("prompt", "reddit_username")
    columns = ("imageId", "id", "prompt", "reddit_username", "civitai_username", "userHash", "createdAt", "nsfw",
               *(a for aliases in _GEN_COMMON.values() for a in aliases))

    def read(self, ctx, rows, file_stem):
        for number, record in rows:
            ctx.records += 1
            try:
                fields = Fields(_object(record))
                row = {"record_id": parse(fields, "record_id", ("imageId", "id"), v.record_id),
                       "prompt": parse(fields, "prompt", ("prompt",), v.text(), required=True),
                       **_settings(fields, ctx),
                       "nsfw": parse(fields, "nsfw", ("nsfw",), v.nsfw),
                       "created_at": parse(fields, "created_at", ("createdAt", "created_at"), v.timestamp),
                       "reddit_username": parse(fields, "reddit_username", ("reddit_username",), v.user_name,
                                                required=True),
                       "civitai_username": parse(fields, "civitai_username", ("civitai_username",), v.label),
                       "user_hash": parse(fields, "user_hash", ("userHash",), v.label)}
            except BadRow as bad:
                ctx.reject(number, record, bad)
                continue
            if ctx.is_duplicate(number, f"zipbench image {row['record_id']}" if row["record_id"] else None):
                continue
            _fold_a1111(row, ctx)
            _note_seed(row, ctx)
            ctx.emit(number, row)


class CivitaiImages(Format):
    name = "civitai-images"
    title = "Civitai image API records (JSON Lines under any extension; the prompt is in `meta`)"
    table = GENERATIONS
    source = "Civitai REST API, GET /api/v1/images (id, url, width, height, nsfw, createdAt, username, meta)"
    required = ("meta",)
    any_of = ("url", "id")
    columns = ("id", "url", "nsfw", "nsfwLevel", "width", "height", "createdAt", "username", "baseModel", "meta",
               "reddit_username")

    def read(self, ctx, rows, file_stem):
        for number, record in rows:
            ctx.records += 1
            try:
                fields = Fields(_object(record))
                meta = fields.get("meta", ("meta",))
                if isinstance(meta, str):
                    try:
                        meta = json.loads(meta)
                    except ValueError:
                        raise BadRow("meta", f"expected an object (or its JSON), got text {v.shown(meta)}",
                                     "not an object") from None
                if meta is not None and not isinstance(meta, dict):
                    raise BadRow("meta", f"expected an object, got {v.type_name(meta)} {v.shown(meta)}",
                                 "not an object")
                inner = Fields(meta or {})
                record_id = parse(fields, "record_id", ("id",), v.record_id)
                url = parse(fields, "url", ("url",), v.text(v.URL_CAP))
                prompt = parse(inner, "prompt", ("prompt",), v.text())
                if prompt is None:
                    ctx.skip(number, "no generation data (meta is null or has no prompt)")
                    continue
                settings = _settings(inner, ctx)
                size_text = inner.get("size", ("Size",))
                size = parse_size(size_text) if isinstance(size_text, str) else None
                row = {"record_id": record_id, "prompt": prompt, **settings, "url": url,
                       "width": parse(fields, "width", ("width",), v.integer(1, MAX_SIZE)) or settings["width"],
                       "height": parse(fields, "height", ("height",), v.integer(1, MAX_SIZE)) or settings["height"],
                       "model": settings["model"] or parse(fields, "model", ("baseModel",), v.label),
                       "nsfw": parse(fields, "nsfw", ("nsfw", "nsfwLevel"), v.nsfw),
                       "created_at": parse(fields, "created_at", ("createdAt",), v.timestamp),
                       "reddit_username": parse(fields, "reddit_username", ("reddit_username",), v.user_name),
                       "civitai_username": parse(fields, "civitai_username", ("username",), v.label),
                       "user_hash": None}
                if size and row["width"] is None and row["height"] is None and all(1 <= s <= MAX_SIZE for s in size):
                    row["width"], row["height"] = size
            except BadRow as bad:
                ctx.reject(number, record, bad)
                continue
            key = f"civitai image {record_id}" if record_id else (f"civitai url {url}" if url else None)
            if ctx.is_duplicate(number, key):
                continue
            _fold_a1111(row, ctx)
            _note_seed(row, ctx)
            ctx.emit(number, row)


# --- prompt histories --------------------------------------------------------------------------

class PIP(Format):
    name = "pip"
    title = "PIP of Tailored Visions (one JSON Lines file per user; the last two rows are the test split)"
    table = PROMPT_HISTORIES
    source = "Chen et al. 2024, Tailored Visions (PIP dataset README: one file per user, named by user id)"
    required = ("prompt",)
    any_of = ("result_url", "resolution_power", "proportion")
    columns = ("id", "user_id", "prompt", "query", "result_url", "resolution_power", "proportion", "NSFW",
               "timestamp")
    TEST_ROWS = 2

    def read(self, ctx, rows, file_stem):
        records = list(rows)
        ctx.records += len(records)
        stem_user = None
        try:
            stem_user = v.user_name(file_stem)
        except v.BadValue:
            pass
        users_in_rows = set()
        for _, record in records:
            if isinstance(record, dict):
                try:
                    users_in_rows.add(v.user_name(Fields(record).get("user_id", ("user_id",))))
                except (v.BadValue, BadRow):
                    pass
        users_in_rows.discard(None)
        # One file per user (the published layout) unless the file is plainly several users' rows.
        combined = stem_user is None or (len(users_in_rows) > 1 and stem_user not in users_in_rows)
        if combined:
            ctx.note("a file holding several users: each user's split taken from their own rows in file order")
        by_user: dict[str | None, list[tuple[int, object]]] = {}
        for number, record in records:
            user = stem_user
            if combined:
                try:
                    user = v.user_name(Fields(record).get("user_id", ("user_id",))) if isinstance(record, dict) \
                        else None
                except (v.BadValue, BadRow):
                    user = None
            by_user.setdefault(user, []).append((number, record))
        for user, mine in by_user.items():
            if len(mine) <= self.TEST_ROWS:
                ctx.note(f"a user with {self.TEST_ROWS} or fewer rows: all of them are test rows, none train")
            for position, (number, record) in enumerate(mine):
                split = "test" if position >= len(mine) - self.TEST_ROWS else "train"
                try:
                    fields = Fields(_object(record))
                    row_user = parse(fields, "user_id", ("user_id",), v.user_name)
                    if user is None:
                        raise BadRow("user_id", "expected a user id (the file's name or a user_id field), got none",
                                     "missing required value")
                    if row_user is not None and row_user != user:
                        raise BadRow("user_id", f"expected the file's user {user!r} (the file is named by its user), "
                                                f"got {row_user!r}", "user differs from the file's")
                    row = {"record_id": parse(fields, "record_id", ("id",), v.record_id), "user_id": user,
                           "position": position, "split": split,
                           "prompt": parse(fields, "prompt", ("prompt",), v.text(), required=True),
                           "short_prompt": parse(fields, "short_prompt", ("query",), v.text()),
                           "image_url": parse(fields, "image_url", ("result_url",), v.text(v.URL_CAP)),
                           "nsfw": parse(fields, "nsfw", ("NSFW",), v.nsfw),
                           "resolution_power": parse(fields, "resolution_power", ("resolution_power",),
                                                     v.number(-1e6, 1e6)),
                           "proportion": parse(fields, "proportion", ("proportion",), v.number(0.0, 1e6)),
                           "timestamp": parse(fields, "timestamp", ("timestamp",), v.timestamp)}
                except BadRow as bad:
                    ctx.reject(number, record, bad)
                    continue
                if split == "test" and row["short_prompt"] is None:
                    ctx.note("a test row without a short prompt (query): its prompt is de-styled instead")
                if split == "train" and row["short_prompt"] is not None:
                    ctx.note("a train row with a short prompt (query): kept")
                ctx.emit(number, row)


# --- preferences -------------------------------------------------------------------------------

_DEMOGRAPHICS = ("age", "gender", "country", "language", "occupation")
_NO_DEMOGRAPHICS = dict.fromkeys(_DEMOGRAPHICS) | {"annotator_score": None}


def _image_id(value: object, name: str) -> str | None:
    """An image as published: a path, URL or uid string; a Hugging Face image feature {bytes, path} by its
    path, or by a hash of its bytes when it has none."""
    if v.is_missing(value):
        return None
    if isinstance(value, dict):
        path = value.get("path")
        if isinstance(path, str) and path.strip():
            return v.clean_text(path, v.URL_CAP)
        data = value.get("bytes")
        if isinstance(data, (bytes, bytearray)) and data:
            return "sha256:" + hashlib.sha256(data).hexdigest()[:32]
        raise BadRow(name, "expected an image (a path, or an image feature with a path or bytes), got an empty "
                           "image feature", "no image")
    if isinstance(value, str):
        return v.clean_text(value, v.URL_CAP) or None
    raise BadRow(name, f"expected an image path or id, got {v.type_name(value)} {v.shown(value)}", "no image")


class PickAPic(Format):
    name = "pickapic-v2"
    title = "Pick-a-Pic v2 (one user's choice between two images for a caption)"
    table = PREFERENCES
    source = "huggingface.co/datasets/yuvalkirstain/pickapic_v2 (dataset card: features and dtypes)"
    required = ("caption", "image_0_uid", "image_1_uid")
    any_of = ("label_0", "label_1", "best_image_uid")
    columns = ("caption", "user_id", "image_0_uid", "image_0_url", "image_1_uid", "image_1_url", "label_0", "label_1",
               "best_image_uid", "has_label", "are_different", "model_0", "model_1", "ranking_id", "created_at")
    skip_columns = ("jpg_0", "jpg_1")

    def read(self, ctx, rows, file_stem):
        for number, record in rows:
            ctx.records += 1
            try:
                fields = Fields(_object(record))
                if parse(fields, "has_label", ("has_label",), v.boolean) is False:
                    ctx.skip(number, "no human label (has_label is false)")
                    continue
                if parse(fields, "are_different", ("are_different",), v.boolean) is False:
                    ctx.skip(number, "the two images are the same (are_different is false)")
                    continue
                uid_0 = parse(fields, "image_0_uid", ("image_0_uid",), v.record_id, required=True)
                uid_1 = parse(fields, "image_1_uid", ("image_1_uid",), v.record_id, required=True)
                if uid_0 == uid_1:
                    raise BadRow("image_1_uid", "expected a different image from image_0_uid, got the same one",
                                 "the same image twice")
                label_0 = parse(fields, "label_0", ("label_0",), v.number(0.0, 1.0))
                label_1 = parse(fields, "label_1", ("label_1",), v.number(0.0, 1.0))
                best = parse(fields, "best_image_uid", ("best_image_uid",), v.record_id)
                if label_0 is None and label_1 is None:
                    if best is None:
                        ctx.skip(number, "no human label (label_0, label_1 and best_image_uid are missing)")
                        continue
                    label_0 = 1.0 if best == uid_0 else 0.0 if best == uid_1 else None
                    if label_0 is None:
                        raise BadRow("best_image_uid", f"expected image_0_uid or image_1_uid, got {best!r}",
                                     "best image is neither")
                label_0 = 1.0 - label_1 if label_0 is None else label_0
                label_1 = 1.0 - label_0 if label_1 is None else label_1
                if not math.isclose(label_0 + label_1, 1.0, abs_tol=1e-6) or not any(
                        math.isclose(label_0, x, abs_tol=1e-6) for x in (0.0, 0.5, 1.0)):
                    raise BadRow("label_0", f"expected labels 1/0, 0/1 or 0.5/0.5 (a tie), got {label_0:g}/{label_1:g}",
                                 "labels inconsistent")
                preferred = "tie" if math.isclose(label_0, 0.5, abs_tol=1e-6) else "a" if label_0 > 0.5 else "b"
                if best is not None and preferred != "tie" and best != (uid_0 if preferred == "a" else uid_1):
                    raise BadRow("best_image_uid", f"expected the labelled winner "
                                                   f"{uid_0 if preferred == 'a' else uid_1!r}, got {best!r}",
                                 "best image disagrees with the labels")
                annotator = parse(fields, "annotator_id", ("user_id",), v.user_name)
                ranking = parse(fields, "ranking_id", ("ranking_id",), v.record_id)
                row = {"pair_id": f"pickapic:{ranking or f'{ctx.source_file}:{number}'}:{uid_0}:{uid_1}",
                       "prompt": parse(fields, "prompt", ("caption",), v.text(), required=True),
                       "image_a": uid_0, "image_b": uid_1,
                       "image_a_url": parse(fields, "image_a_url", ("image_0_url",), v.text(v.URL_CAP)),
                       "image_b_url": parse(fields, "image_b_url", ("image_1_url",), v.text(v.URL_CAP)),
                       "model_a": parse(fields, "model_a", ("model_0",), v.label),
                       "model_b": parse(fields, "model_b", ("model_1",), v.label),
                       "annotator_id": annotator, "preferred": preferred, **_NO_DEMOGRAPHICS,
                       "created_at": parse(fields, "created_at", ("created_at",), v.timestamp)}
            except BadRow as bad:
                ctx.reject(number, record, bad)
                continue
            if ctx.is_duplicate(number, f"pickapic vote {ranking}:{annotator}:{uid_0}:{uid_1}" if ranking else
                                f"pickapic vote {annotator}:{uid_0}:{uid_1}:{row['prompt']}"):
                continue
            ctx.emit(number, row)


_VOTE_KEYS = ("votedFor", "voted_for", "vote", "choice", "selected", "winner")
_A_WORDS, _B_WORDS = {"image1", "a", "1", "first", "left"}, {"image2", "b", "2", "second", "right"}


def _vote_side(vote: object, image_a: str, image_b: str, model_a: str | None, model_b: str | None) -> str | None:
    """Which image a Rapidata vote names: by the image's path or file name, by its model (where the two
    models differ), or by position words (image1/image2, A/B, 1/2)."""
    if isinstance(vote, bool) or v.is_missing(vote):
        return None
    if isinstance(vote, (int, float)):
        vote = str(int(vote)) if float(vote).is_integer() else str(vote)
    if not isinstance(vote, str):
        return None
    text = vote.strip()

    def names(image: str) -> set[str]:
        base = PurePosixPath(image.replace("\\", "/")).name
        return {image, base, base.rsplit(".", 1)[0]} - {""}

    sides = set()
    if text in names(image_a) or (model_a and model_a != model_b and text == model_a):
        sides.add("a")
    if text in names(image_b) or (model_b and model_a != model_b and text == model_b):
        sides.add("b")
    if not sides:
        low = text.lower().replace(" ", "")
        sides = {"a"} if low in _A_WORDS else {"b"} if low in _B_WORDS else set()
    return sides.pop() if len(sides) == 1 else None


def _details(entry: dict) -> dict:
    """An annotator's demographics: Rapidata's `userDetails` (or the entry itself)."""
    details = entry.get("userDetails") if isinstance(entry.get("userDetails"), dict) else entry
    if isinstance(details.get("demographics"), dict):  # the newer results nest age and gender one level down
        details = {**details, **details["demographics"]}
    fields = Fields(details)
    out = {name: parse(fields, name, aliases, v.label) for name, aliases in
           (("age", ("age", "age_group", "ageGroup")), ("gender", ("gender",)), ("country", ("country",)),
            ("language", ("language",)), ("occupation", ("occupation",)))}
    score = fields.get("annotator_score", ("userScore",))
    if score is None and isinstance(details.get("userScores"), dict):
        score = details["userScores"].get("global")
    out["annotator_score"] = parse(Fields({"s": score}), "annotator_score", ("s",), v.number(-1e9, 1e9))
    return out


class Rapidata(Format):
    name = "rapidata"
    title = "Rapidata human preference sets (per-annotator votes with age, gender and country)"
    table = PREFERENCES
    source = ("huggingface.co/datasets/Rapidata (e.g. 700k_Human_Preference_Dataset_FLUX_SD3_MJ_DALLE3); "
              "detailed_results entries as in docs.rapidata.ai, 'Understanding the results'")
    required = ("prompt", "image1", "image2")
    any_of = ("votes_image1", "votes_image2", "detailed_results")
    columns = ("prompt", "image1", "image2", "image1_path", "image2_path", "votes_image1", "votes_image2", "model1",
               "model2", "detailed_results")

    def wanted(self, columns):
        keys = {column_key(c) for c in columns}
        base = super().wanted(columns)
        # The image columns hold the images' bytes; their paths, where published, are all a table needs.
        skip = {k for k in ("image1", "image2") if f"{k}path" in keys}
        return lambda column: base(column) and column_key(column) not in skip

    def read(self, ctx, rows, file_stem):
        for number, record in rows:
            ctx.records += 1
            try:
                fields = Fields(_object(record))
                prompt = parse(fields, "prompt", ("prompt",), v.text(), required=True)
                images = []
                for side, (name, path_name) in enumerate((("image1", "image1_path"), ("image2", "image2_path"))):
                    image = _image_id(fields.get(path_name, (path_name,)), path_name) or \
                        _image_id(fields.get(name, (name,)), name)
                    if image is None:
                        raise BadRow(name, f"expected an image ({name} or {path_name}), got none",
                                     "missing required value")
                    images.append(image)
                image_a, image_b = images
                if image_a == image_b:
                    raise BadRow("image2", "expected a different image from image1, got the same one",
                                 "the same image twice")
                model_a = parse(fields, "model_a", ("model1",), v.label)
                model_b = parse(fields, "model_b", ("model2",), v.label)
                counts = [parse(fields, name, (name,), v.integer(0, 10**9))
                          for name in ("votes_image1", "votes_image2")]
                details = fields.get("detailed_results", ("detailed_results",))
                if isinstance(details, str):
                    try:
                        details = json.loads(details)
                    except ValueError as exc:
                        raise BadRow("detailed_results", f"expected a JSON list of annotator results, got "
                                                         f"malformed JSON ({exc})", "malformed JSON") from None
                if isinstance(details, dict) and isinstance(details.get("detailedResults"), list):
                    details = details["detailedResults"]
                if details is not None and not isinstance(details, list):
                    raise BadRow("detailed_results", f"expected a list of annotator results, got "
                                                     f"{v.type_name(details)}", "not a list")
                votes: list[dict] = []
                if details:
                    for k, entry in enumerate(details, start=1):
                        if not isinstance(entry, dict):
                            raise BadRow("detailed_results", f"annotator {k}: expected an object, got "
                                                             f"{v.type_name(entry)}", "annotator entry unreadable")
                        vote = next((entry[key] for key in _VOTE_KEYS if key in entry), None)
                        side = _vote_side(vote, image_a, image_b, model_a, model_b)
                        if side is None:
                            raise BadRow("detailed_results", f"annotator {k}: expected a vote naming image1 or "
                                                             f"image2, got {v.shown(vote)}", "vote names neither image")
                        try:
                            demographics = _details(entry)
                        except BadRow as bad:
                            raise BadRow("detailed_results", f"annotator {k}, {bad.field}: {bad.reason}",
                                         bad.kind) from None
                        votes.append({"preferred": side, **demographics})
                    tally = [sum(x["preferred"] == s for x in votes) for s in ("a", "b")]
                    if any(c is not None for c in counts) and [c or 0 for c in counts] != tally:
                        ctx.note("detailed_results counts differ from votes_image1/votes_image2 (the entries used)")
                elif any(c for c in counts):
                    votes = ([{"preferred": "a", **_NO_DEMOGRAPHICS}] * (counts[0] or 0)
                             + [{"preferred": "b", **_NO_DEMOGRAPHICS}] * (counts[1] or 0))
                    ctx.note("a pair without detailed_results: votes from votes_image1/votes_image2, no demographics")
                else:
                    ctx.skip(number, "no votes (votes_image1/votes_image2 are 0 or missing, no detailed_results)")
                    continue
            except BadRow as bad:
                ctx.reject(number, record, bad)
                continue
            key = "rapidata pair " + hashlib.sha256(json.dumps(
                [prompt, image_a, image_b, [sorted(x.items()) for x in votes]], default=str).encode()).hexdigest()[:24]
            if ctx.is_duplicate(number, key):
                continue
            pair_id = f"rapidata:{ctx.source_file}:{number}"
            for vote in votes:
                ctx.emit(number, {"pair_id": pair_id, "prompt": prompt, "image_a": image_a, "image_b": image_b,
                                  "image_a_url": None, "image_b_url": None, "model_a": model_a, "model_b": model_b,
                                  "annotator_id": None, "created_at": None, **vote})


FORMATS: dict[str, Format] = {f.name: f for f in (ZipBench(), CivitaiImages(), PIP(), PickAPic(), Rapidata())}


def detect(columns: Iterable[str]) -> list[Format]:
    """The formats whose columns a file has."""
    keys = {column_key(c) for c in columns}
    return [f for f in FORMATS.values() if f.matches(keys)]
