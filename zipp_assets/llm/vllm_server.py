"""A vLLM server the pipeline starts, waits for, uses and stops within one step.

`managed_vllm_server(config)` starts `python -m vllm.entrypoints.openai.api_server --model M ...`
(from the configured interpreter: vLLM lives in its own environment) or a configured command, on a
free loopback port, in its own process group, with its output in a log file. It polls `/health`
until the server answers (failing fast, with the tail of the log, if the process exits or the
startup timeout passes), checks that `/v1/models` lists the model, yields the server, and on exit,
also when the body raised, stops the whole process group: SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

LOG_TAIL_LINES = 30


class VLLMServerError(RuntimeError):
    """The managed server did not come up; the message says why and ends with the tail of its log."""


@dataclass(frozen=True)
class VLLMServerConfig:
    model: str  # a local model folder (or a name in the server environment's HF cache)
    python: str = "python"  # the interpreter of the environment vLLM is installed in
    # Replaces the python -m ... command; "{model}", "{host}" and "{port}" in it are filled in.
    command: Sequence[str] | None = None
    served_model_name: str | None = None  # the name clients ask for; vLLM's default is `model`
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1
    max_model_len: int | None = None
    gpu_memory_utilization: float = 0.9
    dtype: str = "auto"
    host: str = "127.0.0.1"
    port: int | None = None  # None: a free port is picked
    startup_timeout_s: float = 900.0
    stop_grace_s: float = 30.0
    extra_args: Sequence[str] = ()
    env: dict[str, str] = field(default_factory=dict)  # added to this process's environment
    log_dir: str | None = None  # None: a temporary folder

    @property
    def name(self) -> str:
        return self.served_model_name or self.model


@dataclass(frozen=True)
class RunningServer:
    base_url: str  # http://host:port (the OpenAI API is under /v1)
    model: str
    process: subprocess.Popen
    log_path: Path
    command: tuple[str, ...]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def build_command(config: VLLMServerConfig, port: int) -> list[str]:
    if config.command:
        values = {"model": config.model, "host": config.host, "port": str(port)}
        return [part.format(**values) for part in config.command] + list(config.extra_args)
    command = [config.python, "-m", "vllm.entrypoints.openai.api_server", "--model", config.model,
               "--host", config.host, "--port", str(port),
               "--tensor-parallel-size", str(config.tensor_parallel_size),
               "--data-parallel-size", str(config.data_parallel_size),
               "--gpu-memory-utilization", str(config.gpu_memory_utilization), "--dtype", config.dtype]
    if config.max_model_len is not None:
        command += ["--max-model-len", str(config.max_model_len)]
    if config.served_model_name:
        command += ["--served-model-name", config.served_model_name]
    return command + list(config.extra_args)


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def stop_process_group(process: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM to the server's whole process group (vLLM starts workers), SIGKILL if it outlives `grace_s`."""
    if process.poll() is not None:
        _kill_group(process.pid, signal.SIGKILL)  # leftover workers of a server that already exited
        return
    _kill_group(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    _kill_group(process.pid, signal.SIGKILL)
    process.wait()


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def wait_until_ready(process: subprocess.Popen, base_url: str, log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=5.0) as client:
        while True:
            code = process.poll()
            if code is not None:
                raise VLLMServerError(f"the server exited with code {code} before it was ready; "
                                      f"last lines of {log_path}:\n{log_tail(log_path)}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(base_url + "/health").status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise VLLMServerError(f"the server was not healthy within {timeout_s:g} s; "
                                      f"last lines of {log_path}:\n{log_tail(log_path)}")
            time.sleep(0.25)


def check_serves(base_url: str, model: str) -> None:
    response = httpx.get(base_url + "/v1/models", timeout=30.0)
    response.raise_for_status()
    served = [entry.get("id") for entry in response.json().get("data", [])]
    if model not in served:
        raise VLLMServerError(f"the server is up but serves {served}, not {model!r}")


@contextlib.contextmanager
def managed_vllm_server(config: VLLMServerConfig) -> Iterator[RunningServer]:
    port = config.port or free_port(config.host)
    command = build_command(config, port)
    log_dir = Path(config.log_dir or tempfile.mkdtemp(prefix="vllm-server-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"vllm-{port}.log"
    base_url = f"http://{config.host}:{port}"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, env={**os.environ, **config.env})
    try:
        wait_until_ready(process, base_url, log_path, config.startup_timeout_s)
        check_serves(base_url, config.name)
        yield RunningServer(base_url, config.name, process, log_path, tuple(command))
    finally:
        stop_process_group(process, config.stop_grace_s)
