"""Keyed pseudonyms: downstream of ingestion a user is an HMAC of its key, never a username."""

from __future__ import annotations

import hashlib
import hmac
import os
import warnings

# The demo key is public, so demo pseudonyms protect nothing; production must set its own secret.
DEMO_KEY = "zipp-demo-pseudonym-key"
PSEUDONYM_HEX_CHARS = 20


def pseudonym_key(profile: str, environ: dict[str, str] | None = None) -> bytes:
    env = os.environ if environ is None else environ
    secret = env.get("ZIPP_PSEUDONYM_KEY", "")
    if not secret:
        if profile == "production":
            raise RuntimeError("ZIPP_PSEUDONYM_KEY must be set in the production profile (a long random secret)")
        warnings.warn("ZIPP_PSEUDONYM_KEY is unset: using the public demo key", stacklevel=2)
        secret = DEMO_KEY
    return secret.encode("utf-8")


def pseudonymize(user_keys: list[str], key: bytes) -> list[str]:
    """'u_' + the first 80 bits of HMAC-SHA256(key, user_key), hex: stable, not reversible without the key."""
    return ["u_" + hmac.new(key, k.encode("utf-8"), hashlib.sha256).hexdigest()[:PSEUDONYM_HEX_CHARS] for k in user_keys]
