"""The production profile on Kubernetes, offline: the Kubernetes Job of every asset's step, built by
dagster-k8s's own job construction from the Helm values and the asset's op tags, validates against
the Kubernetes API schema; GPU steps, and only they, ask for GPUs. No cluster is involved."""

import runpy
import types
from pathlib import Path

import dagster as dg
import kubernetes
import kubernetes_validate
import pytest
import yaml
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import (
    DagsterK8sJobConfig,
    UserDefinedDagsterK8sConfig,
    construct_dagster_k8s_job,
    get_k8s_job_name,
    get_user_defined_k8s_config,
)

from zipp_assets import k8s

ROOT = Path(__file__).resolve().parents[2]
HELM_VALUES = yaml.safe_load((ROOT / "deploy" / "helm" / "values.yaml").read_text())
# The Kubernetes API version of the installed client (kubernetes 36.x is generated from Kubernetes
# 1.36); kubernetes-validate ships that version's schemas.
API_VERSION = f"1.{int(kubernetes.__version__.split('.')[0])}"
GPU_ASSETS = {"persona_encoder", "encoder_evaluation", "user_embeddings", "user_top_subreddits", "image_embeddings",
              "zipbench_images", "zipbench_scores"}
GRAPH_TABLES = {"users", "subreddits", "graph_edges", "user_visual_profiles"}
# The chart's names for a release called `dagster`: the instance ConfigMap and the PostgreSQL secret.
RELEASE = types.SimpleNamespace(job_image=None, dagster_home=HELM_VALUES.get("dagsterHome", "/opt/dagster/dagster_home"),
                                instance_config_map="dagster-instance", postgres_password_secret="dagster-postgresql-secret")


@pytest.fixture(scope="module")
def production_defs(tmp_path_factory) -> dg.Definitions:
    """zipp_assets.definitions as the code location's environment in the Helm values loads it."""
    env = {e["name"]: e["value"] for e in HELM_VALUES["dagster-user-deployments"]["deployments"][0]["env"]}
    env["ZIPP_DATA_DIR"] = str(tmp_path_factory.mktemp("data"))  # the mounted volume, here a folder
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        return runpy.run_module("zipp_assets.definitions")["defs"]


def _location_context() -> K8sContainerContext:
    """What the run launcher and the code location (includeConfigInLaunchedRuns) give every pod."""
    deployment = HELM_VALUES["dagster-user-deployments"]["deployments"][0]
    launcher = HELM_VALUES["runLauncher"]["config"]["k8sRunLauncher"]
    run_k8s_config = {key: value for key, value in {
        "container_config": launcher["runK8sConfig"].get("containerConfig"),
        "pod_spec_config": launcher["runK8sConfig"].get("podSpecConfig")}.items() if value}
    return K8sContainerContext(
        namespace="zipp",
        image_pull_policy=launcher["imagePullPolicy"],
        env_secrets=[s["name"] for s in launcher["envSecrets"]],
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(run_k8s_config),
    ).merge(K8sContainerContext(
        env=deployment["env"], env_secrets=[s["name"] for s in deployment["envSecrets"]],
        volumes=deployment["volumes"], volume_mounts=deployment["volumeMounts"]))


def step_job_manifest(assets_def: dg.AssetsDefinition) -> dict:
    """The Job k8s_job_executor's step handler would create for this asset's step, as a manifest."""
    image = HELM_VALUES["dagster-user-deployments"]["deployments"][0]["image"]
    step_key = assets_def.op.name
    context = _location_context().merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(
        assets_def.op.tags)))
    job_name = f"dagster-step-{get_k8s_job_name('0123456789abcdef', step_key)}"
    job = construct_dagster_k8s_job(
        job_config=context.get_k8s_job_config(f"{image['repository']}:{image['tag']}", RELEASE),
        args=["dagster", "api", "execute_step"], job_name=job_name, pod_name=job_name, component="step_worker",
        user_defined_k8s_config=context.run_k8s_config,
        labels={"dagster/job": "__ASSET_JOB", "dagster/op": step_key, "dagster/run-id": "0123456789abcdef"},
        env_vars=[{"name": "DAGSTER_RUN_JOB_NAME", "value": "__ASSET_JOB"},
                  {"name": "DAGSTER_RUN_STEP_KEY", "value": step_key}])
    return kubernetes.client.ApiClient().sanitize_for_serialization(job)


def _steps(defs: dg.Definitions) -> list[dg.AssetsDefinition]:
    return [a for a in defs.resolve_asset_graph().assets_defs if a.is_executable]


def _container(manifest: dict) -> dict:
    return manifest["spec"]["template"]["spec"]["containers"][0]


