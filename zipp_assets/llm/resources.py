"""The `LLM` resource: which backend, which model, and how hard to push it.

`client()` is a context manager that yields an `LLM` for the duration of one step: for `vllm`
without a `base_url` it starts the server, waits for it and stops it on the way out, also when the
step fails. Secrets come from the environment variable named in `api_key_env`, never from config
values. A step that uses a GPU-bound backend (`uses_gpu`) belongs in the `gpu` concurrency pool.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping

import dagster as dg
from pydantic import Field

from zipp_assets.llm.base import LLM
from zipp_assets.llm.openai_compat import OpenAICompatibleLLM
from zipp_assets.llm.template import TemplateLLM
from zipp_assets.llm.tokens import TokenCounter, token_counter
from zipp_assets.llm.transformers_backend import TransformersLLM
from zipp_assets.llm.types import LLMRequest
from zipp_assets.llm.vllm_server import VLLMServerConfig, managed_vllm_server

BACKENDS = ("template", "vllm", "openai", "transformers")
GPU_POOL = "gpu"
BASE_URL_ENV, MODEL_ENV = "ZIPP_LLM_BASE_URL", "ZIPP_LLM_MODEL"  # a vLLM server of its own (Kubernetes)


class LLMResource(dg.ConfigurableResource):
    """`template` (offline rules, the demo default), `vllm` (a server: existing at `base_url`, or started
    here), `openai` (any OpenAI-compatible endpoint), `transformers` (a local model folder)."""

    backend: str = Field(default="template", description=f"one of {', '.join(BACKENDS)}")
    model: str = Field(default="", description="model name the server serves (vllm/openai); for a managed "
                                               "vllm server, the model folder or name it loads")
    base_url: str | None = Field(default=None, description="server URL; for vllm, none means start one")
    api_key_env: str | None = Field(default=None, description="name of the environment variable with the API key")
    concurrency: int = 16
    timeout_s: float = 120.0
    retries: int = 3
    backoff_s: float = 1.0
    retry_invalid_output: bool = True
    structured_output: bool = True
    image_root: str | None = Field(default=None, description="folder that image paths in requests resolve under")
    # managed vLLM server
    python: str = Field(default="python", description="interpreter of the environment vLLM is installed in")
    command: list[str] | None = Field(default=None, description="replaces `python -m vllm...`; {model} {host} {port}")
    served_model_name: str | None = None
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1
    max_model_len: int | None = None
    gpu_memory_utilization: float = 0.9
    startup_timeout_s: float = 900.0
    server_log_dir: str | None = None
    # transformers
    model_dir: str | None = None
    device: str = "cpu"
    dtype: str = "auto"
    batch_size: int = 8

    @classmethod
    def for_profile(cls, profile: str, environ: Mapping[str, str] | None = None) -> LLMResource:
        """Demo: the offline template. Production: a managed vLLM server, whose model is set in config;
        or, where ZIPP_LLM_BASE_URL is set (on Kubernetes, the vLLM Service of deploy/vllm.yaml), that
        server and the model named by ZIPP_LLM_MODEL, read at run time."""
        if profile != "production":
            return cls()
        env = os.environ if environ is None else environ
        if env.get(BASE_URL_ENV):
            return cls(backend="vllm", base_url=dg.EnvVar(BASE_URL_ENV), model=dg.EnvVar(MODEL_ENV))
        return cls(backend="vllm")

    @property
    def uses_gpu(self) -> bool:
        """Whether the step runs a model on this host's GPU (and so belongs in the `gpu` pool)."""
        return (self.backend == "vllm" and self.base_url is None) or (
            self.backend == "transformers" and self.device.startswith("cuda"))

    @property
    def description(self) -> str:
        """What produced the text, for metadata: the template backend says it is a template."""
        if self.backend == "template":
            return "template (offline rules, no language model)"
        return f"{self.backend}:{self.served_model_name or self.model or self.model_dir}"

    def server_config(self) -> VLLMServerConfig:
        return VLLMServerConfig(
            model=self.model, python=self.python, command=self.command, served_model_name=self.served_model_name,
            tensor_parallel_size=self.tensor_parallel_size, data_parallel_size=self.data_parallel_size,
            max_model_len=self.max_model_len, gpu_memory_utilization=self.gpu_memory_utilization,
            dtype=self.dtype, startup_timeout_s=self.startup_timeout_s, log_dir=self.server_log_dir)

    def _http_client(self, base_url: str, model: str, image_root: str | None = None) -> OpenAICompatibleLLM:
        return OpenAICompatibleLLM(
            base_url, model, backend=self.backend, api_key_env=self.api_key_env, concurrency=self.concurrency,
            timeout_s=self.timeout_s, retries=self.retries, backoff_s=self.backoff_s,
            retry_invalid_output=self.retry_invalid_output, structured_output=self.structured_output,
            image_root=image_root or self.image_root)

    @contextlib.contextmanager
    def client(self, render: Callable[[LLMRequest], str] | None = None,
               image_root: str | None = None) -> Iterator[LLM]:
        """The configured backend for one step. `render` is the rule the `template` backend applies;
        `image_root`, where the step's image paths resolve (else the configured one)."""
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown LLM backend {self.backend!r}; expected one of {BACKENDS}")
        if self.backend == "template":
            if render is None:
                raise ValueError("the template backend needs the caller's rule: client(render=...)")
            yield TemplateLLM(render)
        elif self.backend == "transformers":
            if not self.model_dir:
                raise ValueError("the transformers backend needs model_dir, a local model folder")
            yield TransformersLLM(self.model_dir, device=self.device, dtype=self.dtype, batch_size=self.batch_size,
                                  timeout_s=self.timeout_s, retries=self.retries)
        elif self.base_url is not None:
            if not self.model:
                raise ValueError(f"the {self.backend} backend needs model, the name the server serves")
            yield self._http_client(self.base_url, self.model, image_root)
        elif self.backend == "openai":
            raise ValueError("the openai backend needs base_url")
        else:
            if not self.model:
                raise ValueError("a managed vllm server needs model, the folder or name it loads")
            with managed_vllm_server(self.server_config()) as server:
                yield self._http_client(server.base_url, server.model, image_root)

    def token_counter(self) -> TokenCounter:
        """How evidence is counted for this model, without starting a server: the local tokenizer
        folder, a running server's /tokenize, or the named approximation."""
        client = self._http_client(self.base_url, self.model) if self.base_url and self.model else None
        return token_counter(self.backend, model=self.model, model_dir=self.model_dir, client=client)
