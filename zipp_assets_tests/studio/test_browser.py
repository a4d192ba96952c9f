"""End to end in a real browser: headless Chromium (the Debian package) driven over the DevTools protocol
against a real studio server. A participant fills the survey, keeps or types prompts and makes three
comparisons; an editor signs in, edits a persona field, regenerates a prompt, and checks the results
table and the audit trail. Then `human_study_results` is materialized from the votes the browser made.

Screenshots of every page go to the test's folder, and to ZIPP_STUDIO_SCREENSHOTS if set
(`ZIPP_STUDIO_SCREENSHOTS=docs/studio` refreshes README's). Skipped, saying how to install it, where
Chromium is missing.
"""

import asyncio
import os
import shutil
import time
from pathlib import Path

import dagster as dg
import pytest

from zipp_assets import lake
from zipp_assets.personas.overrides import read_overrides
from zipp_assets.resources import ZippLake
from zipp_assets.studio.assets import RESULTS, human_study_votes_sensor, studio_assets
from zipp_assets.studio.storage import VOTES, read_study_table
from zipp_assets_tests.studio.cdp import INSTALL_HINT, Chromium, Page, find_chromium
from zipp_assets_tests.studio.conftest import EDITOR_TOKEN, USERS, StudioServer

CHROMIUM = find_chromium()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(CHROMIUM is None, reason=INSTALL_HINT)]


