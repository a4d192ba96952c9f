"""JSON out of model text, and validation against a JSON schema.

Models wrap JSON in prose or code fences, leave trailing commas or use single quotes.
`extract_json` finds the object (a fenced block first, else the first balanced object), tries it as
is, then with light repairs. An object that never closes is not repaired: output cut by the token
limit ("locale": "Lis) would otherwise pass for a whole answer; it is reported as truncated.
`validate` checks it against the request's schema (`jsonschema`, Draft 2020-12). `parse_output` is
both, with one reason string when it fails.
Model text is only ever parsed as data here, never evaluated.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)(?:```|$)", re.DOTALL)
_TRAILING_COMMA = re.compile(r",(\s*[}\]])")


def _balanced_from(text: str, start: int) -> tuple[str, bool]:
    """The object that opens at `start`, up to its matching brace (or to the end: `closed` False)."""
    depth, in_string, quote, escaped = 0, False, "", False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                in_string = False
        elif ch in "\"'":
            in_string, quote = True, ch
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return text[start : i + 1], True
    return text[start:], False


def _single_to_double_quotes(text: str) -> str:
    """'key': 'value' -> "key": "value", leaving apostrophes inside double-quoted strings alone."""
    out, in_double, in_single, escaped = [], False, False, False
    for ch in text:
        if escaped:
            # \' is an escape in a single-quoted string, not in JSON
            out[-1:] = ["'"] if ch == "'" else ["\\", ch]
            escaped = False
            continue
        if ch == "\\":
            out.append(ch)
            escaped = True
        elif ch == '"' and not in_single:
            in_double = not in_double
            out.append(ch)
        elif ch == '"' and in_single:
            out.append('\\"')
        elif ch == "'" and not in_double:
            in_single = not in_single
            out.append('"')
        else:
            out.append(ch)
    return "".join(out)


def _python_literals(text: str) -> str:
    return re.sub(r"\bTrue\b", "true", re.sub(r"\bFalse\b", "false", re.sub(r"\bNone\b", "null", text)))


def _repairs(candidate: str):
    """The candidate as is, then with each repair added in turn (each only tried if the last failed)."""
    steps = (lambda t: _TRAILING_COMMA.sub(r"\1", t), _single_to_double_quotes, _python_literals)
    yield candidate
    text = candidate
    for step in steps:
        text = step(text)
        yield text


TRUNCATED = "truncated"


def _candidates(text: str) -> tuple[list[str], bool]:
    """Candidate objects, and whether the first object in the text never closes."""
    out = [m.group(1).strip() for m in _FENCE.finditer(text) if "{" in m.group(1)]
    start = text.find("{")
    unclosed = False
    if start >= 0:
        candidate, closed = _balanced_from(text, start)
        out.append(candidate)
        unclosed = not closed
    return out, unclosed


def extract_json(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """(object, None) or (None, reason). Only a JSON object counts, not a bare list or scalar."""
    candidates, unclosed = _candidates(text)
    if not candidates:
        return None, "no JSON object in the output"
    for candidate in candidates:
        if not candidate.lstrip().startswith("{"):
            candidate = candidate[candidate.find("{") :]
        for attempt in _repairs(candidate):
            try:
                value = json.loads(attempt)
            except (json.JSONDecodeError, RecursionError):
                continue
            if isinstance(value, dict):
                return value, None
    if unclosed:
        return None, f"{TRUNCATED}: the output ends before its JSON object closes: ...{text[-60:]!r}"
    return None, f"output is not valid JSON, even after repair: {text[:80]!r}"


def validate(value: Any, schema: dict[str, Any]) -> str | None:
    """None when `value` satisfies `schema`, else one line naming the first violation and where."""
    try:
        check_schema(schema)
    except jsonschema.SchemaError as error:  # the request's fault, reported like any other reason
        return f"invalid schema: {error.message[:200]}"
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return f"schema violation at {where}: {error.message[:200]}"


def check_schema(schema: dict[str, Any]) -> None:
    """Raise `jsonschema.SchemaError` for a schema that is itself malformed."""
    jsonschema.Draft202012Validator.check_schema(schema)


def parse_output(text: str, schema: dict[str, Any] | None) -> tuple[dict[str, Any] | None, str | None]:
    """(parsed, None) when the text holds an object satisfying `schema`, else (None, reason)."""
    value, reason = extract_json(text)
    if value is None:
        return None, reason
    reason = validate(value, schema) if schema is not None else None
    return (value, None) if reason is None else (None, reason)
