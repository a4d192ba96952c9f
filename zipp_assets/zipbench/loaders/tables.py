"""The three tables every benchmark file is read into, and the record of what was not loaded.

- GENERATION_SCHEMA (`generations`): one generated image's record, Civitai-style: the prompt and its
  settings, and who made it (a Reddit username where the file links one, as ZIP-Bench's rows do).
- PROMPT_HISTORY_SCHEMA (`prompt_histories`): one prompt of one user's history, in the user's order
  (`position`), with its split ("train" or "test") where the dataset defines one, and the short
  prompt (`short_prompt`, PIP's `query`) a held-out row is to be rewritten from.
- PREFERENCE_SCHEMA (`preferences`): one human vote on a pair of images for a prompt: which image
  (`preferred`: "a", "b" or "tie"), and what is known of the person who voted (annotator id, age,
  gender, country, language, occupation). A pair with ten votes is ten rows sharing a `pair_id`.

Every row carries `source_file` (relative to the path loaded) and `source_row` (1-based; the line,
for JSON Lines), so any value leads back to where it was read.
"""

from __future__ import annotations

import pyarrow as pa

GENERATIONS, PROMPT_HISTORIES, PREFERENCES = "generations", "prompt_histories", "preferences"
TABLE_TITLES = {GENERATIONS: "generation histories", PROMPT_HISTORIES: "prompt histories",
                PREFERENCES: "preference pairs (one row per human vote)"}

_WHERE = [pa.field("source_file", pa.string(), nullable=False), pa.field("source_row", pa.int64(), nullable=False),
          pa.field("format", pa.string(), nullable=False)]

GENERATION_SCHEMA = pa.schema(_WHERE + [
    pa.field("record_id", pa.string()),
    pa.field("prompt", pa.string(), nullable=False),
    pa.field("negative_prompt", pa.string()),
    pa.field("url", pa.string()),
    pa.field("seed", pa.uint64()),
    pa.field("seed_exact", pa.bool_()),  # False: the seed arrived as a float of 2^53 or more, its low bits lost
    pa.field("steps", pa.int32()),
    pa.field("sampler", pa.string()),
    pa.field("cfg_scale", pa.float64()),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("model", pa.string()),
    pa.field("nsfw", pa.string()),
    pa.field("created_at", pa.timestamp("us", tz="UTC")),
    pa.field("reddit_username", pa.string()),
    pa.field("civitai_username", pa.string()),
    pa.field("user_hash", pa.string()),
])

PROMPT_HISTORY_SCHEMA = pa.schema(_WHERE + [
    pa.field("record_id", pa.string()),
    pa.field("user_id", pa.string(), nullable=False),
    pa.field("position", pa.int64(), nullable=False),  # 0-based, the user's rows in file order
    pa.field("split", pa.string()),  # "train", "test", or null where the dataset defines none
    pa.field("prompt", pa.string(), nullable=False),
    pa.field("short_prompt", pa.string()),  # PIP's `query`: the shortened prompt of a test row
    pa.field("image_url", pa.string()),
    pa.field("nsfw", pa.string()),
    pa.field("resolution_power", pa.float64()),
    pa.field("proportion", pa.float64()),
    pa.field("timestamp", pa.timestamp("us", tz="UTC")),
])

PREFERENCE_SCHEMA = pa.schema(_WHERE + [
    pa.field("pair_id", pa.string(), nullable=False),
    pa.field("prompt", pa.string(), nullable=False),
    pa.field("image_a", pa.string(), nullable=False),  # an id, path or URL as published: never opened here
    pa.field("image_b", pa.string(), nullable=False),
    pa.field("image_a_url", pa.string()),
    pa.field("image_b_url", pa.string()),
    pa.field("model_a", pa.string()),
    pa.field("model_b", pa.string()),
    pa.field("annotator_id", pa.string()),  # Pick-a-Pic's user_id; Rapidata publishes none
    pa.field("preferred", pa.string(), nullable=False),  # "a", "b" or "tie"
    pa.field("age", pa.string()),  # as published ("25-34", "Unknown", ...)
    pa.field("gender", pa.string()),
    pa.field("country", pa.string()),
    pa.field("language", pa.string()),
    pa.field("occupation", pa.string()),
    pa.field("annotator_score", pa.float64()),  # Rapidata's userScore (the annotator's measured reliability)
    pa.field("created_at", pa.timestamp("us", tz="UTC")),
])

SCHEMAS = {GENERATIONS: GENERATION_SCHEMA, PROMPT_HISTORIES: PROMPT_HISTORY_SCHEMA, PREFERENCES: PREFERENCE_SCHEMA}

RAW_CAP = 500  # characters of a rejected row's raw text kept
REJECTED_SCHEMA = pa.schema([
    pa.field("source_file", pa.string(), nullable=False),
    pa.field("source_row", pa.int64(), nullable=False),
    pa.field("field", pa.string()),  # the field at fault, null when the row as a whole is
    pa.field("kind", pa.string(), nullable=False),  # a short reason, what counts group by ("not an integer")
    pa.field("reason", pa.string(), nullable=False),  # the whole reason, with the value
    pa.field("raw", pa.string()),  # the row as read, cleaned and cut to RAW_CAP characters
])
SKIPPED_SCHEMA = pa.schema([
    pa.field("source_file", pa.string(), nullable=False),
    pa.field("source_row", pa.int64(), nullable=False),
    pa.field("reason", pa.string(), nullable=False),  # a valid row the benchmark cannot use, and why
])
DUPLICATES_SCHEMA = pa.schema([
    pa.field("source_file", pa.string(), nullable=False),
    pa.field("source_row", pa.int64(), nullable=False),
    pa.field("key", pa.string(), nullable=False),  # what makes it the same record (an id, or the pair)
    pa.field("first_file", pa.string(), nullable=False),
    pa.field("first_row", pa.int64(), nullable=False),
])
