"""Profile and paths, read from environment variables.

`ZIPP_PROFILE` is `demo` (default: offline, synthetic world, no model weights) or `production`
(real models from local paths or a populated cache, real services). `ZIPP_DATA_DIR` is the root of
the lake (default `./data`); every other path is derived from it so that one variable moves the
whole pipeline.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROFILES = ("demo", "production")


@dataclass(frozen=True)
class Settings:
    profile: str
    data_dir: Path
    quarantine_max_fraction: float

    @property
    def raw_dir(self) -> Path:
        return self.data_dir / "raw"

    @property
    def reddit_raw_dir(self) -> Path:
        return self.raw_dir / "reddit"

    @property
    def image_cache_dir(self) -> Path:
        return self.raw_dir / "images"

    @property
    def lake_dir(self) -> Path:
        return self.data_dir / "lake"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def truth_dir(self) -> Path:
        """Planted ground truth of a synthetic world: for evaluation only, never a pipeline input."""
        return self.data_dir / "truth"


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    profile = env.get("ZIPP_PROFILE", "demo").strip().lower()
    if profile not in PROFILES:
        raise ValueError(f"ZIPP_PROFILE must be one of {PROFILES}, got {profile!r}")
    raw_fraction = env.get("ZIPP_QUARANTINE_MAX_FRACTION", "0.001")
    try:
        fraction = float(raw_fraction)
    except ValueError:
        raise ValueError(f"ZIPP_QUARANTINE_MAX_FRACTION must be a number, got {raw_fraction!r}") from None
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"ZIPP_QUARANTINE_MAX_FRACTION must be within [0, 1], got {fraction}")
    data_dir = Path(env.get("ZIPP_DATA_DIR", "data")).expanduser().resolve()
    return Settings(profile=profile, data_dir=data_dir, quarantine_max_fraction=fraction)
