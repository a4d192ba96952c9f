"""The HTTP client (vllm and openai backends) against the fake vLLM-shaped server on loopback."""

from __future__ import annotations

import json
import time

import pytest

from zipp_assets.llm.openai_compat import OpenAICompatibleLLM, split_base_url
from zipp_assets.llm.stats import LLMStats
from zipp_assets.llm.types import LLMRequest

SCHEMA = {"type": "object", "required": ["name", "age"], "additionalProperties": False,
          "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}}


def client(server, **kwargs) -> OpenAICompatibleLLM:
    kwargs = {"backend": "vllm", "timeout_s": 5.0, "retries": 2, "backoff_s": 0.01, **kwargs}
    return OpenAICompatibleLLM(server.base_url, server.model, **kwargs)


def requests(n: int, **kwargs) -> list[LLMRequest]:
    return [LLMRequest.chat(f"r{i}", f"request number {i}", system="be brief", **kwargs) for i in range(n)]


def test_results_in_request_order_with_token_counts(fake_server):
    results = client(fake_server, concurrency=8).generate(requests(20))
    assert [r.id for r in results] == [f"r{i}" for i in range(20)]
    assert all(r.ok and r.text == f"echo: request number {i}" for i, r in enumerate(results))
    assert all(r.prompt_tokens == 5 and r.completion_tokens == 4 and r.attempts == 1 for r in results)
    assert {r.backend for r in results} == {"vllm"} and {r.model for r in results} == {fake_server.model}
    stats = LLMStats.from_results(results, seconds=2.0)
    assert (stats.requests, stats.ok, stats.prompt_tokens, stats.completion_tokens) == (20, 20, 100, 80)
    assert stats.requests_per_s == 10.0 and stats.tokens_per_s == 90.0


def test_requests_go_concurrently_up_to_the_bound(fake_server):
    fake_server.behaviour.latency_s = 0.2
    started = time.perf_counter()
    results = client(fake_server, concurrency=8).generate(requests(16))
    elapsed = time.perf_counter() - started
    assert all(r.ok for r in results)
    assert fake_server.record.peak_in_flight == 8  # the bound is used, and never exceeded
    assert elapsed < 1.6  # 16 x 0.2 s one at a time would be 3.2 s


def test_structured_output_is_requested_and_validated(fake_server):
    result = client(fake_server).generate(requests(1, json_schema=SCHEMA, schema_name="persona v1"))[0]
    body = fake_server.record.bodies[0]
    assert body["response_format"] == {"type": "json_schema", "json_schema": {"name": "persona_v1", "schema": SCHEMA}}
    assert body["messages"][0] == {"role": "system", "content": "be brief"} and body["max_tokens"] == 512
    assert result.ok and result.parsed == {"name": "x", "age": 1}


def test_structured_output_can_be_left_to_prompting(fake_server):
    fake_server.behaviour.content = 'Here it is: {"name": "Ann", "age": 30}'
    result = client(fake_server, structured_output=False).generate(requests(1, json_schema=SCHEMA))[0]
    assert "response_format" not in fake_server.record.bodies[0]
    assert result.ok and result.parsed == {"name": "Ann", "age": 30}


def test_repairable_json_is_repaired(fake_server):
    fake_server.behaviour.content = '```json\n{"name": "Ann", "age": 30,}\n'
    result = client(fake_server).generate(requests(1, json_schema=SCHEMA))[0]
    assert result.ok and result.parsed == {"name": "Ann", "age": 30} and result.attempts == 1


@pytest.mark.parametrize("content", ['{"name": "Lis', '{"name": "Ann", "age": 30}'])
def test_output_cut_by_the_token_limit_is_a_failure_and_not_retried(fake_server, content):
    """Old code never read finish_reason and closed a cut object: `{"name": "Lis` became a valid answer."""
    fake_server.behaviour.content, fake_server.behaviour.finish_reason = content, "length"
    result = client(fake_server, retries=2).generate(requests(1, json_schema=SCHEMA, max_tokens=7))[0]
    assert not result.ok and result.parsed is None and result.attempts == 1 and fake_server.record.calls == 1
    assert result.error.startswith("truncated: the output reached max_tokens (7)") and result.finish_reason == "length"
    # Free text cut by the limit is still text; the caller sees why it ended.
    fake_server.behaviour.content = "a sentence that goes on and"
    text = client(fake_server).generate(requests(1))[0]
    assert text.ok and text.finish_reason == "length"
    # Cut with no finish_reason to say so (a server that leaves it out): the unclosed object is caught anyway.
    fake_server.behaviour.finish_reason = None
    fake_server.behaviour.content = '{"name": "Lis'
    unsaid = client(fake_server, retry_invalid_output=False).generate(requests(1, json_schema=SCHEMA))[0]
    assert not unsaid.ok and unsaid.error.startswith("invalid output: truncated")


def test_the_fake_server_refuses_what_strict_mode_refuses(fake_server):
    import httpx

    loose = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 5}, "age": {"type": "integer"}},
             "required": ["name"]}
    raw = httpx.post(fake_server.base_url + "/v1/chat/completions", timeout=5, json={
        "model": fake_server.model, "messages": [{"role": "user", "content": "x"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": loose, "strict": True}}})
    assert raw.status_code == 400 and "maxLength" in raw.text
    openai = client(fake_server, backend="openai")
    result = openai.generate(requests(1, json_schema=loose))[0]
    assert not result.ok and result.attempts == 1 and result.error.startswith("http 400")
    assert "missing ['age']" in result.error and "additionalProperties" in result.error
    pet = {"type": "object", "properties": {"n": {"type": "string"}}}
    nested = {**SCHEMA, "properties": {**SCHEMA["properties"], "pet": pet},
              "required": ["name", "age", "pet"]}
    assert "schema.pet: 'required'" in openai.generate(requests(1, json_schema=nested))[0].error
    assert openai.generate(requests(1, json_schema=SCHEMA))[0].ok


def test_vllm_gets_the_whole_schema_and_openai_its_strict_subset(fake_server):
    """Strict mode refuses length keywords; vLLM's guided decoding needs them to keep a small model's strings
    short (SmolLM2-135M ran to max_tokens on 7 of 8 personas without them). Output is validated against the
    whole schema either way."""
    from zipp_assets.personas.prompt import verbalization_request

    request = verbalization_request("u", "{}")
    client(fake_server).generate([request])
    sent = fake_server.record.bodies[-1]["response_format"]["json_schema"]
    assert "strict" not in sent and sent["schema"] == request.json_schema
    assert '"maxLength"' in json.dumps(sent["schema"])
    client(fake_server, backend="openai").generate([request])
    sent = fake_server.record.bodies[-1]["response_format"]["json_schema"]
    assert sent["strict"] is True and '"maxLength"' not in json.dumps(sent["schema"])
    fake_server.behaviour.content = json.dumps({"name": "x" * 50, "age": 1})
    limited = {**SCHEMA, "properties": {**SCHEMA["properties"], "name": {"type": "string", "maxLength": 5}}}
    result = client(fake_server, backend="openai", retries=0).generate(requests(1, json_schema=limited))[0]
    assert not result.ok and "maxLength" not in json.dumps(fake_server.record.bodies[-1]["response_format"])


def test_the_persona_and_rewrite_schemas_pass_strict_mode(fake_server):
    """Old code sent the persona schema, whose properties were not all required, with strict: true."""
    from zipp_assets.personas.prompt import verbalization_request
    from zipp_assets.personas.verbalize import validate_persona
    from zipp_assets.zipbench.rewrite import rewrite_request

    persona = client(fake_server, backend="openai").generate([verbalization_request("u", "{}")])[0]
    assert fake_server.record.bodies[-1]["response_format"]["json_schema"]["strict"] is True
    assert persona.ok, persona.error
    assert validate_persona(persona.parsed)[1] is None  # the smallest strict-valid answer is a persona
    rewrite = client(fake_server, backend="openai").generate([rewrite_request("r", "llm_rewrite", "a cat", None,
                                                                              [])])[0]
    assert rewrite.ok, rewrite.error


def test_malformed_json_is_retried_then_recorded(fake_server):
    fake_server.behaviour.content = "I am sorry, I cannot write that."
    results = client(fake_server, retries=2).generate(requests(3, json_schema=SCHEMA))
    assert all(not r.ok and r.attempts == 3 for r in results)
    assert all(r.error.startswith("invalid output: no JSON object") for r in results)
    assert results[0].text == "I am sorry, I cannot write that." and fake_server.record.calls == 9


def test_schema_violation_is_recorded_without_retry_when_configured(fake_server):
    fake_server.behaviour.content = '{"name": "Ann", "age": "thirty"}'
    result = client(fake_server, retry_invalid_output=False).generate(requests(1, json_schema=SCHEMA))[0]
    assert not result.ok and result.attempts == 1 and result.parsed is None
    assert result.error.startswith("invalid output: schema violation at age")


@pytest.mark.parametrize("status", [500, 429])
def test_server_errors_are_retried_with_backoff(fake_server, status):
    fake_server.behaviour.fail_first, fake_server.behaviour.fail_status = 2, status
    started = time.perf_counter()
    result = client(fake_server, concurrency=1, backoff_s=0.1, retries=3).generate(requests(1))[0]
    assert result.ok and result.attempts == 3
    assert time.perf_counter() - started >= 0.05 + 0.1  # two backoffs, jittered into [b/2, b]


def test_retry_after_is_honoured(fake_server):
    fake_server.behaviour.fail_first, fake_server.behaviour.fail_status = 1, 429
    fake_server.behaviour.retry_after = "0.5"
    started = time.perf_counter()
    result = client(fake_server, backoff_s=0.01).generate(requests(1))[0]
    assert result.ok and result.attempts == 2 and time.perf_counter() - started >= 0.5


def test_errors_past_the_retries_are_recorded(fake_server):
    fake_server.behaviour.fail_first = 100
    results = client(fake_server, retries=1).generate(requests(2))
    assert [r.ok for r in results] == [False, False] and all(r.attempts == 2 for r in results)
    assert results[0].error.startswith("http 500: ")


def test_a_client_error_is_not_retried(fake_server):
    fake_server.behaviour.fail_first, fake_server.behaviour.fail_status = 100, 400
    result = client(fake_server, retries=3).generate(requests(1))[0]
    assert not result.ok and result.attempts == 1 and result.error.startswith("http 400")


def test_a_hanging_server_times_out_and_is_recorded(fake_server):
    fake_server.behaviour.hang_s = 3.0
    started = time.perf_counter()
    results = client(fake_server, timeout_s=0.3, retries=1, concurrency=4).generate(requests(4))
    assert time.perf_counter() - started < 2.0
    assert all(not r.ok and r.error == "timeout: no answer within 0.3 s" and r.attempts == 2 for r in results)


def test_a_server_that_dies_mid_batch(fake_server):
    fake_server.behaviour.latency_s, fake_server.behaviour.die_after = 0.05, 5
    results = client(fake_server, concurrency=2, retries=1).generate(requests(12))
    answered = [r for r in results if r.ok]
    failed = [r for r in results if not r.ok]
    assert len(answered) == 5 and len(failed) == 7 and [r.id for r in results] == [f"r{i}" for i in range(12)]
    assert all(r.error.startswith("connection error: ") for r in failed)
    stats = LLMStats.from_results(results, 1.0)
    assert stats.failure_reasons == {"connection error": 7}


def test_api_key_comes_from_the_named_environment_variable(fake_server, monkeypatch):
    monkeypatch.setenv("ZIPP_TEST_LLM_KEY", "sk-test-123")
    client(fake_server, backend="openai", api_key_env="ZIPP_TEST_LLM_KEY").generate(requests(1))
    assert fake_server.record.headers[0]["Authorization"] == "Bearer sk-test-123"
    monkeypatch.delenv("ZIPP_TEST_LLM_KEY")
    with pytest.raises(ValueError, match="ZIPP_TEST_LLM_KEY is not set"):
        client(fake_server, api_key_env="ZIPP_TEST_LLM_KEY")


def test_images_travel_as_data_uris_in_the_last_user_message(fake_server, tmp_path):
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
    (tmp_path / "a.png").write_bytes(png)
    request = LLMRequest.chat("img", "describe", images=(b"\xff\xd8\xff\xe0jpeg", "a.png"))
    result = client(fake_server, image_root=tmp_path).generate([request])[0]
    parts = fake_server.record.bodies[0]["messages"][-1]["content"]
    assert result.ok and result.text == "echo: describe"
    assert parts[0] == {"type": "text", "text": "describe"}
    assert parts[1]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert parts[2]["image_url"]["url"].startswith("data:image/png;base64,iVBORw0KGgo")


def test_an_image_path_outside_the_root_fails_that_request_only(fake_server, tmp_path):
    (tmp_path / "secret.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    root = tmp_path / "images"
    root.mkdir()
    bad = LLMRequest.chat("bad", "describe", images=("../secret.png",))
    results = client(fake_server, image_root=root).generate([bad, *requests(1)])
    assert not results[0].ok and results[0].error == "bad request: image path '../secret.png' leaves the image root"
    assert results[0].attempts == 0 and results[1].ok and fake_server.record.calls == 1


def test_health_models_and_tokenize(fake_server):
    llm = client(fake_server)
    assert llm.health() and llm.models() == [fake_server.model]
    assert llm.count_tokens("one two three") == 3
    assert llm.count_tokens(LLMRequest.chat("t", "four five", system="six")) == 3
    fake_server.stop()
    assert not llm.health()


def test_base_url_with_or_without_v1():
    assert split_base_url("http://127.0.0.1:8000/v1/") == ("http://127.0.0.1:8000", "http://127.0.0.1:8000/v1")
    assert split_base_url("http://127.0.0.1:8000") == ("http://127.0.0.1:8000", "http://127.0.0.1:8000/v1")


def test_tests_talk_to_loopback_only(fake_server):
    client(fake_server).generate(requests(2))
    assert fake_server.server_address[0] == "127.0.0.1" and fake_server.record.peers == {"127.0.0.1"}
    result = OpenAICompatibleLLM("http://192.0.2.1:9", "m", retries=0, timeout_s=1).generate(requests(1))[0]
    assert not result.ok and "loopback only" in result.error


def test_a_malformed_response_body_is_retried_then_recorded(fake_server, monkeypatch):
    monkeypatch.setattr(fake_server, "answer", lambda body: (200, {"choices": []}, {}))
    result = client(fake_server, retries=1).generate(requests(1))[0]
    assert not result.ok and result.attempts == 2 and result.error.startswith("malformed response: IndexError")
