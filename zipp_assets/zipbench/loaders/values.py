"""Strict value parsers for benchmark files: each returns the value, None for a missing one, or raises
`BadValue` with what was expected and a short kind (the reason `inspect` counts by).

Missing means None, NaN (a float column's hole: pandas and the Hugging Face datasets write NaN where a
value is absent), an empty or blank string, and for numbers also the texts "nan", "null" and "none". A
missing value is never a bad one; whether it may be missing is the format's business.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import datetime, timezone

PROMPT_CAP = 4000  # characters; longer prompts are cut
URL_CAP = 2048
LABEL_CAP = 128  # sampler names, model names, demographic values
USER_NAME = re.compile(r"[A-Za-z0-9_-]{1,128}")
EXACT_FLOAT_INTEGERS = 2**53  # floats hold every integer below this; above it the low bits are gone
UINT64_MAX = 2**64 - 1
# C0/C1 controls and the bidirectional overrides that can disguise text; newlines and tabs become spaces.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_SPACE_CONTROL = re.compile(r"[\t\n\r]")
_INTEGER = re.compile(r"[+-]?\d+(?:\.0*)?")
_MISSING_WORDS = frozenset({"nan", "null", "none"})


class BadValue(Exception):
    """A value that is present but not what the field takes: the message says what was expected."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.message, self.kind = message, kind


def shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def type_name(value: object) -> str:
    names = {dict: "an object", list: "a list", bool: "a boolean", str: "text", bytes: "bytes"}
    return names.get(type(value), type(value).__name__)


def is_missing(value: object) -> bool:
    """None, NaN, or blank text."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def _missing_number(value: object) -> bool:
    return is_missing(value) or (isinstance(value, str) and value.strip().lower() in _MISSING_WORDS)


def clean_text(value: str, cap: int) -> str:
    """Control characters removed (newlines and tabs become spaces), stripped, at most `cap` characters."""
    return _CONTROL.sub("", _SPACE_CONTROL.sub(" ", value)).strip()[:cap]


def text(cap: int = PROMPT_CAP) -> Callable[[object], str | None]:
    def parse(value: object) -> str | None:
        if is_missing(value):
            return None
        if not isinstance(value, str):
            raise BadValue(f"expected text, got {type_name(value)} {shown(value)}", "not text")
        return clean_text(value, cap) or None
    return parse


def raw_text(value: object) -> str | None:
    """Text with its line breaks kept (for the A1111 parameter block); controls other than breaks removed."""
    if is_missing(value):
        return None
    if not isinstance(value, str):
        raise BadValue(f"expected text, got {type_name(value)} {shown(value)}", "not text")
    return _CONTROL.sub("", value)


def label(value: object) -> str | None:
    """A short label (sampler, model, country); numbers are written as text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not is_missing(value):
        value = str(int(value)) if float(value).is_integer() else str(value)
    return text(LABEL_CAP)(value)


def user_name(value: object) -> str | None:
    """A user name or numeric id (ints, integral floats from a float column, digit strings); a leading
    'u/' or '/u/' is dropped. Names are letters, digits, '_' or '-': a name is never a path."""
    if is_missing(value):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # a numeric id column read as floats (mixed int/float)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise BadValue(f"expected a user name or id, got {type_name(value)} {shown(value)}", "not a user name")
    name = value.strip()
    for prefix in ("/u/", "u/"):
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    if not name:
        return None
    if not USER_NAME.fullmatch(name):
        raise BadValue(f"expected a user name (1-128 letters, digits, '_' or '-'), got {shown(value)}",
                       "not a user name")
    return name


def record_id(value: object) -> str | None:
    """A record's id as text: ints, integral floats and short strings."""
    if is_missing(value):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and len(value.strip()) <= LABEL_CAP:
        return clean_text(value, LABEL_CAP) or None
    raise BadValue(f"expected an id (a number or short text), got {type_name(value)} {shown(value)}", "not an id")


