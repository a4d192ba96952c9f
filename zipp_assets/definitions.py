"""The one Definitions object of the project: assets, checks, jobs, sensors, resources and executor.

ZIPP_EXECUTOR=k8s (the production profile on Kubernetes, deploy/) runs each step in its own pod with
`k8s_job_executor`; otherwise Dagster's default executor runs them in this machine's processes.
"""

from __future__ import annotations

import dagster as dg

from zipp_assets.encoder.assets import encoder_assets
from zipp_assets.graph.assets import graph_assets
from zipp_assets.imaging.resources import ImageEncoderResource, ImageGeneratorResource
from zipp_assets.k8s import executor_for
from zipp_assets.llm.resources import LLMResource
from zipp_assets.maintenance import lake_vacuum_job, lake_vacuum_schedule
from zipp_assets.personas.assets import injection_assets, persona_assets
from zipp_assets.personas.automation import remining_jobs, remining_sensors, with_remining
from zipp_assets.privacy.assets import privacy_assets
from zipp_assets.reddit.assets import reddit_assets, reddit_monthly_job
from zipp_assets.reddit.sensors import new_reddit_dumps
from zipp_assets.resources import ZippLake
from zipp_assets.studio.assets import studio_assets, studio_sensors
from zipp_assets.zipbench.assets import zipbench_assets

_lake = ZippLake.from_environment()

defs = dg.Definitions(
    assets=with_remining([*reddit_assets, *graph_assets, *encoder_assets, *persona_assets, *injection_assets,
                          *zipbench_assets,
                          *studio_assets, *privacy_assets]),
    jobs=[reddit_monthly_job, *remining_jobs, lake_vacuum_job],
    schedules=[lake_vacuum_schedule],
    sensors=[new_reddit_dumps, *remining_sensors, *studio_sensors],
    resources={
        "lake": _lake,
        "image_encoder": ImageEncoderResource.for_profile(_lake.profile),
        "llm": LLMResource.for_profile(_lake.profile),
        "image_generator": ImageGeneratorResource.for_profile(_lake.profile),
    },
    executor=executor_for(),
)
