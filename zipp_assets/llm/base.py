"""The `LLM` protocol every backend follows, and the rule that one bad request never sinks a batch.

`generate(requests)` returns one `LLMResult` per request, in request order. A request that cannot
be served (unreachable server, timeout, malformed or schema-violating output, over-long prompt,
unsupported input) comes back with `ok=False` and its reason; `generate` raises only for what is
wrong with the whole call (a misconfigured backend), never for a single request.
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

from zipp_assets.llm.stats import LLMStats
from zipp_assets.llm.types import LLMRequest, LLMResult

Unit = TypeVar("Unit")


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


SERVER_BATCH = 8  # requests per call when a server is kept full by several calls at once (`pooling`)


def pooling(llm: LLM, batch_size: int) -> tuple[int, int]:
    """(requests per call, calls at once) for `generate_pooled`. A server answers a call as slowly as its
    longest answer: one call of 64 left the CPU vLLM with 11 of 64 sequences running while it waited
    for the longest persona. So a server backend gets its `concurrency` requests in flight as calls of
    `SERVER_BATCH`, a new one sent as soon as any returns; a local backend (one model in this process)
    gets one call of `batch_size` at a time."""
    concurrency = getattr(llm, "concurrency", None)
    if getattr(llm, "backend", "") in ("vllm", "openai") and isinstance(concurrency, int) and concurrency > 0:
        per_call = min(batch_size, SERVER_BATCH)
        return per_call, max(1, concurrency // per_call)
    return batch_size, 1


def generate_pooled(llm: LLM, units: Iterable[tuple[Unit, Sequence[tuple[Any, LLMRequest]]]], batch_size: int,
                    answered: Callable[[Unit, list[Any], list[LLMResult]], None],
                    finish: Callable[[Unit], None], in_flight: int = 1) -> None:
    """Send the requests of many small units (a shard's users, a partition's prompts) in shared batches.

    A server answers a batch as slowly as its longest answer, and a unit of a dozen requests keeps only
    a dozen in flight: going unit by unit, a 135M model on vLLM answered 0.1 personas a second. Here a
    batch takes up to `batch_size` requests from as many units as it needs, and up to `in_flight`
    batches run at once (threads), the next sent as soon as any returns. `units` is read lazily, a unit
    only when a batch needs more requests, so a long run holds a few units, not all of them.
    `answered(unit, items, results)` gets each unit's share of a batch when the batch returns (save it
    there to resume a killed run); `finish(unit)` runs once all of a unit's requests are answered, in
    the order of `units` (a unit without requests finishes in its turn too). Both run in the calling
    thread. An exception from `llm.generate` propagates once the batches already running return.
    """
    if batch_size < 1 or in_flight < 1:
        raise ValueError(f"batch_size and in_flight must be at least 1, got {batch_size} and {in_flight}")
    waiting: deque[list] = deque()  # [unit, requests not yet answered], in order
    queue: list[tuple[list, Any, LLMRequest]] = []
    pending = iter(units)
    exhausted = False

    def finish_ready() -> None:
        while waiting and waiting[0][1] == 0:
            finish(waiting.popleft()[0])

    def fill() -> None:  # read units until a whole batch waits, or none are left
        nonlocal exhausted
        while not exhausted and len(queue) < batch_size:
            try:
                unit, work = next(pending)
            except StopIteration:
                exhausted = True
                break
            slot = [unit, len(work)]
            waiting.append(slot)
            queue.extend((slot, item, request) for item, request in work)
            finish_ready()

    def deliver(batch: list[tuple[list, Any, LLMRequest]], results: list[LLMResult]) -> None:
        shares: dict[int, tuple[list, list, list]] = {}
        for (slot, item, _), result in zip(batch, results, strict=True):
            share = shares.setdefault(id(slot), (slot, [], []))
            share[1].append(item)
            share[2].append(result)
        for slot, items, unit_results in shares.values():
            answered(slot[0], items, unit_results)
            slot[1] -= len(items)
        finish_ready()

    running: dict[Future, list] = {}
    with ThreadPoolExecutor(in_flight, thread_name_prefix="llm-batch") as pool:
        while True:
            fill()
            while len(running) < in_flight and queue and (len(queue) >= batch_size or exhausted):
                batch, queue[:] = queue[:batch_size], queue[batch_size:]
                running[pool.submit(llm.generate, [request for _, _, request in batch])] = batch
                fill()
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                deliver(running.pop(future), future.result())
    finish_ready()