def _as_integer(value: object) -> int | None:
    """The integer a value spells, or None when it spells none (7.5, 'abc', True, inf)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else None
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value.strip().split(".")[0])
    return None


def integer(minimum: int, maximum: int) -> Callable[[object], int | None]:
    def parse(value: object) -> int | None:
        if _missing_number(value):
            return None
        number = _as_integer(value)
        if number is None:
            raise BadValue(f"expected an integer, got {type_name(value)} {shown(value)}", "not an integer")
        if not minimum <= number <= maximum:
            raise BadValue(f"expected an integer within {minimum}..{maximum}, got {number}", "integer out of range")
        return number
    return parse


def seed(value: object) -> tuple[int | None, bool]:
    """(seed, exact): a generation seed 0..2^64-1. A float seed of 2^53 or more is kept, but it is not
    exact: the float has lost the seed's low bits (exact is False). -1, the UIs' 'random seed', is
    missing: the seed that was drawn was not recorded."""
    if _missing_number(value):
        return None, True
    number = _as_integer(value)
    if number is None:
        raise BadValue(f"expected an integer seed, got {type_name(value)} {shown(value)}", "not an integer")
    if number == -1:
        return None, True
    if not 0 <= number <= UINT64_MAX:
        raise BadValue(f"expected a seed within 0..2^64-1 (or -1 for random), got {number}", "integer out of range")
    exact = not (isinstance(value, float) and number >= EXACT_FLOAT_INTEGERS)
    return number, exact


def number(minimum: float, maximum: float = math.inf) -> Callable[[object], float | None]:
    def parse(value: object) -> float | None:
        if _missing_number(value):
            return None
        result: float | None = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            result = float(value)
        elif isinstance(value, str):
            try:
                result = float(value.strip())
            except ValueError:
                result = None
        if result is None or not math.isfinite(result):
            raise BadValue(f"expected a finite number, got {type_name(value)} {shown(value)}", "not a number")
        if not minimum <= result <= maximum:
            raise BadValue(f"expected a number within {minimum:g}..{maximum:g}, got {result:g}", "number out of range")
        return result
    return parse


def boolean(value: object) -> bool | None:
    if _missing_number(value):
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "0", "1", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    raise BadValue(f"expected true or false, got {type_name(value)} {shown(value)}", "not a boolean")


def nsfw(value: object) -> str | None:
    """An NSFW flag or level as published, as text: booleans and 0/1 as 'true'/'false', levels as given
    (Civitai's 'None', 'Soft', 'Mature', 'X', or a browsing-level number)."""
    if is_missing(value):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise BadValue(f"expected an NSFW flag or level, got {shown(value)}", "not an NSFW flag")
        return str(int(value)) if float(value).is_integer() else str(value)
    if isinstance(value, str):
        return clean_text(value, LABEL_CAP) or None
    raise BadValue(f"expected an NSFW flag or level, got {type_name(value)} {shown(value)}", "not an NSFW flag")


def timestamp(value: object) -> datetime | None:
    """ISO 8601 text (a trailing Z allowed), epoch seconds (or milliseconds), or a datetime."""
    if isinstance(value, datetime):  # Parquet timestamps
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if _missing_number(value):
        return None
    seconds: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        stripped = value.strip()
        try:
            seconds = float(stripped)
        except ValueError:
            try:
                moment = datetime.fromisoformat(stripped[:-1] + "+00:00" if stripped.endswith("Z") else stripped)
            except ValueError:
                moment = None
            if moment is not None:
                return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    if seconds is not None and math.isfinite(seconds) and seconds >= 1e11:
        seconds /= 1000.0  # epoch milliseconds
    if seconds is None or not math.isfinite(seconds) or not 0 <= seconds < 32503680000:  # before year 3000
        raise BadValue(f"expected an ISO 8601 time or epoch seconds, got {type_name(value)} {shown(value)}",
                       "not a time")
    return datetime.fromtimestamp(seconds, tz=timezone.utc)
