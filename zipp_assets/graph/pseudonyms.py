"""Keyed pseudonyms: downstream of ingestion a user is an HMAC of its key, never a username."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import warnings

from zipp_assets.reddit.synthetic import not_synthetic_because
from zipp_assets.settings import Settings

# The demo key is public, so demo pseudonyms protect nothing: it is refused on anything but a
# synthetic world (reddit/synthetic.py), and production must set its own secret.
DEMO_KEY = "zipp-demo-pseudonym-key"
PSEUDONYM_HEX_CHARS = 20
MIN_KEY_BYTES = 32  # HMAC-SHA256's own output size: a guessable key would let anyone recompute every pseudonym
MIN_DISTINCT_KEY_BYTES = 16  # 32 random bytes hold about 30 distinct values; "0000..." or "abab..." hold few
KEY_ADVICE = ("set ZIPP_PSEUDONYM_KEY to at least 32 random bytes, written as hex (64+ characters) or base64, "
              "e.g. the output of `python -c 'import secrets; print(secrets.token_hex(32))'`")
_HEX = re.compile(r"[0-9a-fA-F]+")


def decode_key(secret: str) -> bytes | None:
    """The key bytes ZIPP_PSEUDONYM_KEY encodes: hex when it is all hex digits, else base64 (standard
    or URL-safe, padding optional); None when it is neither."""
    text = secret.strip()
    if _HEX.fullmatch(text) and len(text) % 2 == 0:
        return bytes.fromhex(text)
    try:
        return base64.b64decode(text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def weak_key_because(secret: str) -> str | None:
    """Why a ZIPP_PSEUDONYM_KEY value is not at least 32 random bytes, or None when it is."""
    key = decode_key(secret)
    if key is None:
        return "it is neither hex nor base64"
    if len(key) < MIN_KEY_BYTES:
        return f"it encodes {len(key)} bytes, fewer than {MIN_KEY_BYTES}"
    if len(set(key)) < MIN_DISTINCT_KEY_BYTES:
        return f"its {len(key)} bytes hold only {len(set(key))} distinct values: not random"
    return None


def pseudonym_key(settings: Settings, environ: dict[str, str] | None = None) -> bytes:
    """ZIPP_PSEUDONYM_KEY; without it, the public demo key, only in the demo profile on a synthetic world.

    A key of at least 32 random bytes (hex or base64) is used as the bytes it encodes. The production
    profile refuses anything else; the demo profile also takes a short key (a test's), as UTF-8 text."""
    env = os.environ if environ is None else environ
    secret = env.get("ZIPP_PSEUDONYM_KEY", "")
    if secret and secret != DEMO_KEY:
        why_weak = weak_key_because(secret)
        if why_weak is None:
            return decode_key(secret)
        if settings.profile == "production":
            raise RuntimeError(f"ZIPP_PSEUDONYM_KEY is refused in the production profile: {why_weak}; {KEY_ADVICE}")
        return secret.encode("utf-8")
    if settings.profile == "production":
        raise RuntimeError("ZIPP_PSEUDONYM_KEY must be set in the production profile (not the public demo key): "
                           + KEY_ADVICE)
    why_not = not_synthetic_because(settings.reddit_raw_dir)
    if why_not:
        raise RuntimeError(f"the public demo pseudonym key is only for a synthetic world, and this is not one "
                           f"({why_not}): set ZIPP_PSEUDONYM_KEY to a long random secret")
    warnings.warn("using the public demo pseudonym key (a synthetic world, ZIPP_PSEUDONYM_KEY unset)", stacklevel=2)
    return DEMO_KEY.encode("utf-8")


def pseudonymize(user_keys: list[str], key: bytes) -> list[str]:
    """'u_' + the first 80 bits of HMAC-SHA256(key, user_key), hex: stable, not reversible without the key."""
    return ["u_" + hmac.new(key, k.encode("utf-8"), hashlib.sha256).hexdigest()[:PSEUDONYM_HEX_CHARS] for k in user_keys]
