"""The studio over HTTP (Starlette's test client, the real app and worker): browsing, editing with the
audit trail, regeneration as background work, the study from survey to results, and the guards."""

import re
import warnings

import pytest

with warnings.catch_warnings():  # starlette 1.x suggests httpx2 for its test client; httpx is what is installed
    warnings.simplefilter("ignore", DeprecationWarning)
    from starlette.testclient import TestClient

from zipp_assets.personas.overrides import read_overrides
from zipp_assets.studio.storage import VOTES, read_study_table
from zipp_assets.studio.web import CSRF_COOKIE, STUDY_COOKIE, create_app
from zipp_assets_tests.studio.conftest import EDITOR_TOKEN, HOSTILE, REFERENCE_KEY, USERS, make_studio


@pytest.fixture
def studio(data_dir):
    return make_studio(data_dir)


@pytest.fixture
def client(studio):
    with TestClient(create_app(studio)) as client:
        yield client


def csrf(client) -> str:
    if CSRF_COOKIE not in client.cookies:
        client.get("/")
    return client.cookies[CSRF_COOKIE]


def post(client, url, data, **kwargs):
    return client.post(url, data=data | {"csrf_token": csrf(client)}, **kwargs)


def sign_in(client):
    response = post(client, "/editor", {"token": EDITOR_TOKEN}, follow_redirects=False)
    assert response.status_code == 303


def test_browser_finds_users_and_shows_evidence_images_escaped(client):
    page = client.get("/personas", params={"q": USERS[0]})
    assert page.status_code == 200 and USERS[0] in page.text and USERS[1] not in page.text
    listing = client.get("/personas", params={"q": "u_"}).text
    assert "3 matching users" in listing and HOSTILE not in listing and "&lt;script&gt;" in listing  # a summary's markup
    assert client.get("/personas", params={"q": "<script>"}).status_code == 400
    assert client.get("/personas", params={"shard": "999"}).status_code == 400
    page = client.get(f"/personas/{USERS[0]}")
    assert page.status_code == 200
    assert HOSTILE not in page.text and "<script>" not in page.text and "onerror=alert" not in page.text.replace(
        "&lt;img src=x onerror=alert(1)&gt;", "")  # the persona's and the snippet's markup arrive as text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page.text
    assert "r/birding" in page.text and "0.750" in page.text and "saw a heron today" in page.text
    assert f"/images/reference/{REFERENCE_KEY}" in page.text and "a fox in the snow" in page.text
    image = client.get(f"/images/reference/{REFERENCE_KEY}")
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    bench = re.search(r'src="(/images/zipbench/[^"]+)"', page.text).group(1)
    assert client.get(bench).headers["content-type"] == "image/png"
    for bad in ("/images/zipbench/generic/000/..%2F..%2Flake.png", "/images/reference/..%2F..%2Fetc",
                "/images/zipbench/nope/000/a.png", "/personas/u_nobody", "/personas/..%2Fetc"):
        assert client.get(bad).status_code == 404, bad
    headers = page.headers
    assert "script-src" not in headers["content-security-policy"] and "default-src 'none'" in headers[
        "content-security-policy"]
    assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff"


def test_editing_needs_an_editor_a_csrf_token_and_valid_values_and_leaves_an_audit_trail(client, studio):
    url = f"/personas/{USERS[1]}/edit"
    assert post(client, url, {"field": "profession", "value": "baker"}).status_code == 403  # not signed in
    refused = post(client, "/editor", {"token": "not-the-token-at-all"})
    assert refused.status_code == 403 and "not the editor token" in refused.text
    sign_in(client)
    assert client.post(url, data={"field": "profession", "value": "baker"}).status_code == 403  # no CSRF token
    assert client.post(url, data={"field": "profession", "value": "baker", "csrf_token": "x" * 43}).status_code == 403
    bad = post(client, url, {"field": "gender", "value": "robot"})
    assert bad.status_code == 400 and "Input should be" in bad.text
    assert post(client, url, {"field": "profession", "value": "baker", "extra": "1"}).status_code == 400
    saved = post(client, url, {"field": "profession", "value": "<b>baker</b>"}, follow_redirects=False)
    assert saved.status_code == 303
    [edit] = read_overrides(studio.lake_dir)
    assert (edit["user_id"], edit["field"], edit["editor"]) == (USERS[1], "profession", "Ada")
    assert edit["old_value_json"] == '"nurse"' and edit["value_json"] == '"<b>baker</b>"'
    page = client.get(f"/personas/{USERS[1]}")
    assert "&lt;b&gt;baker&lt;/b&gt;" in page.text and "<b>baker</b>" not in page.text
    audit = client.get("/audit")
    assert audit.status_code == 200 and USERS[1] in audit.text and "Ada" in audit.text and "&#34;nurse&#34;" in audit.text


