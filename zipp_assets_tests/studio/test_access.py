"""Who may do what in the studio: editor accounts with hashed tokens (and the audit trail naming the
account), participants who see only the study, invitation links on a public studio, rate limits on
sign-in and new sessions, Secure cookies behind TLS, and the Host allow-list from the command line."""

import json
import re
import stat
import threading
import warnings
from datetime import datetime, timedelta, timezone

import pytest

with warnings.catch_warnings():  # starlette 1.x suggests httpx2 for its test client; httpx is what is installed
    warnings.simplefilter("ignore", DeprecationWarning)
    from starlette.testclient import TestClient

from zipp_assets.personas.overrides import read_overrides
from zipp_assets.studio import __main__ as cli
from zipp_assets.studio.access import EditorRegistry, Invitations
from zipp_assets.studio.security import Limit, RateLimiter, client_key
from zipp_assets.studio.study import InvalidInput
from zipp_assets.studio.web import CSRF_COOKIE, EDITOR_COOKIE, STUDY_COOKIE, create_app
from zipp_assets_tests.studio.conftest import (
    EDITOR_TOKEN,
    REFERENCE_KEY,
    USERS,
    StudioServer,
    editor_registry,
    make_studio,
)

SURVEY = {"age_band": "35-44", "gender": "male", "country": "Chile", "profession": "park ranger",
          "hobbies": "hiking", "consent": "yes"}


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def csrf(client) -> str:
    if CSRF_COOKIE not in client.cookies:
        client.get("/study")
    return client.cookies[CSRF_COOKIE]


def post(client, url, data, **kwargs):
    return client.post(url, data=data | {"csrf_token": csrf(client)}, follow_redirects=False, **kwargs)


def public_studio(data_dir, **settings):
    return make_studio(data_dir, hosts=("testserver",), public=True, secure_cookies=True, **settings)


def invitation_links(client, **form) -> list[str]:
    page = post(client, "/invitations", {"count": "1", "uses": "1", "days": "14"} | form)
    assert page.status_code == 200, page.text[:300]
    return re.findall(r"<code>(https://testserver/study\?invite=[A-Za-z0-9_-]+)</code>", page.text)


# --- editor accounts ---------------------------------------------------------------------------


def test_the_editors_command_prints_a_token_once_and_stores_only_its_hash(data_dir, monkeypatch, capsys):
    monkeypatch.setenv("ZIPP_DATA_DIR", str(data_dir))
    assert cli.main(["editors", "add", "Grace Hopper"]) == 0
    token = capsys.readouterr().out.strip()
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token)
    path = data_dir / "studio" / "editors.json"
    stored = path.read_text()
    assert token not in stored and "Grace Hopper" in stored and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [e["name"] for e in json.loads(stored)["editors"]] == ["Grace Hopper"]
    assert cli.main(["editors", "list"]) == 0
    listing = capsys.readouterr().out
    assert "Grace Hopper" in listing and "active" in listing and token not in listing
    assert cli.main(["editors", "add", "grace hopper"]) == 2  # names are unique, whatever the case
    assert cli.main(["editors", "add", "<script>"]) == 2
    assert cli.main(["editors", "revoke", "Nobody"]) == 2
    assert cli.main(["editors", "rotate", "Grace Hopper"]) == 0
    rotated = capsys.readouterr().out.strip()
    registry = EditorRegistry(path)
    assert rotated != token and registry.any_active()
    assert cli.main(["editors", "revoke", "Grace Hopper"]) == 0
    assert not registry.any_active()
    assert cli.main(["editors", "add", "Grace Hopper"]) == 2  # a revoked name is never someone else's
    capsys.readouterr()
    assert cli.main(["editors", "list"]) == 0 and "revoked" in capsys.readouterr().out


