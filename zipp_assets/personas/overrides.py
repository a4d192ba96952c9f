"""Edits to personas by people: an append-only override table with its audit trail.

Each edit is one row (user, field, new value, old value, editor, time) in `persona_overrides`,
appended in its own commit. The effective persona is the mined one with the latest edit of
each field applied on top, so an edit survives every re-mining until someone edits it again.
An edit is validated against the persona schema before it is written.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa

from zipp_assets import lake
from zipp_assets.personas.schema import EDITABLE_FIELDS, Persona

OVERRIDES = "persona_overrides"
OVERRIDES_SCHEMA = pa.schema([
    ("user_id", pa.string()), ("field", pa.string()), ("value_json", pa.string()), ("old_value_json", pa.string()),
    ("editor", pa.string()), ("edited_utc", pa.timestamp("us", tz="UTC")),
])


def read_overrides(lake_dir: Path) -> list[dict]:
    if not lake.table_exists(lake_dir, OVERRIDES):
        return []
    return sorted(lake.read_table(lake_dir, OVERRIDES).to_pylist(), key=lambda r: r["edited_utc"])


def apply_overrides(persona: dict, edits: list[dict]) -> dict:
    """The persona with each field's latest edit applied (edits in time order)."""
    effective = dict(persona)
    for edit in edits:
        effective[edit["field"]] = json.loads(edit["value_json"])
    return Persona.model_validate(effective).model_dump()


def edit_persona(lake_dir: Path, user_id: str, field: str, value, editor: str, current: dict | None) -> dict:
    """Record an edit of one field of `user_id`'s persona; returns the new effective persona."""
    if field not in EDITABLE_FIELDS:
        raise ValueError(f"{field!r} is not a persona field; one of {', '.join(EDITABLE_FIELDS)}")
    if not editor or len(editor) > 80:
        raise ValueError("an edit needs an editor name (at most 80 characters)")
    base = current if current is not None else Persona().model_dump()
    edited = Persona.model_validate({**base, field: value}).model_dump()  # raises on a value the schema refuses
    lake.append_rows(lake_dir, OVERRIDES, pa.Table.from_pylist([{
        "user_id": user_id, "field": field, "value_json": json.dumps(edited[field]),
        "old_value_json": json.dumps(base.get(field)), "editor": editor, "edited_utc": datetime.now(timezone.utc),
    }], schema=OVERRIDES_SCHEMA))
    return edited


def overrides_by_user(lake_dir: Path) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for edit in read_overrides(lake_dir):
        out.setdefault(edit["user_id"], []).append(edit)
    return out


def effective_personas(rows: list[dict], edits: dict[str, list[dict]]) -> list[dict]:
    """Per stored persona row with a persona: user_id, the persona with its edits applied, edited fields."""
    out = []
    for row in rows:
        if not row.get("persona_json"):
            continue
        persona = json.loads(row["persona_json"])
        mine = edits.get(row["user_id"], [])
        out.append({"user_id": row["user_id"], "persona": apply_overrides(persona, mine) if mine else persona,
                    "edited_fields": sorted({e["field"] for e in mine})})
    return out
