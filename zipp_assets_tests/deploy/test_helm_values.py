"""deploy/helm/values.yaml parses, and every key it sets is one Dagster's chart knows
(dagster_chart_keys.yaml says where those keys come from). Helm itself is not run here."""

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
VALUES = yaml.safe_load((ROOT / "deploy" / "helm" / "values.yaml").read_text())
CHART = yaml.safe_load((Path(__file__).parent / "dagster_chart_keys.yaml").read_text())


def unknown_keys(values, schema, path: str = "") -> list[str]:
    """Key paths of `values` that `schema` does not name (`any` accepts whatever is below it)."""
    if schema == "any":
        return []
    if isinstance(schema, list):
        return [p for i, item in enumerate(values) for p in unknown_keys(item, schema[0], f"{path}[{i}]")]
    if not isinstance(values, dict):
        return [f"{path} (expected a mapping)"]
    return [p for key, value in values.items()
            for p in ([f"{path}.{key}"] if key not in schema else unknown_keys(value, schema[key], f"{path}.{key}"))]


def test_every_key_of_the_values_is_a_key_of_the_chart():
    assert set(VALUES) <= set(CHART["top_level"])
    assert unknown_keys(VALUES, CHART["schema"]) == []


def test_a_misspelt_key_is_caught():
    misspelt = {"runLauncher": {"type": "K8sRunLauncher", "config": {"k8sRunLauncher": {"envSecret": []}}}}
    assert unknown_keys(misspelt, CHART["schema"]) == [".runLauncher.config.k8sRunLauncher.envSecret"]


def test_production_runs_on_kubernetes_with_postgresql_and_the_daemon():
    assert VALUES["runLauncher"]["type"] == "K8sRunLauncher"
    assert VALUES["postgresql"]["enabled"] and VALUES["dagsterDaemon"]["enabled"]
    assert VALUES["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    assert VALUES["generatePostgresqlPasswordSecret"] is False  # the password comes from a secret, not this file
    (location,) = VALUES["dagster-user-deployments"]["deployments"]
    assert location["dagsterApiGrpcArgs"] == ["-m", "zipp_assets.definitions"]
    assert location["includeConfigInLaunchedRuns"]["enabled"]
    env = {e["name"]: e["value"] for e in location["env"]}
    assert env["ZIPP_PROFILE"] == "production" and env["ZIPP_EXECUTOR"] == "k8s"
    assert env["ZIPP_LAKE_URI"].startswith("s3://")
    assert not {"ZIPP_PSEUDONYM_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(env)  # secrets only


@pytest.mark.parametrize("name", ["vllm.yaml", "storage.yaml", "helm/values.yaml"])
def test_no_secret_is_written_into_deploy(name):
    text = (ROOT / "deploy" / name).read_text()
    assert "postgresqlPassword" not in text and "kind: Secret" not in text