def test_the_audit_trail_names_the_account_that_signed_in_and_revoking_it_ends_its_session(data_dir):
    studio = make_studio(data_dir)
    grace = editor_registry(data_dir).add("Grace")
    with TestClient(create_app(studio)) as client:
        # The old sign-in took a self-declared name beside a shared token: there is no such field now.
        assert post(client, "/editor", {"name": "Ada", "token": grace}).status_code == 400
        assert EDITOR_COOKIE not in client.cookies
        assert post(client, "/editor", {"token": grace}).status_code == 303
        assert "editor: Grace" in client.get("/").text
        saved = post(client, f"/personas/{USERS[1]}/edit", {"field": "profession", "value": "baker"})
        assert saved.status_code == 303
        [edit] = read_overrides(studio.lake_dir)
        assert edit["editor"] == "Grace"
        editor_registry(data_dir).revoke("Grace")  # from the command line, while the studio runs
        refused = post(client, f"/personas/{USERS[1]}/edit", {"field": "profession", "value": "cook"})
        assert refused.status_code == 403 and len(read_overrides(studio.lake_dir)) == 1
        assert post(client, "/editor", {"token": grace}).status_code == 403
        assert post(client, "/editor", {"token": EDITOR_TOKEN}).status_code == 303  # Ada is unaffected
        assert post(client, f"/personas/{USERS[1]}/edit", {"field": "profession", "value": "cook"}).status_code == 303
        assert [e["editor"] for e in read_overrides(studio.lake_dir)].count("Ada") == 1


def test_a_rotated_token_stops_working_and_ends_its_sessions(data_dir):
    studio = make_studio(data_dir)
    with TestClient(create_app(studio)) as client:
        assert post(client, "/editor", {"token": EDITOR_TOKEN}).status_code == 303
        assert client.get("/jobs").status_code == 200
        new_token = editor_registry(data_dir).rotate("Ada")
        assert client.get("/jobs").status_code == 403
        assert post(client, "/editor", {"token": EDITOR_TOKEN}).status_code == 403
        assert post(client, "/editor", {"token": new_token}).status_code == 303


def test_editing_is_off_without_accounts_and_says_how_to_add_one(tmp_path):
    from zipp_assets.imaging.resources import ImageGeneratorResource
    from zipp_assets.llm.resources import LLMResource
    from zipp_assets.studio.service import Studio, StudioSettings
    from zipp_assets_tests.studio.conftest import write_minimal_lake

    write_minimal_lake(tmp_path / "data")
    studio = Studio(StudioSettings(tmp_path / "data", allowed_hosts=("testserver",)), LLMResource(),
                    ImageGeneratorResource())
    with TestClient(create_app(studio, start=False)) as client:
        refused = post(client, "/editor", {"token": EDITOR_TOKEN})
        assert refused.status_code == 403 and "editors add NAME" in refused.text


# --- participants see only the study -----------------------------------------------------------


def persona_urls(client) -> list[str]:
    """The persona browser's pages and images, as an editor sees them."""
    page = client.get(f"/personas/{USERS[0]}")
    bench = re.search(r'src="(/images/zipbench/[^"]+)"', page.text).group(1)
    return ["/personas", f"/personas/{USERS[0]}", f"/images/reference/{REFERENCE_KEY}", bench]


def test_a_participant_sees_no_persona_snippet_or_image_even_on_loopback(data_dir):
    studio = make_studio(data_dir)
    with TestClient(create_app(studio)) as editor:
        assert post(editor, "/editor", {"token": EDITOR_TOKEN}).status_code == 303
        urls = persona_urls(editor)
        assert all(editor.get(url).status_code == 200 for url in urls)
        with TestClient(create_app(studio, start=False)) as visitor:  # loopback, no study session: browses
            assert visitor.get(f"/personas/{USERS[0]}").status_code == 200
            assert post(visitor, "/study", SURVEY).status_code == 303 and STUDY_COOKIE in visitor.cookies
            for url in urls:
                assert visitor.get(url).status_code == 403, url
            page = visitor.get("/personas", params={"q": "u_"})
            assert "saw a heron" not in page.text and USERS[0] not in page.text
            assert 'href="/personas"' not in visitor.get("/").text


def test_a_public_studio_shows_personas_to_editors_only(data_dir):
    studio = public_studio(data_dir)
    with TestClient(create_app(studio), base_url="https://testserver") as client:
        for url in ("/personas", f"/personas/{USERS[0]}", f"/images/reference/{REFERENCE_KEY}",
                    f"/images/regenerated/{USERS[0]}/x.png"):
            assert client.get(url).status_code == 403, url
        home = client.get("/").text
        assert 'href="/personas"' not in home and "Persona browser" not in home
        assert post(client, "/editor", {"token": EDITOR_TOKEN}).status_code == 303
        assert all(client.get(url).status_code == 200 for url in persona_urls(client))


