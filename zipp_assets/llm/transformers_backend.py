"""`TransformersLLM`: a local causal LM folder (safetensors) run with transformers, in batches.

The tokenizer's chat template turns messages into a prompt; prompts of similar length are batched
with left padding and generated together (`batch_size` at a time, on the configured device and
dtype). A prompt over the context length, a request with images (this backend is text-only), a
generation that runs past `timeout_s`, or output that is not JSON of the requested schema is a
recorded failure. Greedy requests (temperature 0) are not retried after invalid output: they
would give the same text again; sampled ones are retried `retries` times. Nothing is downloaded:
files are read with `local_files_only`. Sampling uses torch's global generator, seeded per call.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from zipp_assets.devices import require_device
from zipp_assets.llm.base import check_unique_ids, describe_error
from zipp_assets.llm.jsonio import TRUNCATED, parse_output
from zipp_assets.llm.types import LLMRequest, LLMResult

DTYPES = ("auto", "float32", "bfloat16", "float16")


class TransformersLLM:
    backend = "transformers"

    def __init__(self, model_dir: str | Path, *, device: str = "cpu", dtype: str = "auto", batch_size: int = 8,
                 timeout_s: float | None = None, retries: int = 1, max_context_tokens: int | None = None,
                 seed: int | None = 0):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if dtype not in DTYPES:
            raise ValueError(f"dtype {dtype!r} is not one of {DTYPES}")
        require_device(device, needs_dgl=False)  # before any weights are read
        folder = Path(model_dir)
        if not folder.is_dir():
            raise ValueError(f"model folder {folder} does not exist")
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, padding_side="left")
        if not self.tokenizer.chat_template:
            raise ValueError(f"the tokenizer in {folder} has no chat template")
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
        self.lm = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, use_safetensors=True,
                                                       dtype=torch_dtype).to(device).eval()
        self.model = str(folder)
        self.device, self.batch_size, self.timeout_s = device, batch_size, timeout_s
        self.retries, self.seed = retries, seed
        self.context_tokens = max_context_tokens or int(getattr(self.lm.config, "max_position_embeddings", 2048))

    def prompt_ids(self, request: LLMRequest) -> list[int]:
        ids = self.tokenizer.apply_chat_template(list(request.messages), add_generation_prompt=True, tokenize=True)
        return list(ids["input_ids"] if isinstance(ids, dict) else ids)

    def generate(self, requests: Sequence[LLMRequest]) -> list[LLMResult]:
        import torch

        check_unique_ids(requests)
        if self.seed is not None:
            torch.manual_seed(self.seed)
        results: dict[str, LLMResult] = {}
        prompts: dict[str, list[int]] = {}
        for request in requests:
            reason = None
            try:
                prompts[request.id] = self.prompt_ids(request)
            except Exception as error:  # a template that rejects these messages fails this request only
                reason = f"bad request: {describe_error(error)}"
            if request.images:
                reason = "unsupported input: the transformers backend is text-only and this request has images"
            elif reason is None and len(prompts[request.id]) + request.max_tokens > self.context_tokens:
                reason = (f"prompt too long: {len(prompts[request.id])} prompt tokens + max_tokens "
                          f"{request.max_tokens} > context {self.context_tokens}")
            if reason:
                results[request.id] = LLMResult.failure(request, reason, backend=self.backend, model=self.model,
                                                        prompt_tokens=len(prompts.get(request.id, ())))
        pending = [r for r in requests if r.id not in results]
        attempts = dict.fromkeys((r.id for r in pending), 0)
        for _ in range(self.retries + 1):
            if not pending:
                break
            for request, result in self._generate_all(pending, prompts):
                attempts[request.id] += 1
                results[request.id] = _with_attempts(result, attempts[request.id])
            # Only sampled requests with invalid or cut output go again: greedy would repeat itself.
            pending = [r for r in pending if r.temperature > 0 and not results[r.id].ok
                       and (results[r.id].error or "").startswith(("invalid output", TRUNCATED))]
        return [results[r.id] for r in requests]

    def _generate_all(self, requests: list[LLMRequest], prompts: dict[str, list[int]]):
        # Batches of like temperature and similar length: little padding, one sampling setting per batch.
        ordered = sorted(requests, key=lambda r: (r.temperature, len(prompts[r.id])))
        batches, current = [], []
        for request in ordered:
            if current and (len(current) == self.batch_size or current[0].temperature != request.temperature):
                batches.append(current)
                current = []
            current.append(request)
        if current:
            batches.append(current)
        for batch in batches:
            yield from self._generate_batch(batch, prompts)

    def _generate_batch(self, batch: list[LLMRequest], prompts: dict[str, list[int]]):
        """Results for one batch; a batch that fails (out of memory, say) is split in two and retried."""
        import torch

        started = time.perf_counter()
        try:
            input_ids, attention_mask = self._left_pad([prompts[r.id] for r in batch])
            temperature = batch[0].temperature
            if temperature > 0:
                sampling = dict(do_sample=True, temperature=temperature, top_k=0)
            else:  # and unset the sampling defaults a generation_config.json may carry
                sampling = dict(do_sample=False, temperature=None, top_p=None, top_k=None)
            with torch.inference_mode():
                output = self.lm.generate(
                    input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device),
                    max_new_tokens=max(r.max_tokens for r in batch), pad_token_id=self.tokenizer.pad_token_id,
                    eos_token_id=self.tokenizer.eos_token_id, max_time=self.timeout_s, **sampling)
        except Exception as error:
            if self.device.startswith("cuda"):
                torch.cuda.empty_cache()
            if len(batch) > 1:
                half = len(batch) // 2
                yield from self._generate_batch(batch[:half], prompts)
                yield from self._generate_batch(batch[half:], prompts)
                return
            yield batch[0], LLMResult.failure(batch[0], f"generation failed: {describe_error(error)}",
                                              backend=self.backend, model=self.model,
                                              prompt_tokens=len(prompts[batch[0].id]))
            return
        seconds = time.perf_counter() - started
        timed_out = self.timeout_s is not None and seconds >= self.timeout_s
        new_tokens = output[:, input_ids.shape[1]:].tolist()
        for request, tokens in zip(batch, new_tokens, strict=True):
            prompt_tokens = len(prompts[request.id])
            yield request, self._result(request, tokens[: request.max_tokens], prompt_tokens, seconds, timed_out)

    def _left_pad(self, prompts: list[list[int]]):
        """Prompts right-aligned (padding on the left), so every row's next token comes at the same position."""
        import torch

        width = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], dtype=torch.long)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], dtype=torch.long)
        return ids, mask

    def _result(self, request: LLMRequest, tokens: list[int], prompt_tokens: int, seconds: float,
                timed_out: bool) -> LLMResult:
        eos = self.tokenizer.eos_token_id
        finished = eos in tokens
        if finished:
            tokens = tokens[: tokens.index(eos)]
        tokens = [t for t in tokens if t != self.tokenizer.pad_token_id]
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        common = dict(text=text, prompt_tokens=prompt_tokens, completion_tokens=len(tokens), seconds=seconds,
                      backend=self.backend, model=self.model)
        if timed_out and not finished and len(tokens) < request.max_tokens:
            return LLMResult.failure(request, f"timeout: generation stopped after {self.timeout_s:g} s", **common)
        cut = not finished and len(tokens) >= request.max_tokens
        common["finish_reason"] = "length" if cut else "stop"
        if request.json_schema is None:
            return LLMResult(id=request.id, ok=True, **common)
        if cut:  # JSON the token limit cut is no answer, even where the part before the cut parses
            return LLMResult.failure(request, f"{TRUNCATED}: the output reached max_tokens ({request.max_tokens}) "
                                              "before it ended", **common)
        parsed, reason = parse_output(text, request.json_schema)
        if reason:
            return LLMResult.failure(request, f"invalid output: {reason}", **common)
        return LLMResult(id=request.id, ok=True, parsed=parsed, **common)


def _with_attempts(result: LLMResult, attempts: int) -> LLMResult:
    from dataclasses import replace

    return replace(result, attempts=attempts)
