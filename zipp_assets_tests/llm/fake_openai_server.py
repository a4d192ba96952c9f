"""A small OpenAI-compatible server shaped like vLLM's, on loopback, for tests and the benchmark.

Routes: GET /health, GET /v1/models, POST /tokenize ({"count", "tokens"}; whitespace tokens),
POST /v1/chat/completions (OpenAI response with usage). Without a schema it answers
"echo: <last user text>"; with `response_format` json_schema it answers the smallest object that
satisfies the schema. A schema sent with `strict: true` must keep OpenAI's strict-mode rules (an
object at the root, every property required, `additionalProperties: false` on every object, none of
the keywords strict mode refuses), else the answer is a 400 naming the rule, as OpenAI's is.
`Behaviour` switches on what the tests need: a fixed latency per request, fixed content (malformed JSON, schema-violating JSON), HTTP errors for the first N calls, hanging,
and dying (no more answers, listening socket closed) after N completions. It serves requests
concurrently (one thread each) and records what it saw: bodies, headers, peak concurrency, peers.

Run as a script it is a stand-in for `vllm serve` in the managed-server tests:
    python fake_openai_server.py --port P --model M [--startup-delay S] [--ignore-sigterm] [--exit-at-start N]
Standard library only, so it starts in a fraction of a second in any interpreter.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Behaviour:
    latency_s: float = 0.0
    content: str | None = None  # answer this text instead of the echo / schema instance
    fail_first: int = 0  # the first N completions get `fail_status`
    fail_status: int = 500
    retry_after: str | None = None
    hang_s: float = 0.0  # sleep this long before answering a completion
    die_after: int | None = None  # after N completions answered, stop answering and close the socket
    finish_reason: str = "stop"  # "length": answer as if max_tokens had cut the output


@dataclass
class Record:
    completions: int = 0  # completions answered with 200
    calls: int = 0  # completion requests received
    in_flight: int = 0
    peak_in_flight: int = 0
    bodies: list[dict] = field(default_factory=list)
    headers: list[dict] = field(default_factory=list)
    peers: set[str] = field(default_factory=set)


# What strict mode refuses: composition keywords, and length and default keywords (not in its subset).
STRICT_REFUSED = ("allOf", "not", "if", "then", "else", "dependentRequired", "dependentSchemas", "default",
                  "minLength", "maxLength", "patternProperties", "unevaluatedProperties", "propertyNames",
                  "minProperties", "maxProperties")


def strict_schema_problems(schema: Any, where: str = "schema", root: bool = True) -> list[str]:
    """Why OpenAI's strict mode would refuse `schema` (empty when it would accept it)."""
    problems: list[str] = []
    if not isinstance(schema, dict):
        return problems
    if root and (schema.get("type") != "object" or "anyOf" in schema):
        problems.append(f"{where}: the root must be an object, not anyOf")
    for key in STRICT_REFUSED:
        if key in schema:
            problems.append(f"{where}: '{key}' is not permitted")
    if schema.get("type") == "object" or "properties" in schema:
        properties = schema.get("properties", {})
        missing = sorted(set(properties) - set(schema.get("required", [])))
        if missing:
            problems.append(f"{where}: 'required' must list every property; missing {missing}")
        if schema.get("additionalProperties") is not False:
            problems.append(f"{where}: 'additionalProperties' must be false")
        for name, sub in properties.items():
            problems += strict_schema_problems(sub, f"{where}.{name}", False)
    problems += strict_schema_problems(schema.get("items"), f"{where}.items", False)
    for i, sub in enumerate(schema.get("anyOf", [])):
        problems += strict_schema_problems(sub, f"{where}.anyOf[{i}]", False)
    for name, sub in (schema.get("$defs") or {}).items():
        problems += strict_schema_problems(sub, f"{where}.$defs.{name}", False)
    return problems


def minimal_instance(schema: dict[str, Any], root: dict[str, Any] | None = None) -> Any:
    """The smallest value that satisfies the simple schemas tests use (objects, arrays, enums, scalars,
    local $refs)."""
    root = schema if root is None else root
    if "$ref" in schema:
        target = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return minimal_instance(target, root)
    if "anyOf" in schema:
        return minimal_instance(schema["anyOf"][0], root)
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type", "object")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "object":
        return {name: minimal_instance(schema.get("properties", {}).get(name, {}), root)
                for name in schema.get("required", [])}
    if kind == "array":
        return [minimal_instance(schema.get("items", {}), root) for _ in range(schema.get("minItems", 0))]
    if kind == "string":
        return "x" * max(1, schema.get("minLength", 1))
    if kind in ("integer", "number"):
        return schema.get("minimum", 1)
    if kind == "boolean":
        return True
    return None


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(part.get("text", "") for part in content if part.get("type") == "text")


class FakeOpenAIServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, host: str = "127.0.0.1", port: int = 0, model: str = "tiny-model",
                 behaviour: Behaviour | None = None):
        super().__init__((host, port), Handler)
        self.model = model
        self.behaviour = behaviour or Behaviour()
        self.record = Record()
        self.lock = threading.Lock()
        self.dead = False
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeOpenAIServer:
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.dead = True
        self.shutdown()
        self.server_close()

    def die(self) -> None:
        """Stop answering: close the listening socket; handlers drop their connections."""
        if not self.dead:
            self.dead = True
            threading.Thread(target=self.stop, daemon=True).start()

    def answer(self, body: dict) -> tuple[int, dict, dict]:
        behaviour, record = self.behaviour, self.record
        with self.lock:
            record.calls += 1
            call = record.calls
        if call <= behaviour.fail_first:
            headers = {"Retry-After": behaviour.retry_after} if behaviour.retry_after else {}
            return behaviour.fail_status, {"error": {"message": "injected failure"}}, headers
        if behaviour.hang_s:
            time.sleep(behaviour.hang_s)
        if behaviour.latency_s:
            time.sleep(behaviour.latency_s)
        messages = body.get("messages", [])
        users = [m for m in messages if m.get("role") == "user"]
        fmt = body.get("response_format") or {}
        if fmt.get("type") == "json_schema" and fmt["json_schema"].get("strict"):
            problems = strict_schema_problems(fmt["json_schema"].get("schema"))
            if problems:
                return 400, {"error": {"message": "Invalid schema for response_format "
                                                  f"'{fmt['json_schema'].get('name')}': " + "; ".join(problems),
                                       "type": "invalid_request_error"}}, {}
        if behaviour.content is not None:
            content = behaviour.content
        elif fmt.get("type") == "json_schema":
            content = json.dumps(minimal_instance(fmt["json_schema"]["schema"]))
        else:
            content = "echo: " + (_text_of(users[-1]["content"]) if users else "")
        prompt_tokens = sum(len(_text_of(m.get("content", "")).split()) for m in messages)
        completion_tokens = len(content.split())
        return 200, {
            "id": f"chatcmpl-{call}", "object": "chat.completion", "created": int(time.time()), "model": self.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": behaviour.finish_reason}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }, {}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes: no 40 ms delayed-ACK stall
    server: FakeOpenAIServer

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, status: int, payload: Any, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode() if payload is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _drop(self) -> None:
        """A dead server: close the connection without answering."""
        self.close_connection = True
        self.connection.close()

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def do_GET(self) -> None:
        if self.server.dead:
            return self._drop()
        if self.path == "/health":
            return self._send(200, None)
        if self.path == "/v1/models":
            return self._send(200, {"object": "list", "data": [
                {"id": self.server.model, "object": "model", "owned_by": "vllm", "max_model_len": 4096}]})
        self._send(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        server = self.server
        if server.dead:
            return self._drop()
        body = self._body()
        if self.path == "/tokenize":
            text = body.get("prompt") or " ".join(_text_of(m.get("content", "")) for m in body.get("messages", []))
            tokens = text.split()
            return self._send(200, {"count": len(tokens), "tokens": list(range(len(tokens))), "max_model_len": 4096})
        if self.path != "/v1/chat/completions":
            return self._send(404, {"error": {"message": f"no route {self.path}"}})
        record = server.record
        with server.lock:
            record.bodies.append(body)
            record.headers.append(dict(self.headers))
            record.peers.add(self.client_address[0])
            record.in_flight += 1
            record.peak_in_flight = max(record.peak_in_flight, record.in_flight)
        try:
            status, payload, headers = server.answer(body)
        finally:
            with server.lock:
                record.in_flight -= 1
        limit = server.behaviour.die_after
        with server.lock:
            if status == 200 and limit is not None and record.completions >= limit:
                server.die()
            elif status == 200:
                record.completions += 1
        if server.dead:
            return self._drop()
        self._send(status, payload, headers)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", default="tiny-model")
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--startup-delay", type=float, default=0.0)
    parser.add_argument("--ignore-sigterm", action="store_true")
    parser.add_argument("--exit-at-start", type=int, default=None)
    args = parser.parse_args(argv)
    print(f"fake server: pid {os.getpid()}, loading {args.model}", flush=True)
    if args.exit_at_start is not None:
        print("fake server: RuntimeError: no accelerator found for this model", flush=True)
        sys.exit(args.exit_at_start)
    if args.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(args.startup_delay)
    server = FakeOpenAIServer(args.host, args.port, args.model, Behaviour(latency_s=args.latency))
    print(f"fake server: listening on {server.base_url}", flush=True)
    server.serve_forever(poll_interval=0.05)


if __name__ == "__main__":
    main()