# --- invitations -------------------------------------------------------------------------------


def test_a_public_study_starts_only_from_an_open_invitation(data_dir):
    studio = public_studio(data_dir)
    with TestClient(create_app(studio), base_url="https://testserver") as editor:
        assert editor.get("/study").status_code == 403  # by invitation only
        assert post(editor, "/study", SURVEY).status_code == 403 and not studio.store.all_sessions()
        assert post(editor, "/study", SURVEY | {"invite": "A" * 43}).status_code == 403
        assert post(editor, "/invitations", {"count": "1"}).status_code == 403  # editors make links
        assert post(editor, "/editor", {"token": EDITOR_TOKEN}).status_code == 303
        [single] = invitation_links(editor)
        [double] = invitation_links(editor, uses="2")
        [revoked] = invitation_links(editor)
        for bad in ({"uses": "0"}, {"days": "abc"}, {"count": "101"}, {"days": "366"}, {"extra": "1"}):
            assert post(editor, "/invitations", {"count": "1"} | bad).status_code == 400, bad
        listing = editor.get("/invitations").text
        assert single.split("=")[1] not in listing  # shown once, at creation
        stored = (data_dir / "studio" / "invitations.json").read_text()
        assert single.split("=")[1] not in stored and len(json.loads(stored)["invitations"]) == 3
        revoked_id = json.loads(stored)["invitations"][2]["id"]
        assert post(editor, f"/invitations/{revoked_id}/revoke", {}).status_code == 303
        assert post(editor, "/invitations/zzz/revoke", {}).status_code == 400

        def join(link: str) -> int:
            with TestClient(create_app(studio, start=False), base_url="https://testserver") as participant:
                page = participant.get(link.removeprefix("https://testserver"))
                if page.status_code != 200:
                    return page.status_code
                invite = re.search(r'name="invite" value="([^"]+)"', page.text).group(1)
                return post(participant, "/study", SURVEY | {"invite": invite}).status_code

        assert join(single) == 303
        assert join(single) == 403  # used up
        assert join(double) == 303 and join(double) == 303 and join(double) == 403
        assert join(revoked) == 403
        assert len(studio.store.all_sessions()) == 3
        states = {i["state"] for i in studio.invitations.listed()}
        assert states == {"used up", "revoked"}


