"""Studio fixtures: a minimal lake written table by table (personas, evidence, a benchmark user with a
reference image and a ZIPBench image), and a studio over it with the demo's offline models."""

from __future__ import annotations

import json
import socket
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pytest
from PIL import Image

from zipp_assets import lake
from zipp_assets.imaging.resources import ImageGeneratorResource
from zipp_assets.llm.resources import LLMResource
from zipp_assets.personas.evidence import EVIDENCE, EVIDENCE_SCHEMA, UserEvidence, render
from zipp_assets.personas.shards import shard_of
from zipp_assets.personas.verbalize import PERSONAS, PERSONAS_SCHEMA


def _import_anyio_eagerly() -> None:
    """Load every lazily imported part of anyio now, in the main thread. pytest rewrites the modules of
    plugin packages as they are imported (anyio is one), and CPython 3.11's parser is not safe to run in
    two threads at once ("AST constructor recursion depth mismatch"): a first import from the app's
    worker thread, while another thread parses, failed a test in CI."""
    import anyio

    for name in dir(anyio):
        getattr(anyio, name)
    import anyio._core._fileio  # noqa: F401 (FileResponse opens files through it)


_import_anyio_eagerly()
from zipp_assets.studio.access import EDITORS_FILE, EditorRegistry
from zipp_assets.studio.service import Studio, StudioSettings
from zipp_assets.studio.study import StudyConfig
from zipp_assets.zipbench.generate import MANIFEST_SCHEMA

EDITOR, EDITOR_TOKEN = "Ada", "test-editor-token-0123456789"
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'
USERS = ["u_" + f"{i:02d}" * 10 for i in (1, 2, 3)]
REFERENCE_KEY = "ab" + "0" * 62


def persona(i: int) -> dict:
    return {"age_band": "25-34", "gender": "female", "locale": "Lisbon", "profession": "nurse",
            "personality_traits": [], "hobbies": ["birdwatching"], "interests": ["r/birding"],
            "visual_interests": ["nature, wildlife and animals"],
            "aesthetics": {"palette": ["teal"], "lighting": ["soft light"], "mood": [], "styles": []},
            "affective_traits": [], "confidence": 0.5,
            # The third user's persona carries markup, as a model's output might: it must arrive as text.
            "summary": f"I love birds and quiet mornings by the water ({i}).{' ' + HOSTILE if i == 2 else ''}"}


def write_minimal_lake(data_dir: Path) -> Path:
    lake_dir = data_dir / "lake"
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    by_shard: dict[str, list[int]] = {}
    for i, user in enumerate(USERS):
        by_shard.setdefault(shard_of(user), []).append(i)
    for shard, members in by_shard.items():
        personas = [{"user_index": i, "user_id": USERS[i], "shard": shard, "evidence_hash": "h", "prompt_version": "v",
                     "schema_version": "persona-v1", "model": "template:rules", "ok": True, "error": None,
                     "persona_json": json.dumps(persona(i)), "summary": persona(i)["summary"], "prompt_tokens": 0,
                     "completion_tokens": 0, "seconds": 0.0, "mined_utc": now} for i in members]
        evidence = [{"user_index": i, "user_id": USERS[i], "shard": shard, "top_subreddits": ["birding", "aww"],
                     "top_weights": [0.75, 0.25], "visual_descriptors": ["teal hues"], "snippets_used": 2,
                     "snippets_available": 3,
                     "evidence_text": render(UserEvidence(i, USERS[i], "3 comments", [("birding", 0.75), ("aww", 0.25)],
                                                          ["teal hues"], [("birding", "saw a heron today"),
                                                                          ("aww", HOSTILE)])),
                     "tokens": 40, "token_counter": "approximate", "evidence_hash": "h", "evidence_version": "v"}
                    for i in members]
        with lake.atomic_partition(lake_dir, PERSONAS, {"shard": shard}) as folder:
            lake.write_table(folder, pa.Table.from_pylist(personas, schema=PERSONAS_SCHEMA), PERSONAS_SCHEMA)
        with lake.atomic_partition(lake_dir, EVIDENCE, {"shard": shard}) as folder:
            lake.write_table(folder, pa.Table.from_pylist(evidence, schema=EVIDENCE_SCHEMA), EVIDENCE_SCHEMA)
    # The first user is a benchmark user: one reference image in the image cache, one ZIPBench image.
    user, shard = USERS[0], shard_of(USERS[0])
    with lake.atomic_partition(lake_dir, "zipbench_users") as folder:
        lake.write_table(folder, pa.Table.from_pylist([{"user_id": user, "shard": shard,
                                                        "reference_url_keys": [REFERENCE_KEY]}]))
    reference = data_dir / "raw" / "images" / REFERENCE_KEY[:2] / REFERENCE_KEY
    reference.parent.mkdir(parents=True)
    Image.new("RGB", (16, 16), (0, 128, 128)).save(reference, format="PNG")
    with lake.atomic_partition(lake_dir, "zipbench_prompts") as folder:
        lake.write_table(folder, pa.Table.from_pylist([{"user_id": user, "shard": shard, "prompt_id": "animal-1",
                                                        "category": "animal", "base_prompt": "a fox in the snow",
                                                        "source": "v", "seed": 7}]))
    relpath = f"generic/{shard}/{user}__animal-1.png"
    (data_dir / "zipbench" / "images" / relpath).parent.mkdir(parents=True)
    Image.new("RGB", (16, 16), (200, 60, 60)).save(data_dir / "zipbench" / "images" / relpath, format="PNG")
    with lake.atomic_partition(lake_dir, "zipbench_images", {"method": "generic", "shard": shard}) as folder:
        lake.write_table(folder, pa.Table.from_pylist([{
            "user_id": user, "prompt_id": "animal-1", "method": "generic", "shard": shard, "seed": 7,
            "final_prompt": "a fox in the snow", "image_path": relpath, "generator": "offline", "generation_key": "k"}],
            schema=MANIFEST_SCHEMA), MANIFEST_SCHEMA)
    return lake_dir


