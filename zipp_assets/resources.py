"""Dagster resources shared by every stage (thin: the work is in plain modules)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from zipp_assets.settings import Settings, load_settings


class ZippLake(dg.ConfigurableResource):
    """Where the lake lives and the profile it runs under; defaults come from the environment."""

    data_dir: str
    profile: str = "demo"
    quarantine_max_fraction: float = 0.001

    @classmethod
    def from_environment(cls) -> ZippLake:
        settings = load_settings()
        return cls(
            data_dir=str(settings.data_dir),
            profile=settings.profile,
            quarantine_max_fraction=settings.quarantine_max_fraction,
        )

    @property
    def settings(self) -> Settings:
        return Settings(
            profile=self.profile,
            data_dir=Path(self.data_dir).resolve(),
            quarantine_max_fraction=self.quarantine_max_fraction,
        )