def test_an_invitation_expires_and_its_last_use_goes_to_one_participant(tmp_path):
    now = datetime(2026, 12, 1, tzinfo=timezone.utc)
    book = Invitations(tmp_path / "invitations.json", now=lambda: now)
    [token] = book.create("Ada", uses=1, days=2)
    book.check(token)
    later = Invitations(tmp_path / "invitations.json", now=lambda: now + timedelta(days=2, seconds=1))
    with pytest.raises(InvalidInput, match="expired"):
        later.redeem(token)
    winners, losers = [], []

    def redeem():
        try:
            winners.append(Invitations(tmp_path / "invitations.json", now=lambda: now).redeem(token))
        except InvalidInput:
            losers.append(1)

    threads = [threading.Thread(target=redeem) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1 and len(losers) == 7
    for bad in ("", "x", "A" * 43, None):
        with pytest.raises(InvalidInput, match="not a valid invitation"):
            book.check(bad)


# --- rate limits -------------------------------------------------------------------------------


def test_after_n_wrong_tokens_the_right_one_is_refused_until_the_window_passes(data_dir):
    studio = make_studio(data_dir, sign_in_limit=Limit(per_client=3, overall=100, window_s=60))
    clock = studio.sign_in_limiter.clock = Clock()
    with TestClient(create_app(studio)) as client:
        for _ in range(3):
            assert post(client, "/editor", {"token": "wrong-token-" + "x" * 20}).status_code == 403
        refused = post(client, "/editor", {"token": EDITOR_TOKEN})
        assert refused.status_code == 429 and EDITOR_COOKIE not in client.cookies
        assert refused.headers["retry-after"] == "60" and "Too many wrong editor tokens" in refused.text
        clock.now += 59
        assert post(client, "/editor", {"token": EDITOR_TOKEN}).status_code == 429
        with TestClient(create_app(studio, start=False), client=("203.0.113.9", 5000)) as elsewhere:
            assert post(elsewhere, "/editor", {"token": EDITOR_TOKEN}).status_code == 303  # per address
        clock.now += 1
        assert post(client, "/editor", {"token": EDITOR_TOKEN}).status_code == 303


def test_wrong_tokens_from_many_addresses_meet_the_overall_limit(data_dir):
    studio = make_studio(data_dir, sign_in_limit=Limit(per_client=2, overall=3, window_s=60))
    studio.sign_in_limiter.clock = Clock()
    with TestClient(create_app(studio)):
        for i in range(3):
            with TestClient(create_app(studio, start=False), client=(f"198.51.100.{i}", 5000)) as client:
                assert post(client, "/editor", {"token": "wrong-token-" + "x" * 20}).status_code == 403
        with TestClient(create_app(studio, start=False), client=("198.51.100.99", 5000)) as client:
            assert post(client, "/editor", {"token": EDITOR_TOKEN}).status_code == 429


def test_new_study_sessions_are_limited_per_address_and_in_all(data_dir):
    studio = make_studio(data_dir, session_limit=Limit(per_client=2, overall=3, window_s=3600))
    clock = studio.session_limiter.clock = Clock()

    def start(address: str) -> int:
        with TestClient(create_app(studio, start=False), client=(address, 5000)) as participant:
            return post(participant, "/study", SURVEY).status_code

    with TestClient(create_app(studio)):
        assert [start("192.0.2.1") for _ in range(3)] == [303, 303, 429]
        assert start("192.0.2.2") == 303
        assert start("192.0.2.3") == 429  # three in all within the hour
        assert len(studio.store.all_sessions()) == 3
        clock.now += 3600
        assert start("192.0.2.3") == 303


def test_guessed_invitation_links_count_against_the_session_limit(data_dir):
    studio = public_studio(data_dir, session_limit=Limit(per_client=3, overall=100, window_s=3600))
    studio.session_limiter.clock = Clock()
    with TestClient(create_app(studio), base_url="https://testserver") as client:
        assert post(client, "/editor", {"token": EDITOR_TOKEN}).status_code == 303
        [link] = invitation_links(client)
        for i in range(3):
            assert client.get(f"/study?invite={'G' * 42}{i}").status_code == 403
        assert client.get(link.removeprefix("https://testserver")).status_code == 429


def test_the_rate_limiter_slides_and_keys_ipv6_by_its_64():
    clock = Clock()
    limiter = RateLimiter(Limit(per_client=2, overall=3, window_s=10), clock)
    assert limiter.take("a") == 0 and limiter.take("a") == 0 and limiter.take("a") == 10
    clock.now += 4
    assert limiter.take("b") == 0 and limiter.take("c") == 6  # three in all; the first expires in 6 s
    clock.now += 6  # the first two have left the window
    assert limiter.take("a") == 0 and limiter.take("a") == 0
    assert limiter.blocked_for("a") == 10 and limiter.blocked_for("d") == 4  # per address; in all (b's at 4 s)
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7" and client_key(None) == "unknown"
    for bad in ("1/1", "0/5/10", "5/2/10", "a/b/c", "5/50/0"):
        with pytest.raises(ValueError):
            Limit.parse(bad)


# --- Secure cookies and the Host allow-list ----------------------------------------------------


def test_cookies_are_secure_behind_tls_and_not_on_plain_loopback(data_dir):
    with TestClient(create_app(public_studio(data_dir), start=False), base_url="https://testserver") as client:
        page = client.get("/study?invite=" + "A" * 43)
        cookie = page.headers["set-cookie"].lower()
        assert "secure" in cookie and "httponly" in cookie and "samesite=strict" in cookie
        assert page.headers["strict-transport-security"] == "max-age=31536000"
    loopback = make_studio(data_dir)
    with TestClient(create_app(loopback, start=False), base_url="https://127.0.0.1") as client:
        assert "secure" in client.get("/").headers["set-cookie"].lower()  # served over https directly
    with TestClient(create_app(loopback, start=False)) as client:
        page = client.get("/")
        assert "secure" not in page.headers["set-cookie"].lower() and "strict-transport-security" not in page.headers


@pytest.mark.slow
def test_behind_a_tls_proxy_a_real_server_counts_the_forwarded_address_and_sets_secure_cookies(data_dir, tmp_path):
    """uvicorn itself, as `python -m zipp_assets.studio` starts it: the proxy's X-Forwarded-For (trusted from
    127.0.0.1) is the address the sign-in limit counts; only the configured Host is served."""
    import httpx

    args = ("--public", "--behind-tls-proxy", "--allowed-host", "studio.example.org", "--sign-in-limit", "2/100/600")
    server = StudioServer(data_dir, 3, tmp_path / "studio.log", args, host_header="studio.example.org").start()
    try:
        with httpx.Client(base_url=server.url, headers={"host": "studio.example.org", "x-forwarded-proto": "https"},
                          timeout=30) as client:
            assert client.get("/", headers={"host": "localhost"}).status_code == 400
            assert client.get("/", headers={"host": "127.0.0.1"}).status_code == 400
            page = client.get("/editor")
            assert page.status_code == 200 and page.headers["strict-transport-security"]
            assert "secure" in page.headers["set-cookie"].lower()
            token = re.search(r"zipp_csrf=([A-Za-z0-9_-]+)", page.headers["set-cookie"]).group(1)

            def sign_in(secret: str, address: str) -> int:
                return client.post("/editor", data={"token": secret, "csrf_token": token}, headers={
                    "cookie": f"zipp_csrf={token}", "x-forwarded-for": address}).status_code

            assert [sign_in("wrong-token-" + "x" * 20, "203.0.113.1") for _ in range(2)] == [403, 403]
            assert sign_in(EDITOR_TOKEN, "203.0.113.1") == 429
            assert sign_in(EDITOR_TOKEN, "203.0.113.2") == 303  # another client behind the same proxy
    finally:
        server.stop()
    assert "Traceback" not in (tmp_path / "studio.log").read_text()


def serve_with(argv, data_dir, monkeypatch):
    """`python -m zipp_assets.studio ARGV` up to uvicorn: (exit code, the app and uvicorn's arguments)."""
    import uvicorn

    served = {}
    monkeypatch.setenv("ZIPP_DATA_DIR", str(data_dir))
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: served.update(app=app, **kwargs))
    return cli.main(argv), served


