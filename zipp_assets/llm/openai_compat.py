"""`OpenAICompatibleLLM`: the client for vLLM's server and any other OpenAI-compatible endpoint.

Requests go out concurrently, at most `concurrency` at a time (a thread pool over one pooled
`httpx.Client`), so a vLLM server batches them continuously. Each has a timeout and is retried with
exponential backoff (and jitter; `Retry-After` is honoured) on connection errors, timeouts, 429 and
5xx, and, when `retry_invalid_output` is set, on output that is not JSON or breaks the request's
schema. JSON output is asked for through structured outputs (`response_format`: the whole schema for
vLLM's guided decoding; for the `openai` backend its strict subset with `strict`), and still extracted
and validated here against the whole schema: a server may ignore it. A request that cannot be
served comes back as a failure with its reason; nothing is raised for it. Output the token limit cut
(`finish_reason` "length") is a failure when a schema was asked for, whatever it parses to, and is
not retried: the same request would be cut again. Token counts are the
server's `usage`, summed over a request's attempts (what the request cost, not only its last answer).
The API key is read from the environment variable named in config, never passed as a value.
"""

from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from zipp_assets.llm.base import check_unique_ids, describe_error
from zipp_assets.llm.jsonio import TRUNCATED, parse_output
from zipp_assets.llm.types import LLMRequest, LLMResult, openai_messages


def split_base_url(base_url: str) -> tuple[str, str]:
    """(server root, API root): `http://h:8000` and `http://h:8000/v1` both give `http://h:8000` and `.../v1`.
    vLLM serves /health and /tokenize at the root, the OpenAI API under /v1."""
    root = base_url.rstrip("/")
    if root.endswith("/v1"):
        root = root[: -len("/v1")]
    return root, root + "/v1"


# Keywords OpenAI's strict structured outputs refuse. vLLM's guided decoding takes them, and they are what
# keeps a weak model's strings short: without maxLength SmolLM2-135M ran to max_tokens on 7 of 8 personas.
NOT_IN_STRICT_SUBSET = frozenset({"default", "minLength", "maxLength", "pattern", "format", "uniqueItems"})


