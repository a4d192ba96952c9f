"""`TemplateLLM`: the offline, deterministic backend. It calls no model.

It turns each request into text with a rule function the caller supplies (the personas stage gives
the rule that builds a persona from the evidence alone), then treats that text exactly like model
output: JSON extraction and schema validation, with a recorded failure instead of a crash. Its
results carry backend "template" and a model name that starts with "template:", so nothing it
writes can pass for an LLM's output. Token counts are zero: no tokenizer is involved. `version` is a
digest of the rule's module source, so output from changed rules is never taken for output from the
old ones.
"""

from __future__ import annotations

import hashlib
import inspect
import sys
import time
from collections.abc import Callable, Sequence

from zipp_assets.llm.base import check_unique_ids, describe_error
from zipp_assets.llm.jsonio import parse_output
from zipp_assets.llm.types import LLMRequest, LLMResult


def rules_version(render: Callable) -> str:
    """A digest of the source of the module the rule lives in: any change to the rules (a keyword, a
    pattern, how the request is read) gives another version, with no number to remember to bump."""
    module = sys.modules.get(getattr(render, "__module__", ""), None)
    try:
        source = inspect.getsource(module) if module is not None else repr(render)
    except (OSError, TypeError):  # defined where no source can be read (an interactive session)
        source = repr(render)
    return hashlib.sha256(source.encode()).hexdigest()[:16]


class TemplateLLM:
    backend = "template"

    def __init__(self, render: Callable[[LLMRequest], str], name: str | None = None):
        self.render = render
        self.model = f"template:{name or getattr(render, '__name__', 'rules')}"
        self.version = rules_version(render)

    def generate(self, requests: Sequence[LLMRequest]) -> list[LLMResult]:
        check_unique_ids(requests)
        return [self._one(request) for request in requests]

    def _one(self, request: LLMRequest) -> LLMResult:
        started = time.perf_counter()
        common = dict(backend=self.backend, model=self.model, attempts=1)
        try:
            text = self.render(request)
        except Exception as error:  # a rule that fails on one request fails that request only
            return LLMResult.failure(request, f"template rule failed: {describe_error(error)}",
                                     seconds=time.perf_counter() - started, **common)
        parsed, reason = parse_output(text, request.json_schema) if request.json_schema is not None else (None, None)
        return LLMResult(id=request.id, ok=reason is None, text=text, parsed=parsed, error=reason,
                         seconds=time.perf_counter() - started, **common)
