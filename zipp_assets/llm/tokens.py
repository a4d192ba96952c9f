"""Counting tokens as the verbalizing model will: its server's /tokenize, its local tokenizer, or,
when neither exists, a documented approximation that says it is one."""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from zipp_assets.llm.openai_compat import OpenAICompatibleLLM


class TokenCounter(Protocol):
    name: str
    approximate: bool

    def count(self, texts: Sequence[str]) -> list[int]: ...


class ApproximateTokenCounter:
    """About four UTF-8 bytes per token, the usual rule of thumb for English BPE vocabularies."""

    name = "approximate: 4 bytes per token"
    approximate = True

    def count(self, texts: Sequence[str]) -> list[int]:
        return [math.ceil(len(t.encode("utf-8")) / 4) for t in texts]


class LocalTokenizerCounter:
    approximate = False

    def __init__(self, folder: str | Path):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.name = f"tokenizer of {Path(folder).name}"

    def count(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        return [len(ids) for ids in self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


class ServerTokenCounter:
    """A vLLM server's /tokenize, several texts at a time."""

    approximate = False

    def __init__(self, client: OpenAICompatibleLLM, concurrency: int = 8):
        self.client, self.concurrency = client, concurrency
        self.name = f"/tokenize of {client.model}"

    def count(self, texts: Sequence[str]) -> list[int]:
        with ThreadPoolExecutor(max(1, min(self.concurrency, len(texts)))) as pool:
            return list(pool.map(self.client.count_tokens, texts))


def token_counter(backend: str, *, model: str = "", model_dir: str | None = None,
                  client: OpenAICompatibleLLM | None = None) -> TokenCounter:
    """The most faithful counter the configuration allows: a local tokenizer folder first (no server
    needed), then a running server's /tokenize, else the approximation."""
    folder = model_dir if backend == "transformers" else model
    if folder and Path(folder).is_dir() and backend in ("transformers", "vllm"):
        return LocalTokenizerCounter(folder)
    if client is not None:
        try:
            client.count_tokens("probe")
            return ServerTokenCounter(client)
        except Exception:  # an OpenAI endpoint without /tokenize
            pass
    return ApproximateTokenCounter()
