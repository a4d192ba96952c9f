"""Who may do what in the studio: editor accounts, editor sign-in, and participants' invitation links.

- Editors: one account per person in `ZIPP_DATA_DIR/studio/editors.json`, added and revoked with
  `python -m zipp_assets.studio editors ...`. Each account has its own random token, printed once when
  it is made; the file keeps only the token's SHA-256 (the tokens are 256 random bits, so a fast hash
  is enough: there is nothing to guess from it). Signing in with a token gives a session for that
  account, and the audit trail records the account's name. A revoked or rotated token ends the
  account's sessions at their next request; a revoked name is never given to another person, so the
  audit trail stays unambiguous.
- Invitations (for a public study): an editor makes links that start at most `max_uses` study
  sessions each before they expire; the file keeps only the hash of each link's token.

Both files are changed under an exclusive file lock and replaced atomically, so the command line and a
running studio can change them at once and a reader always sees a whole version.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

from zipp_assets.studio.security import looks_like_token, new_token
from zipp_assets.studio.study import InvalidInput

EDITORS_FILE, INVITATIONS_FILE = "editors.json", "invitations.json"
EDITOR_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,79}$")
EDITOR_SESSION_SECONDS = 8 * 3600
MAX_INVITATION_USES, MAX_INVITATION_DAYS, MAX_INVITATIONS_AT_ONCE = 1000, 365, 100
ADD_EDITOR_COMMAND = "python -m zipp_assets.studio editors add NAME"


def _digest(kind: str, token: str) -> str:
    return hashlib.sha256(f"zipp-studio-{kind}/{token}".encode()).hexdigest()


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _stamp(when: datetime) -> str:
    return when.isoformat(timespec="seconds")


class JsonDocument:
    """A small JSON object in a file: read whole, changed under `path.lock` (fcntl) and replaced atomically."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._thread_lock = threading.Lock()  # flock is per open file, not per thread

    def read(self) -> dict:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{self.path} is not valid JSON ({error.msg}, line {error.lineno})") from None
        if not isinstance(document, dict):
            raise ValueError(f"{self.path} does not hold a JSON object")
        return document

    def version(self) -> tuple | None:
        """What changes whenever the file is replaced (None: no file)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    @contextlib.contextmanager
    def change(self) -> Iterator[dict]:
        """The document to change in place; written back when the block ends without an exception."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._thread_lock, open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            document = self.read()
            yield document
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with open(fd, "w", encoding="utf-8") as f:
                json.dump(document, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            folder = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)


# --- editors -----------------------------------------------------------------------------------


def check_editor_name(name: str) -> str:
    name = " ".join((name or "").split())
    if not EDITOR_NAME.match(name):
        raise ValueError(f"an editor's name is 1-80 letters, digits, spaces, '.', '_' or '-', got {name[:80]!r}")
    return name


class EditorRegistry:
    """The editor accounts in `editors.json`: name, token hash, when made, when revoked."""

    def __init__(self, path: Path):
        self.file = JsonDocument(path)
        self._cached: tuple[tuple | None, list[dict]] = (("never read",), [])

    def _editors(self) -> list[dict]:
        version = self.file.version()  # one stat per request; the file is re-read only when replaced
        if version != self._cached[0]:
            self._cached = (version, list(self.file.read().get("editors", [])))
        return self._cached[1]

    def listed(self) -> list[dict]:
        return [{k: e[k] for k in ("name", "created_utc", "revoked_utc")} for e in self._editors()]

    def any_active(self) -> bool:
        return any(e["revoked_utc"] is None for e in self._editors())

    def add(self, name: str, token: str | None = None) -> str:
        """A new account; returns its token (shown once: only its hash is kept). ValueError for a bad or
        taken name (a revoked name stays taken)."""
        name = check_editor_name(name)
        token = token or new_token()
        if not looks_like_token(token):
            raise ValueError("an editor token is 20-100 letters, digits, '-' or '_'")
        with self.file.change() as document:
            editors = document.setdefault("editors", [])
            if any(e["name"].casefold() == name.casefold() for e in editors):
                raise ValueError(f"there is already an editor named {name!r} (revoked names stay taken, so the "
                                 "audit trail names one person); use `editors rotate` for a new token")
            editors.append({"name": name, "token_sha256": _digest("editor", token), "created_utc": _stamp(_utc_now()),
                            "revoked_utc": None})
        return token

    def _active(self, document: dict, name: str) -> dict:
        for editor in document.get("editors", []):
            if editor["name"].casefold() == name.casefold() and editor["revoked_utc"] is None:
                return editor
        raise ValueError(f"no active editor named {name!r}")

    def rotate(self, name: str) -> str:
        """A new token for an active account; the old one and its sessions stop working."""
        token = new_token()
        with self.file.change() as document:
            self._active(document, name)["token_sha256"] = _digest("editor", token)
        return token

    def revoke(self, name: str) -> None:
        with self.file.change() as document:
            self._active(document, name)["revoked_utc"] = _stamp(_utc_now())

    def name_for_digest(self, digest: str) -> str | None:
        """The active account whose token hashes to `digest`, or None."""
        found = None
        for editor in self._editors():
            if hmac.compare_digest(editor["token_sha256"], digest) and editor["revoked_utc"] is None:
                found = editor["name"]
        return found


