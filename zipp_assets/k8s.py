"""What each asset's pod needs on Kubernetes, in one place, and which executor runs the steps.

Every asset names a pod size here through `pod_tags(...)`, its `dagster-k8s/config` op tags. Under
the production profile on Kubernetes (ZIPP_EXECUTOR=k8s) `k8s_job_executor` runs each step in its own
pod with those requests; elsewhere the tags are inert and the default executor runs the steps. GPU
steps ask for `nvidia.com/gpu` and go to GPU nodes (node selector and toleration below); a cluster
whose GPU nodes carry other labels or taints changes them here, or per run through the executor's
`per_step_k8s_config`. This module never touches the lake or the models.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import dagster as dg

EXECUTOR_ENV = "ZIPP_EXECUTOR"
EXECUTORS = ("default", "k8s")
K8S_CONFIG_TAG = "dagster-k8s/config"
GPU_RESOURCE = "nvidia.com/gpu"
# The label NVIDIA's GPU feature discovery (GPU operator) puts on GPU nodes, and the taint most
# managed clusters (GKE, AKS, EKS GPU node groups) put on them so that CPU pods stay off.
GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}
GPU_TOLERATIONS = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]


@dataclass(frozen=True)
class PodSize:
    cpu: str
    memory: str
    gpus: int = 0
    env: tuple[tuple[str, str], ...] = ()  # set in the pod's container


# Ingestion parses a dump with a process per CPU. Without a CPU limit a container sees every CPU of its
# node, so the pod says how many processes its request pays for.
_INGESTION_CPUS = 4


# Memory at the paper's scale (22M users drawn, 197.6M graph edges), from the full-size run in
# bench/README.md (CPU, peak RSS): graph tables 4.4 GiB, DGL graph 12.5, training 15.5, inference 16.3,
# evidence 6.6. Sizes leave about twice that (GPU steps also hold CUDA's host-side buffers, not
# measured). The memory request is also the limit, so a step that outgrows it is killed by
# Kubernetes instead of starving its node's neighbours.
POD_SIZES: dict[str, PodSize] = {
    "small": PodSize(cpu="1", memory="4Gi"),            # summaries, reports, drift, the study's results
    "ingestion": PodSize(cpu=str(_INGESTION_CPUS), memory="8Gi",  # a month of dumps, streamed in blocks
                         env=(("ZIPP_INGEST_WORKERS", str(_INGESTION_CPUS)),)),
    "llm_client": PodSize(cpu="2", memory="8Gi"),       # prompts to the vLLM Service; the GPU is the server's
    "evidence": PodSize(cpu="4", memory="16Gi"),        # evidence packing over a range of user shards (6.6 GiB)
    "graph_tables": PodSize(cpu="4", memory="16Gi"),    # graph tables (4.4 GiB) and visual profiles over every month
    "encoder_training": PodSize(cpu="8", memory="32Gi", gpus=1),   # DGL graph (12.5 GiB) + sampling (15.5)
    "encoder_inference": PodSize(cpu="8", memory="32Gi", gpus=1),  # every user embedded, layer by layer (16.3)
    "image_gpu": PodSize(cpu="4", memory="32Gi", gpus=1),          # open_clip embeddings, diffusion
}


def pod_config(size: str) -> dict:
    """The `dagster-k8s/config` value for a pod of this size (keys as dagster-k8s reads them)."""
    pod = POD_SIZES[size]
    requests = {"cpu": pod.cpu, "memory": pod.memory}
    limits = {"memory": pod.memory}
    if pod.gpus:
        # Kubernetes needs a GPU limit; a GPU request alone is refused (and equal to it when given).
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = str(pod.gpus)
    config: dict = {"container_config": {"resources": {"requests": requests, "limits": limits}},
                    "pod_template_spec_metadata": {"labels": {"zipp/pod-size": size}}}
    if pod.env:
        config["container_config"]["env"] = [{"name": name, "value": value} for name, value in pod.env]
    if pod.gpus:
        config["pod_spec_config"] = {"node_selector": dict(GPU_NODE_SELECTOR),
                                     "tolerations": [dict(t) for t in GPU_TOLERATIONS]}
    return config


def pod_tags(size: str) -> dict[str, dict]:
    """Op tags for an asset whose pod is of this size."""
    return {K8S_CONFIG_TAG: pod_config(size)}


def executor_name(environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    name = env.get(EXECUTOR_ENV, "default").strip().lower() or "default"
    if name not in EXECUTORS:
        raise ValueError(f"{EXECUTOR_ENV} must be one of {EXECUTORS}, got {name!r}")
    return name


def executor_for(environ: Mapping[str, str] | None = None) -> dg.ExecutorDefinition | None:
    """`k8s_job_executor` when ZIPP_EXECUTOR=k8s (each step its own pod, sized by its tags); None
    otherwise, which keeps Dagster's default executor (the demo and one-machine runs)."""
    if executor_name(environ) != "k8s":
        return None
    from dagster_k8s import k8s_job_executor  # imported here: the demo does not need the Kubernetes client

    return k8s_job_executor
