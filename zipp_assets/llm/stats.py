"""Token counts and throughput of one batch of LLM calls, for logs and asset metadata."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from zipp_assets.llm.types import LLMResult


def reason_kind(reason: str | None) -> str:
    """The kind of a failure reason (its text up to the first colon), for counting like with like."""
    return (reason or "unknown").split(":", 1)[0].strip()[:80]


@dataclass(frozen=True)
class LLMStats:
    requests: int
    ok: int
    failed: int
    failure_reasons: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    attempts: int = 0

    @classmethod
    def from_results(cls, results: Sequence[LLMResult], seconds: float) -> LLMStats:
        """`seconds` is the wall-clock time of the whole batch (requests overlap, so not their sum)."""
        failed = [r for r in results if not r.ok]
        return cls(
            requests=len(results),
            ok=len(results) - len(failed),
            failed=len(failed),
            failure_reasons=dict(Counter(reason_kind(r.error) for r in failed).most_common()),
            prompt_tokens=sum(r.prompt_tokens for r in results),
            completion_tokens=sum(r.completion_tokens for r in results),
            seconds=seconds,
            attempts=sum(r.attempts for r in results),
        )

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def completion_tokens_per_s(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        return (self.prompt_tokens + self.completion_tokens) / self.seconds if self.seconds > 0 else 0.0

    def as_metadata(self) -> dict:
        """Plain values, ready for `MaterializeResult(metadata=...)` or a log line."""
        out = asdict(self)
        out.update(requests_per_s=round(self.requests_per_s, 3), tokens_per_s=round(self.tokens_per_s, 1),
                   completion_tokens_per_s=round(self.completion_tokens_per_s, 1), seconds=round(self.seconds, 3))
        return out