class EditorAuth:
    """Editor sign-in against the registry; sessions live in memory until they expire, and each request
    checks the account is still active with the same token."""

    def __init__(self, registry: EditorRegistry):
        self.registry = registry
        self._sessions: dict[str, tuple[str, float]] = {}  # session -> (token digest, expiry)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.registry.any_active()

    @property
    def why_disabled(self) -> str:
        return f"editing is off: no editor accounts yet; add one with `{ADD_EDITOR_COMMAND}`"

    def sign_in(self, token: str) -> str:
        """A new session for the account that owns `token`; InvalidInput when no account does."""
        if not self.enabled:
            raise InvalidInput({"token": self.why_disabled})
        digest = _digest("editor", token or "")
        if not looks_like_token(token) or self.registry.name_for_digest(digest) is None:
            raise InvalidInput({"token": "that is not the editor token of an active account"})
        session = new_token()
        with self._lock:
            now = time.time()
            self._sessions = {k: v for k, v in self._sessions.items() if v[1] > now}
            self._sessions[session] = (digest, now + EDITOR_SESSION_SECONDS)
        return session

    def editor(self, session: str | None) -> str | None:
        """The signed-in editor's account name for a session cookie, or None."""
        if not looks_like_token(session):
            return None
        with self._lock:
            found = self._sessions.get(session)
        if found is None or found[1] < time.time():
            return None
        return self.registry.name_for_digest(found[0])

    def sign_out(self, session: str | None) -> None:
        with self._lock:
            self._sessions.pop(session or "", None)


# --- invitations -------------------------------------------------------------------------------


def _whole_number(form: dict, name: str, default: int, most: int) -> int:
    text = (form.get(name) or str(default)).strip()
    if not text.isdigit() or not 1 <= int(text) <= most:
        raise InvalidInput({name: f"{name} must be a whole number from 1 to {most}"})
    return int(text)


class Invitations:
    """Invitation links for study participants in `invitations.json`."""

    def __init__(self, path: Path, now: Callable[[], datetime] = _utc_now):
        self.file = JsonDocument(path)
        self.now = now

    def create(self, created_by: str, uses: int = 1, days: int = 14, count: int = 1) -> list[str]:
        """`count` new links, each good for `uses` study sessions within `days`; returns their tokens."""
        if not (1 <= uses <= MAX_INVITATION_USES and 1 <= days <= MAX_INVITATION_DAYS
                and 1 <= count <= MAX_INVITATIONS_AT_ONCE):
            raise InvalidInput({"form": f"uses 1-{MAX_INVITATION_USES}, days 1-{MAX_INVITATION_DAYS}, "
                                        f"links 1-{MAX_INVITATIONS_AT_ONCE}"})
        now = self.now()
        tokens = [new_token() for _ in range(count)]
        with self.file.change() as document:
            document.setdefault("invitations", []).extend(
                {"id": secrets.token_hex(6), "token_sha256": _digest("invitation", t), "created_by": created_by,
                 "created_utc": _stamp(now), "expires_utc": _stamp(now + timedelta(days=days)), "max_uses": uses,
                 "uses": 0, "revoked_by": None} for t in tokens)
        return tokens

    def create_from_form(self, created_by: str, form: dict) -> list[str]:
        return self.create(created_by, _whole_number(form, "uses", 1, MAX_INVITATION_USES),
                           _whole_number(form, "days", 14, MAX_INVITATION_DAYS),
                           _whole_number(form, "count", 1, MAX_INVITATIONS_AT_ONCE))

    def listed(self) -> list[dict]:
        """Newest first, without token hashes, with `state`: open, used up, expired or revoked."""
        now = _stamp(self.now())
        rows = [{k: v for k, v in i.items() if k != "token_sha256"} | {"state": self._state(i, now)}
                for i in self.file.read().get("invitations", [])]
        return sorted(rows, key=lambda r: r["created_utc"], reverse=True)

    @staticmethod
    def _state(invitation: dict, now: str) -> str:
        if invitation["revoked_by"]:
            return "revoked"
        if invitation["expires_utc"] <= now:
            return "expired"
        if invitation["uses"] >= invitation["max_uses"]:
            return "used up"
        return "open"

    def _find(self, document: dict, token: str | None) -> dict:
        if looks_like_token(token):
            digest = _digest("invitation", token)
            for invitation in document.get("invitations", []):
                if hmac.compare_digest(invitation["token_sha256"], digest):
                    state = self._state(invitation, _stamp(self.now()))
                    if state == "open":
                        return invitation
                    raise InvalidInput({"invite": f"this invitation link is {state}; ask the researcher for a new one"})
        raise InvalidInput({"invite": "this is not a valid invitation link; ask the researcher for one"})

    def check(self, token: str | None) -> None:
        """InvalidInput unless `token` is an open invitation."""
        self._find(self.file.read(), token)

    def redeem(self, token: str | None) -> str:
        """Use the invitation once (atomically: two participants cannot both take its last use); its id."""
        with self.file.change() as document:
            invitation = self._find(document, token)
            invitation["uses"] += 1
            return invitation["id"]

    def revoke(self, invitation_id: str, by: str) -> None:
        with self.file.change() as document:
            for invitation in document.get("invitations", []):
                if invitation["id"] == invitation_id:
                    invitation["revoked_by"] = by
                    return
        raise InvalidInput({"id": "no such invitation"})
