"""The `LLMResource`: each backend built from config, the managed server inside one step, secrets by name."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import dagster as dg
import pytest

from zipp_assets.llm.openai_compat import OpenAICompatibleLLM
from zipp_assets.llm.resources import LLMResource
from zipp_assets.llm.template import TemplateLLM
from zipp_assets.llm.types import LLMRequest

FAKE = str(Path(__file__).with_name("fake_openai_server.py"))


def echo_rule(request: LLMRequest) -> str:
    return "rule: " + request.messages[-1]["content"]


def test_demo_is_the_template_and_production_a_managed_vllm():
    demo, production = LLMResource.for_profile("demo"), LLMResource.for_profile("production")
    assert demo.backend == "template" and demo.description.startswith("template (offline rules")
    assert production.backend == "vllm" and production.base_url is None and production.uses_gpu
    assert not demo.uses_gpu and not LLMResource(backend="vllm", base_url="http://127.0.0.1:1").uses_gpu
    assert LLMResource(backend="transformers", device="cuda:1").uses_gpu


def test_template_client_needs_the_callers_rule():
    with LLMResource().client(render=echo_rule) as llm:
        assert isinstance(llm, TemplateLLM)
        assert llm.generate([LLMRequest.chat("a", "hi")])[0].text == "rule: hi"
    with pytest.raises(ValueError, match="needs the caller's rule"):
        with LLMResource().client():
            pass


def test_openai_backend_against_an_existing_server_with_a_key_by_name(fake_server, monkeypatch):
    monkeypatch.setenv("ZIPP_TEST_KEY", "secret-value")
    resource = LLMResource(backend="openai", base_url=fake_server.base_url + "/v1", model=fake_server.model,
                           api_key_env="ZIPP_TEST_KEY", concurrency=3, timeout_s=7, retries=0)
    assert "secret-value" not in repr(resource) and "secret-value" not in str(resource.model_dump())
    with resource.client() as llm:
        assert isinstance(llm, OpenAICompatibleLLM) and (llm.concurrency, llm.timeout_s, llm.retries) == (3, 7, 0)
        result = llm.generate([LLMRequest.chat("a", "hello")])[0]
    assert result.ok and result.backend == "openai"
    assert fake_server.record.headers[0]["Authorization"] == "Bearer secret-value"


def test_managed_vllm_starts_and_stops_within_the_client(tmp_path):
    resource = LLMResource(backend="vllm", model="tiny-model", server_log_dir=str(tmp_path), startup_timeout_s=20,
                           command=[sys.executable, FAKE, "--port", "{port}", "--model", "{model}"])
    with resource.client() as llm:
        assert llm.models() == ["tiny-model"]
        results = llm.generate([LLMRequest.chat(f"r{i}", f"x{i}") for i in range(3)])
        pid = int((next(tmp_path.glob("vllm-*.log"))).read_text().split("pid ")[1].split(",")[0])
    assert [r.text for r in results] == ["echo: x0", "echo: x1", "echo: x2"]
    assert {r.backend for r in results} == {"vllm"}
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.mark.parametrize("config, match", [
    ({"backend": "gpt"}, "unknown LLM backend"),
    ({"backend": "openai"}, "needs base_url"),
    ({"backend": "openai", "base_url": "http://127.0.0.1:1"}, "needs model"),
    ({"backend": "vllm"}, "needs model"),
    ({"backend": "transformers"}, "needs model_dir"),
])
def test_misconfiguration_raises(config, match):
    with pytest.raises(ValueError, match=match):
        with LLMResource(**config).client(render=echo_rule):
            pass


def test_usable_as_a_dagster_resource():
    seen = {}

    @dg.asset
    def uses_llm(llm: LLMResource) -> None:
        with llm.client(render=echo_rule) as client:
            seen["text"] = client.generate([LLMRequest.chat("a", "from an asset")])[0].text

    assert dg.materialize([uses_llm], resources={"llm": LLMResource()}).success
    assert seen["text"] == "rule: from an asset"


def test_production_on_kubernetes_reaches_the_vllm_service_named_in_the_environment(monkeypatch):
    on_cluster = LLMResource.for_profile("production", environ={"ZIPP_LLM_BASE_URL": "http://vllm:8000/v1"})
    assert on_cluster.backend == "vllm" and not on_cluster.uses_gpu  # the server's pods hold the GPUs
    monkeypatch.setenv("ZIPP_LLM_BASE_URL", "http://vllm:8000/v1")
    monkeypatch.setenv("ZIPP_LLM_MODEL", "llama")
    resolved = on_cluster.process_config_and_initialize()  # EnvVar fields are read when a run starts
    assert (resolved.base_url, resolved.model) == ("http://vllm:8000/v1", "llama")
