"""Dagster resources shared by every stage (thin: the work is in plain modules)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from zipp_assets.settings import Settings, load_settings


class ZippLake(dg.ConfigurableResource):
    """Where the data and the lake live and the profile it runs under; defaults come from the
    environment. `lake_uri` (empty: data_dir/lake) may be an object store; its credentials come from
    AWS_*/GOOGLE_*/AZURE_* environment variables, never from this configuration."""

    data_dir: str
    profile: str = "demo"
    quarantine_max_fraction: float = 0.001
    lake_uri: str = ""
    lake_retention_hours: int = 168  # vacuum keeps the files of table versions younger than this
    longest_run_hours: int = 24  # vacuum refuses a retention shorter than this (a running writer's files)
    ingest_workers: int = 0  # parse processes per dump (0: automatic, see reddit.ingest.worker_count)
    sentence_encoder: str = ""  # the claims_grounded check's encoder folder (empty: data_dir/models/all-minilm-l6-v2)

    @classmethod
    def from_environment(cls) -> ZippLake:
        settings = load_settings()
        return cls(
            data_dir=str(settings.data_dir),
            profile=settings.profile,
            quarantine_max_fraction=settings.quarantine_max_fraction,
            lake_uri=settings.lake_uri,
            lake_retention_hours=settings.lake_retention_hours,
            longest_run_hours=settings.longest_run_hours,
            ingest_workers=settings.ingest_workers,
            sentence_encoder=settings.sentence_encoder,
        )

    @property
    def settings(self) -> Settings:
        return Settings(
            profile=self.profile,
            data_dir=Path(self.data_dir).resolve(),
            quarantine_max_fraction=self.quarantine_max_fraction,
            lake_uri=self.lake_uri,
            lake_retention_hours=self.lake_retention_hours,
            longest_run_hours=self.longest_run_hours,
            ingest_workers=self.ingest_workers,
            sentence_encoder=self.sentence_encoder,
        )
