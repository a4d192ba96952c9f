"""ZIPBench test fixtures: the LLM tests' fake OpenAI-compatible server on loopback (for the vision-language
judge), and their guard that keeps every socket of this folder's tests on loopback."""

from zipp_assets_tests.llm.conftest import fake_server, loopback_only  # noqa: F401
