"""Users' own prompt histories (and held-out prompts) from external files, keyed by the graph's pseudonyms.

Any generation or prompt-history file the loaders read (`loaders.load`, format detected or named):
- generation histories (ZIP-Bench's released rows, Civitai image records): the user is the row's
  `reddit_username`; rows without one (Civitai records know no Reddit name) cannot be linked to a
  benchmark user and are counted as such;
- prompt histories (PIP of Tailored Visions, a folder of per-user files): the user is `user_id`; train
  rows are the user's history, test rows (PIP's last two rows of each user) are held out: they become
  the user's base prompts in `zipbench_prompts`, rewritten from their short prompt (`query`), and are
  never shown to a method as history.
Usernames are mapped to pseudonyms at once and never stored. Bad rows are skipped with their count
reported per file, never silently; a missing or unreadable file is reported as such.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from zipp_assets.zipbench.loaders import GENERATIONS, PROMPT_HISTORIES, BenchmarkFileError, load

HISTORY_SCHEMA = pa.schema([("user_id", pa.string()), ("position", pa.int64()), ("prompt", pa.string()),
                            ("split", pa.string()), ("short_prompt", pa.string())])
MAX_HISTORY = 200  # prompts kept per user: enough for 5-shot and retrieval, bounded for huge accounts
MAX_HELDOUT = 20  # held-out prompts kept per user


@dataclass
class Histories:
    history: dict[str, list[str]] = field(default_factory=dict)  # user_id -> own distinct prompts, file order
    heldout: dict[str, list[dict]] = field(default_factory=dict)  # user_id -> [{prompt, short_prompt}]
    report: list[dict] = field(default_factory=list)  # one row per file or folder


def _report(path: Path, kind: str, status: str, **counts) -> dict:
    row = {"file": path.name, "kind": kind, "status": status, "rows": 0, "rejected": 0, "skipped": 0,
           "duplicates": 0, "users": 0, "users_in_graph": 0, "held_out": 0, "not_linkable": 0}
    row.update(counts)
    return row


def load_history_files(generation_files: Sequence[Path], map_usernames: Callable[[list[str]], dict[str, str]],
                       prompt_history_files: Sequence[Path] = ()) -> Histories:
    """Every file's prompts by benchmark user (pseudonym), and a report row per file. The two lists are
    read alike (the format is found from the columns); they stay two for the config's sake."""
    entries: list[tuple[int, str, str, str | None, str | None]] = []  # (report row, user, prompt, split, short)
    out = Histories()
    for path in [*map(Path, generation_files), *map(Path, prompt_history_files)]:
        if not path.exists():
            out.report.append(_report(path, "", "missing"))
            continue
        try:
            result = load(path, on_bad_row="skip")
        except BenchmarkFileError as error:
            out.report.append(_report(path, "", f"refused: {error.problem}"))
            continue
        counts = {"rows": result.table.num_rows, "rejected": result.rejected.num_rows,
                  "skipped": result.skipped.num_rows, "duplicates": result.duplicates.num_rows}
        if result.kind not in (GENERATIONS, PROMPT_HISTORIES):
            out.report.append(_report(path, result.format.name, f"not a history: it holds {result.kind}", **counts))
            continue
        index = len(out.report)
        out.report.append(_report(path, result.format.name, "read", **counts))
        table = result.table
        if result.kind == GENERATIONS:
            users = table["reddit_username"].to_pylist()
            rows = zip(users, table["prompt"].to_pylist(), [None] * len(users), [None] * len(users))
            out.report[index]["not_linkable"] = sum(u is None for u in users)
        else:
            rows = zip(table["user_id"].to_pylist(), table["prompt"].to_pylist(), table["split"].to_pylist(),
                       table["short_prompt"].to_pylist())
        entries += [(index, user, prompt, split, short) for user, prompt, split, short in rows if user]
    ids = map_usernames(sorted({e[1] for e in entries}))
    for index in range(len(out.report)):
        names = {e[1] for e in entries if e[0] == index}
        out.report[index]["users"] = len(names)
        out.report[index]["users_in_graph"] = sum(1 for n in names if n in ids)
    for index, username, prompt, split, short in entries:
        user = ids.get(username)
        if user is None or not prompt:
            continue
        if split == "test":
            mine = out.heldout.setdefault(user, [])
            if len(mine) < MAX_HELDOUT and all(h["prompt"] != prompt for h in mine):
                mine.append({"prompt": prompt, "short_prompt": short})
                out.report[index]["held_out"] += 1
            continue
        history = out.history.setdefault(user, [])
        if prompt not in history and len(history) < MAX_HISTORY:
            history.append(prompt)
    # A held-out prompt is never history too (a user who wrote it twice keeps it held out).
    for user, held in out.heldout.items():
        if user in out.history:
            out.history[user] = [p for p in out.history[user] if p not in {h["prompt"] for h in held}]
    return out
