"""The `LLM` protocol every backend follows, and the rule that one bad request never sinks a batch.

`generate(requests)` returns one `LLMResult` per request, in request order. A request that cannot
be served (unreachable server, timeout, malformed or schema-violating output, over-long prompt,
unsupported input) comes back with `ok=False` and its reason; `generate` raises only for what is
wrong with the whole call (a misconfigured backend), never for a single request.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol

from zipp_assets.llm.stats import LLMStats
from zipp_assets.llm.types import LLMRequest, LLMResult


class LLM(Protocol):
    backend: str  # template | vllm | openai | transformers
    model: str

    def generate(self, requests: Sequence[LLMRequest]) -> list[LLMResult]: ...


def check_unique_ids(requests: Sequence[LLMRequest]) -> None:
    seen = set()
    for request in requests:
        if request.id in seen:
            raise ValueError(f"request id {request.id!r} appears twice in one batch")
        seen.add(request.id)


def describe_error(error: BaseException) -> str:
    """One line for a recorded failure: the exception's type and message, never a traceback."""
    message = " ".join(str(error).split())[:300]
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def generate_with_stats(llm: LLM, requests: Sequence[LLMRequest]) -> tuple[list[LLMResult], LLMStats]:
    started = time.perf_counter()
    results = llm.generate(requests)
    return results, LLMStats.from_results(results, time.perf_counter() - started)
