"""Keyed pseudonyms: downstream of ingestion a user is an HMAC of its key, never a username."""

from __future__ import annotations

import hashlib
import hmac
import os
import warnings

from zipp_assets.reddit.synthetic import not_synthetic_because
from zipp_assets.settings import Settings

# The demo key is public, so demo pseudonyms protect nothing: it is refused on anything but a
# synthetic world (reddit/synthetic.py), and production must set its own secret.
DEMO_KEY = "zipp-demo-pseudonym-key"
PSEUDONYM_HEX_CHARS = 20


def pseudonym_key(settings: Settings, environ: dict[str, str] | None = None) -> bytes:
    """ZIPP_PSEUDONYM_KEY; without it, the public demo key, only in the demo profile on a synthetic world."""
    env = os.environ if environ is None else environ
    secret = env.get("ZIPP_PSEUDONYM_KEY", "")
    if secret and secret != DEMO_KEY:
        return secret.encode("utf-8")
    if settings.profile == "production":
        raise RuntimeError("ZIPP_PSEUDONYM_KEY must be set to a long random secret in the production profile "
                           "(not the public demo key)")
    why_not = not_synthetic_because(settings.reddit_raw_dir)
    if why_not:
        raise RuntimeError(f"the public demo pseudonym key is only for a synthetic world, and this is not one "
                           f"({why_not}): set ZIPP_PSEUDONYM_KEY to a long random secret")
    warnings.warn("using the public demo pseudonym key (a synthetic world, ZIPP_PSEUDONYM_KEY unset)", stacklevel=2)
    return DEMO_KEY.encode("utf-8")


def pseudonymize(user_keys: list[str], key: bytes) -> list[str]:
    """'u_' + the first 80 bits of HMAC-SHA256(key, user_key), hex: stable, not reversible without the key."""
    return ["u_" + hmac.new(key, k.encode("utf-8"), hashlib.sha256).hexdigest()[:PSEUDONYM_HEX_CHARS] for k in user_keys]