def test_a_public_studio_bound_to_every_address_accepts_only_the_configured_host(data_dir, monkeypatch):
    code, served = serve_with(["--host", "0.0.0.0", "--public", "--allowed-host", "studio.example.org",
                               "--behind-tls-proxy"], data_dir, monkeypatch)
    assert code == 0 and served["host"] == "0.0.0.0"
    assert served["proxy_headers"] is True and served["forwarded_allow_ips"] == "127.0.0.1"
    studio = served["app"].state.studio
    assert studio.settings.public and studio.settings.secure_cookies
    assert studio.settings.allowed_hosts == ("studio.example.org",)
    with TestClient(served["app"], base_url="https://studio.example.org") as client:
        for host in ("localhost", "127.0.0.1", "0.0.0.0", "evil.example"):
            assert client.get("/study", headers={"host": host}).status_code == 400, host
        page = client.get("/study")
        assert page.status_code == 403 and "by invitation" in page.text  # the right host
        assert "secure" in page.headers["set-cookie"].lower()


def test_unsafe_command_lines_are_refused(data_dir, monkeypatch, capsys):
    for argv, says in ((["--host", "0.0.0.0"], "--public"),
                       (["--host", "0.0.0.0", "--public", "--behind-tls-proxy"], "--allowed-host"),
                       (["--public", "--allowed-host", "studio.example.org"], "TLS"),
                       (["--public", "--allowed-host", "*", "--behind-tls-proxy"], "wildcard"),
                       (["--public", "--allowed-host", "studio.example.org:443", "--behind-tls-proxy"], "port"),
                       (["--public", "--allowed-host", "a.org", "--ssl-certfile", "cert.pem"], "go together")):
        code, served = serve_with(argv, data_dir, monkeypatch)
        assert code == 2 and not served and says in capsys.readouterr().err, argv
    code, served = serve_with(["--allowed-host", "tunnel.internal"], data_dir, monkeypatch)
    assert code == 0 and served["proxy_headers"] is False and "ssl_certfile" not in served
    assert served["app"].state.studio.settings.allowed_hosts == ("127.0.0.1", "localhost", "tunnel.internal")
    assert not served["app"].state.studio.settings.public
