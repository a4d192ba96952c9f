"""Profile and paths, read from environment variables.

`ZIPP_PROFILE` is `demo` (default: offline, synthetic world, no model weights) or `production`
(real models from local paths or a populated cache, real services). `ZIPP_DATA_DIR` (default
`./data`) is a local or mounted folder; every path is derived from it so that one variable moves the
whole pipeline. The lake is `ZIPP_DATA_DIR/lake` unless `ZIPP_LAKE_URI` puts it elsewhere: another
local path or an object store (`s3://bucket/prefix`, `gs://...`, `az://...`; credentials from the
environment, see `zipp_assets.lake.storage_options`). Raw dumps, the image cache, checkpoints and
work folders stay under ZIPP_DATA_DIR: they are read and written as local files.
`ZIPP_LAKE_RETENTION_HOURS` (default 168) is how long vacuum keeps files of old table versions.
`ZIPP_INGEST_WORKERS` (default 0: one per CPU for dumps of 64 MiB and more) is how many processes parse
a dump; 1 keeps ingestion in one process. Set it to the CPUs a container is given where its CPU
limit is below the CPUs the machine shows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from zipp_assets.lake import is_object_store

PROFILES = ("demo", "production")


@dataclass(frozen=True)
class Settings:
    profile: str
    data_dir: Path
    quarantine_max_fraction: float
    lake_uri: str = ""  # empty: data_dir / "lake"
    lake_retention_hours: int = 168
    longest_run_hours: int = 24  # the shortest retention vacuum accepts (see `lake.LONGEST_RUN_HOURS`)
    ingest_workers: int = 0  # 0: automatic (see `reddit.ingest.worker_count`)
    sentence_encoder: str = ""  # empty: models_dir / "all-minilm-l6-v2" (personas/grounding.py)

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
    def lake_dir(self) -> Path | str:
        """The lake's root: a Path on a local lake, the URI (a str) on an object store."""
        if not self.lake_uri:
            return self.data_dir / "lake"
        return self.lake_uri.rstrip("/") if is_object_store(self.lake_uri) else Path(self.lake_uri).expanduser().resolve()

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def sentence_encoder_dir(self) -> Path:
        """The sentence encoder of the `claims_grounded` check: `make models` unpacks all-MiniLM-L6-v2 under
        the data folder's models; ZIPP_SENTENCE_ENCODER_DIR points elsewhere (a demo with its own data folder)."""
        return Path(self.sentence_encoder).expanduser().resolve() if self.sentence_encoder else \
            self.models_dir / "all-minilm-l6-v2"

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
    data_text = env.get("ZIPP_DATA_DIR", "data")
    if is_object_store(data_text):
        raise ValueError(f"ZIPP_DATA_DIR must be a local or mounted folder (raw dumps, image cache, checkpoints), got "
                         f"{data_text!r}: put the lake on the object store with ZIPP_LAKE_URI instead")
    hours = {}
    for name, default in (("ZIPP_LAKE_RETENTION_HOURS", "168"), ("ZIPP_LONGEST_RUN_HOURS", "24")):
        hours[name] = env.get(name, default)
        if not hours[name].isdigit():
            raise ValueError(f"{name} must be a whole number of hours, got {hours[name]!r}")
    retention, longest_run = int(hours["ZIPP_LAKE_RETENTION_HOURS"]), int(hours["ZIPP_LONGEST_RUN_HOURS"])
    workers = env.get("ZIPP_INGEST_WORKERS", "0").strip()
    if not workers.isdigit():
        raise ValueError(f"ZIPP_INGEST_WORKERS must be a whole number of processes (0: one per CPU), got {workers!r}")
    if retention < longest_run:
        raise ValueError(f"ZIPP_LAKE_RETENTION_HOURS ({retention}) must be at least ZIPP_LONGEST_RUN_HOURS ({longest_run}): "
                         "vacuum would delete the files of a run that has not committed yet")
    return Settings(profile=profile, data_dir=Path(data_text).expanduser().resolve(), quarantine_max_fraction=fraction,
                    lake_uri=env.get("ZIPP_LAKE_URI", "").strip(), lake_retention_hours=retention,
                    longest_run_hours=longest_run, ingest_workers=int(workers),
                    sentence_encoder=env.get("ZIPP_SENTENCE_ENCODER_DIR", "").strip())
