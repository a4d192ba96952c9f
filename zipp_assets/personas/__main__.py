"""Look at and edit personas from the command line.

    python -m zipp_assets.personas show --user u_...
    python -m zipp_assets.personas edit --user u_... --field profession --value '"nurse"' --editor alice

An edit goes to the persona_overrides table (with the old value, editor and time) and applies on
top of every later re-mining. The lake is ZIPP_DATA_DIR's, as for the pipeline.
"""

from __future__ import annotations

import argparse
import json
import sys

from zipp_assets.personas.overrides import apply_overrides, edit_persona, overrides_by_user
from zipp_assets.personas.shards import shard_of
from zipp_assets.personas.verbalize import PERSONAS, persona_of, shard_rows
from zipp_assets.settings import load_settings


def _mined(lake_dir, user_id: str) -> dict | None:
    rows = [r for r in shard_rows(lake_dir, PERSONAS, shard_of(user_id)) if r["user_id"] == user_id]
    return persona_of(rows[0]) if rows else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zipp_assets.personas", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    show = commands.add_parser("show", help="the effective persona of a user (edits applied) and its edits")
    show.add_argument("--user", required=True)
    edit = commands.add_parser("edit", help="edit one field of a user's persona")
    edit.add_argument("--user", required=True)
    edit.add_argument("--field", required=True)
    edit.add_argument("--value", required=True, help="the new value as JSON (a string in quotes, a list, ...)")
    edit.add_argument("--editor", required=True)
    args = parser.parse_args(argv)
    lake_dir = load_settings().lake_dir
    mined = _mined(lake_dir, args.user)
    edits = overrides_by_user(lake_dir).get(args.user, [])
    if mined is None:
        print(f"no mined persona for {args.user!r} (materialize personas first)", file=sys.stderr)
        return 1
    current = apply_overrides(mined, edits) if edits else mined
    if args.command == "show":
        print(json.dumps({"persona": current, "edits": [
            {k: str(e[k]) for k in ("field", "value_json", "old_value_json", "editor", "edited_utc")} for e in edits]},
            indent=2))
        return 0
    try:
        value = json.loads(args.value)
    except json.JSONDecodeError as error:
        print(f"--value must be JSON: {error}", file=sys.stderr)
        return 2
    try:
        edited = edit_persona(lake_dir, args.user, args.field, value, args.editor, current)
    except ValueError as error:
        print(f"edit refused: {error}", file=sys.stderr)
        return 2
    print(json.dumps(edited, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
