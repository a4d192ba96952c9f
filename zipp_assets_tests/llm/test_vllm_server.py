"""The managed vLLM server lifecycle, with the fake server run as a subprocess through the same code path."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import httpx
import pytest

from zipp_assets.llm.openai_compat import OpenAICompatibleLLM
from zipp_assets.llm.types import LLMRequest
from zipp_assets.llm.vllm_server import VLLMServerConfig, VLLMServerError, build_command, managed_vllm_server

FAKE = str(Path(__file__).with_name("fake_openai_server.py"))


def fake_config(tmp_path, *extra: str, **kwargs) -> VLLMServerConfig:
    command = [sys.executable, FAKE, "--host", "{host}", "--port", "{port}", "--model", "{model}", *extra]
    settings = {"startup_timeout_s": 20.0, "stop_grace_s": 5.0, **kwargs}
    return VLLMServerConfig(model="tiny-model", command=command, log_dir=str(tmp_path), **settings)


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_default_command_is_vllms_openai_server():
    config = VLLMServerConfig(model="/models/llama", python="/envs/vllm/bin/python", tensor_parallel_size=2,
                              data_parallel_size=4, max_model_len=8192, gpu_memory_utilization=0.85, dtype="bfloat16")
    assert build_command(config, 8011) == [
        "/envs/vllm/bin/python", "-m", "vllm.entrypoints.openai.api_server", "--model", "/models/llama",
        "--host", "127.0.0.1", "--port", "8011", "--tensor-parallel-size", "2", "--data-parallel-size", "4",
        "--gpu-memory-utilization", "0.85", "--dtype", "bfloat16", "--max-model-len", "8192"]


def test_start_wait_for_health_serve_and_stop(tmp_path):
    # The fake loads for 0.7 s before it listens: the wait must poll through refused connections.
    with managed_vllm_server(fake_config(tmp_path, "--startup-delay", "0.7")) as server:
        assert server.base_url.startswith("http://127.0.0.1:") and server.model == "tiny-model"
        llm = OpenAICompatibleLLM(server.base_url, server.model, backend="vllm")
        results = llm.generate([LLMRequest.chat(f"r{i}", f"hello {i}") for i in range(4)])
        assert [r.text for r in results] == [f"echo: hello {i}" for i in range(4)]
        pid = server.process.pid
        assert "listening on" in server.log_path.read_text()
    assert server.process.returncode is not None and gone(pid)
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.base_url + "/health", timeout=1)


def test_stopped_when_the_step_fails(tmp_path):
    with pytest.raises(RuntimeError, match="the step failed"):
        with managed_vllm_server(fake_config(tmp_path)) as server:
            pid = server.process.pid
            raise RuntimeError("the step failed")
    assert gone(pid)


def test_a_server_ignoring_sigterm_is_killed_after_the_grace_period(tmp_path):
    config = fake_config(tmp_path, "--ignore-sigterm", stop_grace_s=0.5)
    started = time.monotonic()
    with managed_vllm_server(config) as server:
        pid = server.process.pid
        started = time.monotonic()
    assert gone(pid) and 0.5 <= time.monotonic() - started < 5


def test_a_server_that_exits_at_startup_fails_fast_with_its_log(tmp_path):
    started = time.monotonic()
    with pytest.raises(VLLMServerError) as raised:
        with managed_vllm_server(fake_config(tmp_path, "--exit-at-start", "3")):
            pytest.fail("the body must not run")
    message = str(raised.value)
    assert "exited with code 3 before it was ready" in message
    assert "no accelerator found for this model" in message  # the tail of its log
    assert time.monotonic() - started < 10


def test_a_server_that_never_gets_healthy_times_out_and_is_stopped(tmp_path):
    config = fake_config(tmp_path, "--startup-delay", "30", startup_timeout_s=1.0)
    with pytest.raises(VLLMServerError, match=r"not healthy within 1 s[\s\S]*loading tiny-model"):
        with managed_vllm_server(config):
            pass
    (log,) = tmp_path.glob("vllm-*.log")
    pid = int(log.read_text().split("fake server: pid ")[1].split(",")[0])
    assert gone(pid)


def test_a_server_serving_another_model_is_refused_and_stopped(tmp_path):
    config = fake_config(tmp_path, served_model_name="other-model")
    with pytest.raises(VLLMServerError, match=r"serves \['tiny-model'\], not 'other-model'"):
        with managed_vllm_server(config):
            pass