@pytest.fixture
def data_dir(tmp_path) -> Path:
    folder = tmp_path / "data"
    write_minimal_lake(folder)
    return folder


def editor_registry(data_dir: Path) -> EditorRegistry:
    return EditorRegistry(StudioSettings(data_dir).studio_dir / EDITORS_FILE)


def add_test_editor(data_dir: Path) -> None:
    """The editor account the tests sign in with (Ada, `EDITOR_TOKEN`), once per data folder."""
    registry = editor_registry(data_dir)
    if not any(e["name"] == EDITOR for e in registry.listed()):
        registry.add(EDITOR, EDITOR_TOKEN)


def make_studio(data_dir: Path, n_prompts: int = 3, hosts=("testserver", "127.0.0.1", "localhost"),
                flush_interval_s: float = 0.05, generator_factory=None, **settings) -> Studio:
    add_test_editor(data_dir)
    studio_settings = StudioSettings(data_dir, StudyConfig(n_prompts=n_prompts), allowed_hosts=tuple(hosts),
                                     flush_interval_s=flush_interval_s, **settings)
    return Studio(studio_settings, LLMResource(), ImageGeneratorResource(), generator_factory)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StudioServer:
    """`python -m zipp_assets.studio` in its own process on a free loopback port: a real uvicorn server."""

    def __init__(self, data_dir: Path, prompts: int, log_path: Path, extra_args: tuple[str, ...] = (),
                 host_header: str | None = None):
        self.data_dir, self.prompts, self.log_path, self.extra_args = data_dir, prompts, log_path, extra_args
        self.host_header = host_header  # the Host a public studio accepts, for the readiness check
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = None

    def start(self, timeout: float = 60.0) -> "StudioServer":
        import os
        import subprocess
        import sys
        import time
        import urllib.request

        add_test_editor(self.data_dir)
        env = os.environ | {"ZIPP_DATA_DIR": str(self.data_dir), "ZIPP_PROFILE": "demo", "DGLBACKEND": "pytorch"}
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "zipp_assets.studio", "--port", str(self.port), "--prompts", str(self.prompts),
             *self.extra_args],
            env=env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the studio exited with {self.process.returncode}: "
                                   f"{self.log_path.read_text()[-2000:]}")
            try:
                headers = {"Host": self.host_header} if self.host_header else {}
                with urllib.request.urlopen(urllib.request.Request(self.url + "/", headers=headers),
                                            timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        raise TimeoutError(f"the studio did not answer within {timeout}s: {self.log_path.read_text()[-2000:]}")

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no final flush."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)
        self._log.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except Exception:
                self.process.kill()
                self.process.wait(30)
        self._log.close()
