"""The transformers backend on a tiny random Llama saved as safetensors: plumbing and failure recording,
not the text (the weights are random)."""

from __future__ import annotations

import pytest

from zipp_assets.llm.resources import LLMResource
from zipp_assets.llm.transformers_backend import TransformersLLM
from zipp_assets.llm.types import LLMRequest

SCHEMA = {"type": "object", "required": ["summary"], "properties": {"summary": {"type": "string"}}}


@pytest.fixture(scope="module")
def model_dir(tiny_llama_dir):
    return tiny_llama_dir


@pytest.fixture(scope="module")
def llm(model_dir):
    return TransformersLLM(model_dir, device="cpu", dtype="float32", batch_size=4)


def chats(n: int, **kwargs) -> list[LLMRequest]:
    return [LLMRequest.chat(f"r{i}", "photos of tomatoes " * (1 + 3 * i), system="be brief", **kwargs)
            for i in range(n)]


def test_loads_safetensors_locally_with_its_chat_template(llm, model_dir):
    assert {p.name for p in model_dir.iterdir()} >= {"model.safetensors", "tokenizer.json", "config.json"}
    assert not list(model_dir.glob("*.bin"))
    assert llm.model == str(model_dir) and llm.context_tokens == 128
    ids = llm.prompt_ids(LLMRequest.chat("a", "hi", system="sys"))
    assert llm.tokenizer.decode(ids).startswith("<|system|>sys</s><|user|>hi</s><|assistant|>")


def test_a_batch_comes_back_in_order_with_token_counts(llm):
    requests = chats(3, max_tokens=8)
    results = llm.generate(list(reversed(requests)))
    assert [r.id for r in results] == ["r2", "r1", "r0"]
    for result in results:
        request = next(r for r in requests if r.id == result.id)
        assert result.ok and result.backend == "transformers" and result.attempts == 1
        assert result.prompt_tokens == len(llm.prompt_ids(request))
        assert 0 < result.completion_tokens <= 8 and result.seconds > 0
    assert len({r.prompt_tokens for r in results}) == 3  # different lengths: padding was needed


def test_left_padded_batches_generate_what_single_prompts_do(model_dir):
    batched = TransformersLLM(model_dir, dtype="float32", batch_size=4).generate(chats(3, max_tokens=6))
    single = TransformersLLM(model_dir, dtype="float32", batch_size=1).generate(chats(3, max_tokens=6))
    assert [r.text for r in batched] == [r.text for r in single]
    assert [r.completion_tokens for r in batched] == [r.completion_tokens for r in single]


def test_each_request_keeps_its_own_max_tokens_in_a_shared_batch(llm):
    short = LLMRequest.chat("short", "hiking maps", max_tokens=2)
    long = LLMRequest.chat("long", "hiking maps", max_tokens=8)
    results = llm.generate([short, long])
    assert results[0].completion_tokens <= 2 and results[1].completion_tokens > 2


def test_over_long_prompts_and_images_are_recorded_failures(llm):
    too_long = LLMRequest.chat("long", "tomatoes " * 200, max_tokens=8)
    with_image = LLMRequest.chat("img", "describe", images=(b"\x89PNG\r\n\x1a\n",))
    results = llm.generate([too_long, *chats(1, max_tokens=4), with_image])
    assert [r.ok for r in results] == [False, True, False]
    assert results[0].error.startswith("prompt too long: ") and "> context 128" in results[0].error
    assert results[2].error.startswith("unsupported input: ")


def test_a_schema_the_model_cannot_satisfy_is_a_recorded_failure(model_dir):
    llm = TransformersLLM(model_dir, dtype="float32", retries=2)
    greedy, sampled = chats(2, max_tokens=8, json_schema=SCHEMA)
    sampled = LLMRequest(id="sampled", messages=sampled.messages, json_schema=SCHEMA, max_tokens=8, temperature=0.8)
    results = llm.generate([greedy, sampled])
    # Eight tokens of a random model never close an object: cut by the limit, which is said
    # (old code: "invalid output").
    assert all(not r.ok and r.error.startswith("truncated: the output reached max_tokens (8)") and r.parsed is None
               and r.finish_reason == "length" for r in results)
    assert results[0].attempts == 1  # greedy would only repeat itself
    assert results[1].attempts == 3  # sampled: retried


def test_a_generation_past_the_timeout_is_a_recorded_failure(model_dir):
    llm = TransformersLLM(model_dir, dtype="float32", timeout_s=1e-9)
    result = llm.generate(chats(1, max_tokens=50))[0]
    assert not result.ok and result.error.startswith("timeout: generation stopped")
    assert result.completion_tokens < 50


def test_a_failing_batch_is_split_and_only_the_bad_request_fails(model_dir, monkeypatch):
    llm = TransformersLLM(model_dir, dtype="float32", batch_size=4)
    poison = len(llm.prompt_ids(chats(3)[1]))
    real_generate = llm.lm.generate

    def generate(**kwargs):
        if any(int(row.sum()) == poison for row in kwargs["attention_mask"]):
            raise RuntimeError("CUDA out of memory")
        return real_generate(**kwargs)

    monkeypatch.setattr(llm.lm, "generate", generate)
    results = llm.generate(chats(3, max_tokens=4))
    assert [r.ok for r in results] == [True, False, True]
    assert results[1].error == "generation failed: RuntimeError: CUDA out of memory"


def test_configuration_errors_raise(model_dir, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        TransformersLLM(tmp_path / "missing")
    with pytest.raises(ValueError, match="dtype"):
        TransformersLLM(model_dir, dtype="float8")


def test_built_from_the_resource(model_dir):
    resource = LLMResource(backend="transformers", model_dir=str(model_dir), device="cpu", dtype="bfloat16",
                           batch_size=2, timeout_s=30, retries=0)
    with resource.client() as llm:
        assert isinstance(llm, TransformersLLM) and (llm.batch_size, llm.timeout_s, llm.retries) == (2, 30, 0)
        assert str(next(llm.lm.parameters()).dtype) == "torch.bfloat16"
        results = llm.generate(chats(3, max_tokens=3))
    assert all(r.ok and r.backend == "transformers" for r in results)
