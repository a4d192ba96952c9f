"""A bounded load test on loopback: 50 participants at once against a real uvicorn server (its own
process), each filling the survey and voting through every comparison; then the server is killed
(SIGKILL, no shutdown) and restarted, and every acknowledged vote must be in the lake, once.

It prints the vote latencies (p50/p95 of the acknowledgement) and, with ZIPP_STUDIO_LOAD_REPORT set,
writes them as JSON there (README's figures). Sizes: ZIPP_STUDIO_LOAD_PARTICIPANTS (default 50) and
ZIPP_STUDIO_LOAD_PROMPTS (default 10).
"""

import asyncio
import json
import os
import re
import statistics
import time

import httpx
import pytest

from zipp_assets.studio.storage import SESSIONS, VOTES, read_study_table
from zipp_assets_tests.studio.conftest import StudioServer

PARTICIPANTS = int(os.environ.get("ZIPP_STUDIO_LOAD_PARTICIPANTS", "50"))
PROMPTS = int(os.environ.get("ZIPP_STUDIO_LOAD_PROMPTS", "10"))
UNLIMITED_SESSIONS = ("--session-limit", f"{PARTICIPANTS}/{PARTICIPANTS}/60")  # all from one loopback address
SURVEY = {"age_band": "25-34", "gender": "female", "country": "Portugal", "profession": "nurse",
          "hobbies": "hiking, wildlife photography", "consent": "yes"}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def participant(url: str, number: int, vote_latencies: list[float], acknowledged: list[str]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        await client.get("/study")
        token = client.cookies["zipp_csrf"]
        survey = SURVEY | {"age_band": ("25-34", "35-44")[number % 2], "csrf_token": token}
        assert (await client.post("/study", data=survey)).status_code == 303
        page = await client.get("/study/prompts")
        prompts = dict(re.findall(r'name="(prompt_\d+)" value="([^"]*)"', page.text))
        assert (await client.post("/study/prompts", data=prompts | {"csrf_token": token})).status_code == 303
        for index in range(PROMPTS):
            for _ in range(600):  # the worker makes the pairs in the background
                page = await client.get("/study/compare")
                if "Which picture do you prefer?" in page.text:
                    break
                assert "Preparing your pictures" in page.text, page.text[:500]
                await asyncio.sleep(0.1)
            assert (await client.get(f"/study/image/{index}/left")).status_code == 200
            started = time.perf_counter()
            voted = await client.post("/study/vote", data={"choice": ("left", "right")[(number + index) % 2],
                                                           "index": str(index), "csrf_token": token})
            vote_latencies.append(time.perf_counter() - started)
            assert voted.status_code == 303, voted.text[:500]
            acknowledged.append(voted.headers["x-zipp-vote-id"])


async def run_load(url: str) -> tuple[list[float], list[str], float]:
    latencies: list[float] = []
    acknowledged: list[str] = []
    started = time.perf_counter()
    await asyncio.gather(*(participant(url, n, latencies, acknowledged) for n in range(PARTICIPANTS)))
    return latencies, acknowledged, time.perf_counter() - started


@pytest.mark.slow
def test_fifty_participants_vote_at_once_and_a_killed_server_loses_no_acknowledged_vote(data_dir, tmp_path):
    server = StudioServer(data_dir, PROMPTS, tmp_path / "studio.log", UNLIMITED_SESSIONS).start()
    try:
        latencies, acknowledged, seconds = asyncio.run(run_load(server.url))
    finally:
        server.kill()  # at once, whatever the flusher has or has not written yet
    assert len(acknowledged) == len(set(acknowledged)) == PARTICIPANTS * PROMPTS
    restarted = StudioServer(data_dir, PROMPTS, tmp_path / "studio.log").start()  # replays the log before serving
    try:
        stored = [v["vote_id"] for v in read_study_table(data_dir / "lake", VOTES)]
        assert sorted(stored) == sorted(acknowledged)  # every acknowledged vote, each once
        assert len(read_study_table(data_dir / "lake", SESSIONS)) == PARTICIPANTS
    finally:
        restarted.stop()
    assert "Traceback" not in (tmp_path / "studio.log").read_text()
    report = {"participants": PARTICIPANTS, "votes": len(acknowledged), "seconds": round(seconds, 1),
              "vote_p50_ms": round(1000 * statistics.median(latencies), 1),
              "vote_p95_ms": round(1000 * percentile(latencies, 0.95), 1),
              "vote_max_ms": round(1000 * max(latencies), 1), "cpus": os.cpu_count()}
    print(f"\nstudio load test: {json.dumps(report)}")
    if os.environ.get("ZIPP_STUDIO_LOAD_REPORT"):
        with open(os.environ["ZIPP_STUDIO_LOAD_REPORT"], "w") as f:
            json.dump(report, f, indent=2)