def strict_subset(schema: Any) -> Any:
    """`schema` without the keywords strict mode refuses (a copy); output is still validated here against
    the whole schema, so a limit left out of the request is still enforced."""
    if isinstance(schema, list):
        return [strict_subset(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    return {key: ({name: strict_subset(sub) for name, sub in value.items()} if key in ("properties", "$defs")
                  else strict_subset(value))
            for key, value in schema.items() if key not in NOT_IN_STRICT_SUBSET}


def response_format(request: LLMRequest, strict: bool) -> dict[str, Any]:
    """The schema as OpenAI's strict mode takes it (`strict`), or whole, as vLLM's guided decoding takes it."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", request.schema_name)[:64] or "output"
    if strict:
        return {"type": "json_schema", "json_schema": {"name": name, "schema": strict_subset(request.json_schema),
                                                       "strict": True}}
    return {"type": "json_schema", "json_schema": {"name": name, "schema": request.json_schema}}


class OpenAICompatibleLLM:
    def __init__(self, base_url: str, model: str, *, backend: str = "openai", api_key_env: str | None = None,
                 concurrency: int = 16, timeout_s: float = 120.0, retries: int = 3, backoff_s: float = 1.0,
                 max_backoff_s: float = 30.0, retry_invalid_output: bool = True, structured_output: bool = True,
                 image_root: str | Path | None = None):
        if concurrency < 1 or retries < 0 or timeout_s <= 0:
            raise ValueError("concurrency >= 1, retries >= 0 and timeout_s > 0 are required")
        self.root, self.api = split_base_url(base_url)
        self.model, self.backend = model, backend
        self.concurrency, self.timeout_s, self.retries = concurrency, timeout_s, retries
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.retry_invalid_output, self.structured_output = retry_invalid_output, structured_output
        self.image_root = image_root
        self._headers = {}
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise ValueError(f"the API key variable {api_key_env} is not set in the environment")
            self._headers["Authorization"] = f"Bearer {key}"

    def _client(self, connections: int) -> httpx.Client:
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        return httpx.Client(timeout=httpx.Timeout(self.timeout_s), limits=limits, headers=self._headers)

    # -- server introspection (vLLM's routes; an OpenAI endpoint has only /v1/models) --

    def health(self) -> bool:
        try:
            with self._client(1) as client:
                return client.get(self.root + "/health").status_code == 200
        except httpx.HTTPError:
            return False

    def models(self) -> list[str]:
        with self._client(1) as client:
            response = client.get(self.api + "/models")
            response.raise_for_status()
            return [entry["id"] for entry in response.json().get("data", [])]

    def count_tokens(self, text_or_request: str | LLMRequest) -> int:
        """Tokens in a text, or in a request's messages after the chat template (vLLM's /tokenize)."""
        body: dict[str, Any] = {"model": self.model}
        if isinstance(text_or_request, LLMRequest):
            body["messages"] = openai_messages(text_or_request, self.image_root)
        else:
            body["prompt"] = text_or_request
        with self._client(1) as client:
            response = client.post(self.root + "/tokenize", json=body)
            response.raise_for_status()
            return int(response.json()["count"])

    # -- generation --

    def generate(self, requests: Sequence[LLMRequest]) -> list[LLMResult]:
        check_unique_ids(requests)
        if not requests:
            return []
        workers = min(self.concurrency, len(requests))
        with self._client(workers) as client, ThreadPoolExecutor(workers, thread_name_prefix="llm") as pool:
            return list(pool.map(lambda request: self._one(client, request), requests))

    def body(self, request: LLMRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": openai_messages(request, self.image_root),
                                "max_tokens": request.max_tokens, "temperature": request.temperature}
        if request.json_schema is not None and self.structured_output:
            body["response_format"] = response_format(request, strict=self.backend == "openai")
        return body

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
        return min(self.max_backoff_s, max(delay, retry_after or 0.0))

    def _one(self, client: httpx.Client, request: LLMRequest) -> LLMResult:
        started = time.perf_counter()
        common: dict[str, Any] = dict(backend=self.backend, model=self.model)
        try:
            body = self.body(request)
        except (ValueError, OSError) as error:  # an image that is refused or cannot be read
            return LLMResult.failure(request, f"bad request: {error}", attempts=0, **common)
        prompt_tokens = completion_tokens = attempts = 0
        reason, text, retry_after = "not attempted", "", None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self._delay(attempt, retry_after))
            attempts, retry_after = attempts + 1, None
            try:
                response = client.post(self.api + "/chat/completions", json=body)
            except httpx.TimeoutException:
                reason = f"timeout: no answer within {self.timeout_s:g} s"
                continue
            except httpx.TransportError as error:
                reason = f"connection error: {describe_error(error)}"
                continue
            if response.status_code == 429 or response.status_code >= 500:
                reason = f"http {response.status_code}: {response.text[:200]}"
                retry_after = _seconds(response.headers.get("retry-after"))
                continue
            if response.status_code >= 400:  # the request itself is wrong: retrying cannot help
                reason = f"http {response.status_code}: {response.text[:200]}"
                break
            try:
                payload = response.json()
                choice = payload["choices"][0]
                text = choice["message"]["content"] or ""
                finish_reason = choice.get("finish_reason")
                usage = payload.get("usage") or {}
                prompt_tokens += int(usage.get("prompt_tokens") or 0)
                completion_tokens += int(usage.get("completion_tokens") or 0)
            except (ValueError, KeyError, IndexError, TypeError, AttributeError) as error:
                reason = f"malformed response: {describe_error(error)}"
                continue
            common["finish_reason"] = finish_reason
            if finish_reason == "length" and request.json_schema is not None:
                reason = (f"{TRUNCATED}: the output reached max_tokens ({request.max_tokens}) before it ended "
                          f"(finish_reason length)")
                break
            parsed, invalid = (None, None) if request.json_schema is None else parse_output(text, request.json_schema)
            if invalid is None:
                return LLMResult(id=request.id, ok=True, text=text, parsed=parsed, prompt_tokens=prompt_tokens,
                                 completion_tokens=completion_tokens, seconds=time.perf_counter() - started,
                                 attempts=attempts, **common)
            reason = f"invalid output: {invalid}"
            if not self.retry_invalid_output:
                break
        return LLMResult.failure(request, reason, text=text, prompt_tokens=prompt_tokens,
                                 completion_tokens=completion_tokens, seconds=time.perf_counter() - started,
                                 attempts=attempts, **common)


def _seconds(header: str | None) -> float | None:
    try:
        return float(header) if header is not None else None
    except ValueError:
        return None
