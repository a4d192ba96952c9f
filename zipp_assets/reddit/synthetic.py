"""The marker a synthetic world carries beside its dumps, and the pipeline's check of it.

The public demo pseudonym key protects nothing, so it may only pseudonymize a synthetic world.
A dumps folder counts as synthetic when `SYNTHETIC_WORLD.json` in it lists every dump file under
it (RC_/RS_YYYY-MM.zst, flat or in comments/ and submissions/) by path, size and SHA-256, as the
generator wrote them. A real dump cannot pass by accident: it would have to be listed with its
own digest. A real month copied next to a synthetic world, a marker copied next to real dumps,
and a dump changed after generation all fail the check. (A profile name or a flag would not do:
the default profile is `demo`, and pointing it at real dumps is one environment variable away.)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from zipp_assets.reddit.dumps import DUMP_NAME

MARKER = "SYNTHETIC_WORLD.json"
MARKER_KIND = "zipp synthetic world"


def _dump_files(reddit_dir: Path) -> list[Path]:
    return sorted(p for p in Path(reddit_dir).rglob("*.zst") if DUMP_NAME.match(p.name) and p.is_file())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def mark_synthetic_world(reddit_dir: Path, generator: str) -> Path:
    """Write the marker for the dumps now in `reddit_dir` (the generator calls this after writing them)."""
    reddit_dir = Path(reddit_dir)
    dumps = {p.relative_to(reddit_dir).as_posix(): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
             for p in _dump_files(reddit_dir)}
    marker = reddit_dir / MARKER
    marker.write_text(json.dumps({"kind": MARKER_KIND, "generator": generator, "dumps": dumps}, indent=1, sort_keys=True))
    return marker


def not_synthetic_because(reddit_dir: Path) -> str | None:
    """None if every dump in `reddit_dir` is one a generator marked as synthetic; else why not."""
    reddit_dir = Path(reddit_dir)
    marker = reddit_dir / MARKER
    try:
        listed = json.loads(marker.read_text())
        if listed.get("kind") != MARKER_KIND or not isinstance(listed.get("dumps"), dict):
            return f"{marker} is not a synthetic-world marker"
        listed = listed["dumps"]
    except FileNotFoundError:
        return f"no {MARKER} beside the dumps in {reddit_dir}"
    except (OSError, ValueError, AttributeError) as exc:
        return f"{marker} cannot be read ({type(exc).__name__})"
    dumps = _dump_files(reddit_dir)
    if not dumps:
        return f"no dumps in {reddit_dir}"
    for path in dumps:
        name = path.relative_to(reddit_dir).as_posix()
        entry = listed.get(name)
        if not isinstance(entry, dict):
            return f"{name} is not listed in {MARKER}"
        # The size first: a different file is refused without reading it.
        if entry.get("bytes") != path.stat().st_size or entry.get("sha256") != _sha256(path):
            return f"{name} differs from the synthetic dump {MARKER} lists"
    return None