def test_the_production_profile_runs_every_step_in_its_own_pod(production_defs):
    assert production_defs.resolve_implicit_global_asset_job_def().executor_def.name == "k8s"
    assert k8s.executor_for({}) is None and k8s.executor_for({"ZIPP_EXECUTOR": "default"}) is None  # the demo
    with pytest.raises(ValueError, match="ZIPP_EXECUTOR"):
        k8s.executor_for({"ZIPP_EXECUTOR": "celery"})


def test_every_assets_step_job_validates_against_the_kubernetes_api_schema(production_defs):
    steps = _steps(production_defs)
    assert len(steps) >= 20
    for assets_def in steps:
        manifest = step_job_manifest(assets_def)
        kubernetes_validate.validate(manifest, API_VERSION, strict=True)  # raises on any schema error
        container = _container(manifest)
        assert container["resources"]["requests"]["memory"] == container["resources"]["limits"]["memory"]
        # Every step pod gets the lake, the secrets and the data volume of the Helm values.
        assert {"name": "ZIPP_LAKE_URI", "value": "s3://zipp-lake/lake"} in container["env"]
        assert {"secretRef": {"name": "zipp-secrets"}} in container["envFrom"]
        assert {"name": "zipp-data", "mountPath": "/data"} in container["volumeMounts"]
        assert manifest["spec"]["template"]["spec"]["securityContext"] == {"fsGroup": 1000}


def test_gpu_steps_request_a_gpu_on_gpu_nodes_and_no_other_step_does(production_defs):
    seen = set()
    for assets_def in _steps(production_defs):
        manifest = step_job_manifest(assets_def)
        resources, pod = _container(manifest)["resources"], manifest["spec"]["template"]["spec"]
        keys = {key.to_user_string() for key in assets_def.keys}
        seen |= keys
        if keys & GPU_ASSETS:
            assert keys <= GPU_ASSETS, keys
            assert resources["limits"][k8s.GPU_RESOURCE] == resources["requests"][k8s.GPU_RESOURCE] == "1"
            assert pod["nodeSelector"] == k8s.GPU_NODE_SELECTOR
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        else:
            assert k8s.GPU_RESOURCE not in resources["requests"] and k8s.GPU_RESOURCE not in resources["limits"], keys
            assert "nodeSelector" not in pod and "tolerations" not in pod, keys
        if keys & GRAPH_TABLES:
            assert resources["requests"]["memory"] == "16Gi", keys
    assert GPU_ASSETS | GRAPH_TABLES <= seen


def test_the_deploy_manifests_validate_against_the_kubernetes_api_schema():
    documents = [d for name in ("vllm.yaml", "storage.yaml")
                 for d in yaml.safe_load_all((ROOT / "deploy" / name).read_text())]
    assert [d["kind"] for d in documents] == ["Deployment", "Service", "PersistentVolumeClaim"]
    for document in documents:
        kubernetes_validate.validate(document, API_VERSION, strict=True)
    vllm, service = documents[:2]
    assert vllm["spec"]["replicas"] >= 2  # data-parallel serving
    assert vllm["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"][k8s.GPU_RESOURCE] == "1"
    env = {e["name"]: e["value"] for e in HELM_VALUES["dagster-user-deployments"]["deployments"][0]["env"]}
    port = service["spec"]["ports"][0]["port"]
    assert env["ZIPP_LLM_BASE_URL"] == f"http://{service['metadata']['name']}:{port}"
    assert f"--served-model-name={env['ZIPP_LLM_MODEL']}" in vllm["spec"]["template"]["spec"]["containers"][0]["args"]


def test_a_manifest_that_breaks_the_schema_is_refused():
    """The validation has teeth: a GPU count as a list is not a Kubernetes quantity."""
    broken = next(yaml.safe_load_all((ROOT / "deploy" / "vllm.yaml").read_text()))
    broken["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"][k8s.GPU_RESOURCE] = ["1"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, API_VERSION, strict=True)


def test_ingestion_pods_parse_with_as_many_processes_as_their_cpu_request(production_defs):
    ingestion = 0
    for assets_def in _steps(production_defs):
        manifest = step_job_manifest(assets_def)
        container = _container(manifest)
        workers = [e["value"] for e in container["env"] if e["name"] == "ZIPP_INGEST_WORKERS"]
        if manifest["spec"]["template"]["metadata"]["labels"]["zipp/pod-size"] == "ingestion":
            ingestion += 1
            assert workers == [container["resources"]["requests"]["cpu"]], assets_def.op.name
            assert {"name": "ZIPP_LAKE_URI", "value": "s3://zipp-lake/lake"} in container["env"]  # merged, not replaced
        else:
            assert workers == [], assets_def.op.name
    assert ingestion >= 3