def test_regeneration_is_queued_and_uses_the_edited_persona(client, studio):
    sign_in(client)
    post(client, f"/personas/{USERS[0]}/edit", {"field": "aesthetics",
                                                "value": '{"palette": ["crimson"], "lighting": ["night"]}'})
    queued = post(client, f"/personas/{USERS[0]}/regenerate", {"prompt_id": "animal-1", "method": "zipp_0shot"},
                  follow_redirects=False)
    assert queued.status_code == 303 and queued.headers["location"].startswith("/jobs/")
    assert studio.jobs.wait_idle(30)
    job = client.get(queued.headers["location"])
    assert "done" in job.text and "crimson" in job.text  # the rewrite read the edited persona
    image = re.search(r'src="(/images/regenerated/[^"]+)"', job.text).group(1)
    assert client.get(image).headers["content-type"] == "image/png"
    assert "crimson" in client.get(f"/personas/{USERS[0]}").text
    assert post(client, f"/personas/{USERS[0]}/regenerate", {"prompt_id": "nope", "method": "zipp_0shot"}).status_code == 400
    assert post(client, f"/personas/{USERS[0]}/regenerate", {"prompt_id": "animal-1", "method": "generic"}).status_code == 400
    assert client.get("/jobs").status_code == 200


SURVEY = {"age_band": "35-44", "gender": "male", "country": "Chile", "profession": "park ranger",
          "hobbies": "hiking, wildlife photography", "consent": "yes"}


def take_part(client, studio, choices=("left", "right", "left")) -> list[str]:
    started = post(client, "/study", SURVEY, follow_redirects=False)
    assert started.status_code == 303 and STUDY_COOKIE in client.cookies
    page = client.get("/study/prompts")
    prompts = dict(re.findall(r'name="(prompt_\d+)" value="([^"]*)"', page.text))
    assert len(prompts) == 3
    prompts["prompt_2"] = "my own <i>prompt</i>"
    assert post(client, "/study/prompts", prompts, follow_redirects=False).status_code == 303
    assert studio.jobs.wait_idle(30)
    acknowledged = []
    for i, choice in enumerate(choices):
        page = client.get("/study/compare")
        assert f"Pair {i + 1} of 3" in page.text
        assert "zipp_0shot" not in page.text and "generic" not in page.text  # methods hidden
        assert client.get(f"/study/image/{i}/left").headers["content-type"] == "image/png"
        voted = post(client, "/study/vote", {"choice": choice, "index": str(i)}, follow_redirects=False)
        assert voted.status_code == 303
        acknowledged.append(voted.headers["x-zipp-vote-id"])
    return acknowledged


def test_the_study_from_survey_to_results(client, studio):
    assert post(client, "/study", SURVEY | {"consent": ""}).status_code == 400
    assert post(client, "/study", SURVEY | {"favourite_colour": "teal"}).status_code == 400
    acknowledged = take_part(client, studio)
    again = post(client, "/study/vote", {"choice": "left", "index": "2"}, follow_redirects=False)
    assert again.status_code == 303 and "x-zipp-vote-id" not in again.headers  # a resent vote is not a new one
    done = client.get("/study/done")
    assert "You made 3 choices" in done.text and "nature, wildlife and animals" in done.text
    session = studio.session_of(client.cookies[STUDY_COOKIE])
    votes = studio.store.votes_of(session["session_id"])
    assert [v["vote_id"] for v in votes] == acknowledged and [v["choice"] for v in votes] == ["left", "right", "left"]
    assert all(v["left_method"] != v["right_method"] and v["time_taken_ms"] >= 0 for v in votes)
    assert {v["seed"] for v in votes} and session["persona_json"] and "park ranger" in session["persona_json"]
    # Another participant sees only their own session; no cookie, no images.
    with TestClient(create_app(studio, start=False)) as other:
        assert other.get("/study/image/0/left").status_code == 404
        other.cookies.set(STUDY_COOKIE, "forged-" + "A" * 40)
        assert other.get("/study/image/0/left").status_code == 404
        assert other.get("/results").status_code == 403  # results are for editors
    sign_in(client)
    results = client.get("/results")
    assert results.status_code == 200 and "zipp_0shot vs generic" in results.text and "Chile" in results.text
    studio.store.flush()
    assert len(read_study_table(studio.lake_dir, VOTES)) == 3


def test_guards_host_origin_and_oversized_forms(client):
    assert client.get("/", headers={"host": "evil.example"}).status_code == 400  # DNS rebinding
    token = csrf(client)
    cross = client.post("/study", data=SURVEY | {"csrf_token": token}, headers={"origin": "http://evil.example"})
    assert cross.status_code == 403
    huge = client.post("/study", content=b"a=" + b"x" * 40_000,
                       headers={"content-type": "application/x-www-form-urlencoded"})
    assert huge.status_code == 413
    assert client.post("/study", content=b"{}", headers={"content-type": "application/json"}).status_code == 415
    cookie = client.get("/").headers.get("set-cookie") or ""
    fresh = TestClient(client.app).get("/").headers["set-cookie"].lower()
    assert "httponly" in fresh and "samesite=strict" in fresh and cookie == ""


def test_an_unreadable_lake_is_a_page_that_says_so(studio, monkeypatch):
    from zipp_assets.studio import browse

    def legacy(*args, **kwargs):
        raise RuntimeError("/lake/personas holds Parquet files but no Delta log\nsecond line")

    monkeypatch.setattr(browse, "search_personas", legacy)
    with TestClient(create_app(studio), raise_server_exceptions=False) as client:
        page = client.get("/personas")
    assert page.status_code == 500 and "no Delta log" in page.text and "second line" not in page.text
    assert page.headers["content-type"].startswith("text/html")
