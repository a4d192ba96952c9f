"""The studio's guards, without HTTP: form parsing with limits, CSRF tokens, rate limits, and persona
edits parsed from form text (editor accounts and invitations are in `access`).

- Forms are `application/x-www-form-urlencoded` only, at most `MAX_FORM_BYTES`, `MAX_FIELDS` fields,
  each name once, UTF-8; anything else is refused before a handler sees it.
- CSRF: every browser gets a random token in an HttpOnly, SameSite=Strict cookie; every form carries
  it in a hidden field and a POST is refused unless the two match (double submit, compared in constant
  time).
- Rate limits: a sliding window per client address and over all clients; a client over either is
  refused, right token or not, until the window has moved on.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl

from pydantic import ValidationError

from zipp_assets.personas.schema import AGE_BANDS, EDITABLE_FIELDS, GENDERS, VISUAL_INTERESTS, Persona
from zipp_assets.studio.study import InvalidInput, clean_text

MAX_FORM_BYTES = 32 * 1024
MAX_FIELDS = 64
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


@dataclass(frozen=True)
class Limit:
    """At most `per_client` events from one client address and `overall` events in all within any
    `window_s` seconds."""

    per_client: int
    overall: int
    window_s: float

    def __post_init__(self):
        if self.per_client < 1 or self.overall < self.per_client or not self.window_s > 0:
            raise ValueError(f"a limit needs 1 <= per client <= overall and a window above 0 s, got {self}")

    @classmethod
    def parse(cls, text: str) -> Limit:
        """`PER_CLIENT/OVERALL/WINDOW_SECONDS`, e.g. `5/50/900`."""
        parts = (text or "").split("/")
        if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"a limit is PER_CLIENT/OVERALL/WINDOW_SECONDS in whole numbers, e.g. 5/50/900; "
                             f"got {text!r}")
        return cls(int(parts[0]), int(parts[1]), float(parts[2]))


# Wrong editor tokens; and new study sessions with the invitation links refused. Both are kept small
# enough that guessing is hopeless and one address cannot fill the job queue.
SIGN_IN_LIMIT = Limit(per_client=5, overall=50, window_s=900)
SESSION_LIMIT = Limit(per_client=10, overall=200, window_s=3600)


def client_key(address: str | None) -> str:
    """The address a limit counts against: an IPv4 address, or an IPv6 address's /64 (one host
    commonly holds a whole /64, so counting single IPv6 addresses would be no limit at all)."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return address or "unknown"
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class RateLimiter:
    """A sliding-window `Limit`. The events of the window are kept in one queue (oldest first) and per
    client, so memory is bounded by `limit.overall`, whoever sends what."""

    def __init__(self, limit: Limit, clock: Callable[[], float] = time.monotonic):
        self.limit = limit
        self.clock = clock
        self._events: deque[tuple[float, str]] = deque()
        self._by_client: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _expire(self, now: float) -> None:
        while self._events and self._events[0][0] <= now - self.limit.window_s:
            _, client = self._events.popleft()
            mine = self._by_client[client]
            mine.popleft()
            if not mine:
                del self._by_client[client]

    def _wait(self, client: str, now: float) -> float:
        mine = self._by_client.get(client, ())
        waits = [0.0]
        if len(mine) >= self.limit.per_client:
            waits.append(mine[-self.limit.per_client] + self.limit.window_s - now)
        if len(self._events) >= self.limit.overall:
            waits.append(self._events[-self.limit.overall][0] + self.limit.window_s - now)
        return max(waits)

    def blocked_for(self, client: str) -> float:
        """Seconds until `client` may try again (0.0: now)."""
        with self._lock:
            now = self.clock()
            self._expire(now)
            return self._wait(client, now)

    def record(self, client: str) -> None:
        with self._lock:
            now = self.clock()
            self._expire(now)
            self._events.append((now, client))
            self._by_client.setdefault(client, deque()).append(now)

    def take(self, client: str) -> float:
        """Record an event for `client` if the limit allows one now (returns 0.0); else the seconds to wait."""
        with self._lock:
            now = self.clock()
            self._expire(now)
            wait = self._wait(client, now)
            if wait <= 0:
                self._events.append((now, client))
                self._by_client.setdefault(client, deque()).append(now)
            return wait


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
