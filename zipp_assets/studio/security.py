"""The studio's guards, without HTTP: form parsing with limits, CSRF tokens, editor sign-in, and
persona edits parsed from form text.

- Forms are `application/x-www-form-urlencoded` only, at most `MAX_FORM_BYTES`, `MAX_FIELDS` fields,
  each name once, UTF-8; anything else is refused before a handler sees it.
- CSRF: every browser gets a random token in an HttpOnly, SameSite=Strict cookie; every form carries
  it in a hidden field and a POST is refused unless the two match (double submit, compared in constant
  time).
- Editors: editing needs the token in ZIPP_STUDIO_EDITOR_TOKEN (at least 16 characters; no token, no
  editing). Signing in with it and a name gives an opaque editor session kept in memory; the name goes
  into the audit trail of every edit.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
import threading
import time
from collections.abc import Mapping
from urllib.parse import parse_qsl

from pydantic import ValidationError

from zipp_assets.personas.schema import AGE_BANDS, EDITABLE_FIELDS, GENDERS, VISUAL_INTERESTS, Persona
from zipp_assets.studio.study import InvalidInput, clean_text

MAX_FORM_BYTES = 32 * 1024
MAX_FIELDS = 64
EDITOR_TOKEN_ENV = "ZIPP_STUDIO_EDITOR_TOKEN"
MIN_EDITOR_TOKEN_CHARS = 16
EDITOR_SESSION_SECONDS = 8 * 3600
EDITOR_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,79}$")
TOKEN = re.compile(r"^[A-Za-z0-9_-]{20,100}$")


class FormRefused(ValueError):
    """A request body that is not an acceptable form (too big, wrong type, repeated or too many fields)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def parse_form(body: bytes, content_type: str | None) -> dict[str, str]:
    if (content_type or "").split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        raise FormRefused("forms must be sent as application/x-www-form-urlencoded", 415)
    if len(body) > MAX_FORM_BYTES:
        raise FormRefused(f"the form is larger than {MAX_FORM_BYTES} bytes", 413)
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_FIELDS,
                          errors="strict")
    except (UnicodeDecodeError, ValueError) as error:
        raise FormRefused(f"the form could not be read: {str(error)[:100]}") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise FormRefused(f"the field {name[:40]!r} appears twice")
        form[name] = value
    return form


def new_token() -> str:
    return secrets.token_urlsafe(32)


def looks_like_token(value: str | None) -> bool:
    return bool(value) and bool(TOKEN.match(value))


def csrf_ok(form: Mapping[str, str], cookie: str | None) -> bool:
    sent = form.get("csrf_token", "")
    return looks_like_token(cookie) and looks_like_token(sent) and hmac.compare_digest(sent, cookie)


class EditorAuth:
    """Editor sign-in against the configured token; sessions live in memory until they expire."""

    def __init__(self, token: str | None):
        self.enabled = bool(token) and len(token) >= MIN_EDITOR_TOKEN_CHARS
        self._token = token if self.enabled else None
        self._sessions: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    @property
    def why_disabled(self) -> str:
        return (f"editing is off: start the studio with {EDITOR_TOKEN_ENV} set to a secret of at least "
                f"{MIN_EDITOR_TOKEN_CHARS} characters")

    def sign_in(self, name: str, token: str) -> str:
        """A new editor session for `name`; InvalidInput when the name or the token is wrong."""
        if not self.enabled:
            raise InvalidInput({"token": self.why_disabled})
        name = " ".join((name or "").split())
        if not EDITOR_NAME.match(name):
            raise InvalidInput({"name": "a name of 1-80 letters, digits, spaces, '.', '_' or '-'"})
        if not hmac.compare_digest((token or "").encode(), self._token.encode()):
            raise InvalidInput({"token": "that is not the editor token"})
        session = new_token()
        with self._lock:
            now = time.time()
            self._sessions = {k: v for k, v in self._sessions.items() if v[1] > now}
            self._sessions[session] = (name, now + EDITOR_SESSION_SECONDS)
        return session

    def editor(self, session: str | None) -> str | None:
        """The signed-in editor's name for a session cookie, or None."""
        if not self.enabled or not looks_like_token(session):
            return None
        with self._lock:
            found = self._sessions.get(session)
        if found is None or found[1] < time.time():
            return None
        return found[0]

    def sign_out(self, session: str | None) -> None:
        with self._lock:
            self._sessions.pop(session or "", None)


# --- persona edits from form text ------------------------------------------------------------------

_CHOICES = {"age_band": AGE_BANDS, "gender": GENDERS}
_TEXT_LIMITS = {"locale": 80, "profession": 80, "summary": 600}
_WORD_LISTS = {"personality_traits": 8, "hobbies": 10, "interests": 12, "affective_traits": 8}


def field_help(field: str) -> str:
    if field in _CHOICES:
        return "one of: " + ", ".join(_CHOICES[field])
    if field == "visual_interests":
        return "up to three, separated by semicolons, from: " + "; ".join(VISUAL_INTERESTS)
    if field in _WORD_LISTS:
        return f"words separated by commas (at most {_WORD_LISTS[field]})"
    if field == "aesthetics":
        return 'JSON: {"palette": [...], "lighting": [...], "mood": [...], "styles": [...]}'
    if field == "confidence":
        return "a number from 0 to 1"
    return f"text, at most {_TEXT_LIMITS.get(field, 80)} characters"


def field_as_text(persona: dict, field: str) -> str:
    """A persona field as the edit form shows it (the inverse of `parse_field_value`)."""
    value = persona.get(field)
    if field == "visual_interests":
        return "; ".join(value or [])
    if field in _WORD_LISTS:
        return ", ".join(value or [])
    if field == "aesthetics":
        return json.dumps(value or {})
    return "" if value is None else str(value)


def parse_field_value(field: str, text: str):
    """The value an editor typed for `field`, checked against the persona schema; InvalidInput if not."""
    if field not in EDITABLE_FIELDS:
        raise InvalidInput({"field": f"not a persona field; one of {', '.join(EDITABLE_FIELDS)}"})
    try:
        if field == "aesthetics":
            if len(text or "") > 2000:
                raise ValueError("is longer than 2000 characters")
            try:
                value = json.loads(text or "")
            except json.JSONDecodeError as error:
                raise ValueError(f"is not JSON ({error.msg})") from None
        elif field == "confidence":
            try:
                value = float((text or "").strip())
            except ValueError:
                raise ValueError("is not a number") from None
        elif field == "visual_interests":
            value = [v.strip() for v in clean_text(text, 400, required=False).split(";") if v.strip()]
        elif field in _WORD_LISTS:
            value = [v.strip() for v in clean_text(text, 600, required=False).split(",") if v.strip()]
            if any(len(v) > 60 for v in value):
                raise ValueError("has an entry longer than 60 characters")
        else:
            value = clean_text(text, _TEXT_LIMITS.get(field, 80), required=field != "summary")
        Persona.model_validate({field: value})
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidInput({"value": f"{where}: {first['msg']}"[:300]}) from None
    except ValueError as error:
        raise InvalidInput({"value": f"{field} {error}"[:300]}) from None
    return value
