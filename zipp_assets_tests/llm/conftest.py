"""LLM test fixtures: the fake vLLM-shaped server on loopback, and a guard that keeps tests on loopback."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from zipp_assets_tests.llm.fake_openai_server import Behaviour, FakeOpenAIServer

_real_connect = socket.socket.connect


def _loopback_only(sock, address):
    host = address[0] if isinstance(address, tuple) else None
    if host is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            raise ConnectionRefusedError(f"LLM tests talk to loopback only; refused a connection to {host}")
    return _real_connect(sock, address)


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Every socket a test in this folder opens (httpx's included) may only connect to 127.0.0.1 / ::1."""
    monkeypatch.setattr(socket.socket, "connect", _loopback_only)


@pytest.fixture
def fake_server():
    server = FakeOpenAIServer(behaviour=Behaviour()).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    """A tiny random Llama with its trained tokenizer, saved as safetensors (read-only for tests)."""
    from zipp_assets_tests.llm.tiny_llama import save_tiny_llama

    return save_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))