async def drive(url: str, page: Page, shots: Path) -> dict:
    seen = {}
    await page.goto(f"{url}/")
    await page.screenshot(shots / "home.png")

    # --- a participant ---
    await page.goto(f"{url}/study")
    await page.fill("select[name=age_band]", "35-44")
    await page.fill("select[name=gender]", "female")
    await page.fill("input[name=country]", "Chile")
    await page.fill("input[name=profession]", "park ranger")
    await page.fill("input[name=hobbies]", "hiking, wildlife photography")
    await page.screenshot(shots / "study-survey.png")
    await page.click_and_wait("form.survey button[type=submit]", "true")
    assert await page.path() == "/study", "the survey went through without consent"  # the browser's `required`
    assert "consent" in await page.text()
    await page.fill("input[name=consent]", "yes")
    await page.click_and_wait("form.survey button[type=submit]", "location.pathname === '/study/prompts'")
    await page.fill("input[name=prompt_2]", "a lighthouse on a <b>stormy</b> night")
    await page.screenshot(shots / "study-prompts.png")
    await page.click_and_wait("form.prompts button[type=submit]", "location.pathname === '/study/compare'")
    for index, side in enumerate(("left", "right", "left")):
        await page.wait_for("document.body.innerText.includes('Which picture do you prefer?')", 60)
        text = await page.text()
        assert f"Pair {index + 1} of 3" in text and "zipp_0shot" not in text and "generic" not in text
        await page.wait_for("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
        if index == 2:
            assert "<b>stormy</b>" in text  # the participant's markup shown as text
        if index == 0:
            await page.screenshot(shots / "study-compare.png")
        await page.click_and_wait(f"#pick-{side}",
                                  f"location.pathname !== '/study/compare' || !document.body.innerText.includes("
                                  f"'Pair {index + 1} of 3')")
    assert await page.path() == "/study/done"
    seen["done"] = await page.text()
    await page.screenshot(shots / "study-done.png")

    # --- an editor ---
    await page.goto(f"{url}/editor")
    await page.fill("input[name=token]", EDITOR_TOKEN)
    await page.screenshot(shots / "editor-sign-in.png")
    await page.click_and_wait("form[action='/editor'] button", "location.pathname === '/personas'")
    await page.goto(f"{url}/personas?q=u_&shard=")
    await page.screenshot(shots / "personas.png")
    await page.click_and_wait(f"a[href='/personas/{USERS[0]}']", f"location.pathname === '/personas/{USERS[0]}'")
    await page.fill("form.edit input[name=field][value=profession] ~ input[name=value]", "lighthouse keeper")
    await page.click_and_wait("form.edit:has(input[value=profession]) button", "location.search.includes('saved')")
    seen["persona"] = await page.text()
    await page.click_and_wait("form.regen button", "location.pathname.startsWith('/jobs/')")
    await page.wait_for("document.body.innerText.includes('Status: done')", 60)
    await page.wait_for("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
    seen["job"] = await page.text()
    await page.screenshot(shots / "regeneration-job.png")
    await page.goto(f"{url}/personas/{USERS[0]}")
    await page.screenshot(shots / "persona.png")
    await page.goto(f"{url}/results")
    seen["results"] = await page.text()
    await page.screenshot(shots / "results.png")
    await page.goto(f"{url}/audit")
    seen["audit"] = await page.text()
    await page.screenshot(shots / "audit.png")
    return seen


def test_a_participant_and_an_editor_in_a_real_browser(data_dir, tmp_path):
    server = StudioServer(data_dir, prompts=3, log_path=tmp_path / "studio.log").start()
    browser = Chromium(CHROMIUM, tmp_path / "chromium-profile")
    shots = tmp_path / "screenshots"
    try:
        websocket = browser.start()

        async def session():
            async with Page(websocket) as page:
                return await drive(server.url, page, shots)

        seen = asyncio.run(session())
        deadline = time.time() + 30
        while len(read_study_table(data_dir / "lake", VOTES)) < 3 and time.time() < deadline:
            time.sleep(0.2)  # the flusher writes within its interval
    finally:
        browser.stop()
        server.stop()
    assert "You made 3 choices" in seen["done"]
    assert "Edit saved." in seen["persona"] and "lighthouse keeper" in seen["persona"]
    assert "Status: done" in seen["job"] and "seed 7" in seen["job"] and "teal" in seen["job"]  # the persona's look
    results = seen["results"]
    assert "zipp_0shot vs generic" in results and "Chile" in results and "35-44" in results
    assert "lighthouse keeper" in seen["audit"] and "Ada" in seen["audit"] and '"nurse"' in seen["audit"]
    [edit] = read_overrides(data_dir / "lake")
    assert (edit["field"], edit["editor"], edit["old_value_json"]) == ("profession", "Ada", '"nurse"')
    votes = read_study_table(data_dir / "lake", VOTES)
    assert [v["choice"] for v in sorted(votes, key=lambda v: v["comparison_index"])] == ["left", "right", "left"]
    assert all(v["time_taken_ms"] >= 0 and {v["left_method"], v["right_method"]} == {"zipp_0shot", "generic"}
               for v in votes)
    assert sorted(p.name for p in shots.glob("*.png")) == sorted([
        "home.png", "study-survey.png", "study-prompts.png", "study-compare.png", "study-done.png",
        "editor-sign-in.png", "personas.png", "regeneration-job.png", "persona.png", "results.png", "audit.png"])

    # The results asset, from exactly the votes the browser made; the sensor asks for it.
    resources = {"lake": ZippLake(data_dir=str(data_dir))}
    with dg.build_sensor_context(resources=resources) as context:
        assert isinstance(human_study_votes_sensor(context), dg.RunRequest)
    result = dg.materialize(studio_assets, resources=resources, selection=[RESULTS],
                            instance=dg.DagsterInstance.ephemeral())
    assert result.success
    metadata = result.get_asset_materialization_events()[0].event_specific_data.materialization.metadata
    assert metadata["votes"].value == 3 and metadata["participants"].value == 1
    rows = lake.read_table(data_dir / "lake", RESULTS).to_pylist()
    overall = next(r for r in rows if r["breakdown"] == "all")
    assert overall["votes"] == 3 and overall["zipp_wins"] == sum(v["zipp_won"] for v in votes)
    assert {(r["breakdown"], r["level"]) for r in rows} >= {("age_band", "35-44"), ("gender", "female"),
                                                             ("country", "Chile")}
    if os.environ.get("ZIPP_STUDIO_SCREENSHOTS"):
        target = Path(os.environ["ZIPP_STUDIO_SCREENSHOTS"])
        target.mkdir(parents=True, exist_ok=True)
        for shot in shots.glob("*.png"):
            shutil.copy(shot, target / shot.name)
