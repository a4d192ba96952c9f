"""Users' own prompt histories from external files, keyed by the graph's pseudonyms.

Two kinds of file feed it (see `loaders`): Civitai generation records linked to a Reddit account
(ZIPBench's released rows; the user is `reddit_username`) and PIP-style prompt histories whose user id
is a Reddit username. Usernames are mapped to pseudonyms at once and never stored. Bad rows are
skipped with their count reported per file, never silently; a missing file is reported as missing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pyarrow as pa

from zipp_assets.zipbench.loaders import load_generation_histories, load_prompt_histories

HISTORY_SCHEMA = pa.schema([("user_id", pa.string()), ("position", pa.int64()), ("prompt", pa.string())])
MAX_HISTORY = 200  # prompts kept per user: enough for 5-shot and retrieval, bounded for huge accounts


def load_history_files(generation_files: Sequence[Path], map_usernames: Callable[[list[str]], dict[str, str]],
                       prompt_history_files: Sequence[Path] = ()) -> tuple[dict[str, list[str]], list[dict]]:
    """user_id -> the user's distinct prompts in file order, and one report row per file."""
    pairs: list[tuple[str, str]] = []
    report = []
    for kind, files, loader, user_column in (("civitai generations", generation_files, load_generation_histories,
                                              "reddit_username"),
                                             ("prompt history", prompt_history_files, load_prompt_histories, "user_id")):
        for path in files:
            path = Path(path)
            if not path.is_file():
                report.append({"file": path.name, "kind": kind, "status": "missing", "rows": 0, "rejected": 0})
                continue
            rows, rejected = loader(path, on_bad_row="skip")
            pairs += zip(rows[user_column].to_pylist(), rows["prompt"].to_pylist())
            report.append({"file": path.name, "kind": kind, "status": "read", "rows": rows.num_rows,
                           "rejected": rejected.num_rows})
    ids = map_usernames(sorted({u for u, _ in pairs}))
    history: dict[str, list[str]] = {}
    for username, prompt in pairs:
        user = ids.get(username)
        if user is None or not prompt:
            continue
        mine = history.setdefault(user, [])
        if prompt not in mine and len(mine) < MAX_HISTORY:
            mine.append(prompt)
    return history, report
