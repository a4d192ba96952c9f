"""The studio's web layer (Starlette): routes that parse a request, call the `Studio`, render a page.

Server-rendered HTML from Jinja2 templates with autoescaping on, so every piece of untrusted text
(Reddit snippets, model output, participant input) is escaped. No JavaScript. Guards on every
request: a Host allow-list (loopback by default, against DNS rebinding), strict security headers
(a CSP that allows no script; HSTS behind TLS), forms only through `read_form` (size and field limits,
CSRF, Origin), and cookies that are HttpOnly, SameSite=Strict and, behind TLS, Secure.

Who sees what: editors (per-person accounts, `access`) everything; a browser holding a study session
only the study; anyone else the persona browser on loopback, and only the study (from an invitation
link) when the studio is public. Wrong editor tokens and new study sessions are rate limited.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from pathlib import Path
from urllib.parse import urlsplit

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from zipp_assets.llm.types import sniff_image_type
from zipp_assets.personas.schema import EDITABLE_FIELDS
from zipp_assets.personas.shards import SHARD_KEYS
from zipp_assets.studio import browse
from zipp_assets.studio.jobs import QueueFull
from zipp_assets.studio.security import (
    MAX_FORM_BYTES,
    FormRefused,
    client_key,
    csrf_ok,
    field_as_text,
    field_help,
    looks_like_token,
    new_token,
    parse_form,
)
from zipp_assets.studio.service import REGENERATION_METHODS, Studio
from zipp_assets.studio.study import (
    AGE_CHOICES,
    GENDER_CHOICES,
    InvalidInput,
    parse_prompts,
    parse_survey,
    prompt_field,
)
from zipp_assets.zipbench.rewrite import METHODS

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
CSRF_COOKIE, STUDY_COOKIE, EDITOR_COOKIE = "zipp_csrf", "zipp_study", "zipp_editor"
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; img-src 'self'; style-src 'self'; form-action 'self'; "
                                 b"frame-ancestors 'none'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]
HSTS = (b"strict-transport-security", b"max-age=31536000")
_JOB_ID = re.compile(r"^[0-9a-f]{16}$")
_INVITATION_ID = re.compile(r"^[0-9a-f]{12}$")


class SecurityHeaders:
    """Adds `SECURITY_HEADERS` (and HSTS with `hsts`) to every HTTP response (a plain ASGI middleware, no
    buffering)."""

    def __init__(self, app, hsts: bool = False):
        self.app = app
        self.headers = SECURITY_HEADERS + ([HSTS] if hsts else [])

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (k, v) for k, v in self.headers if k not in names]
            await send(message)

        await self.app(scope, receive, send_with_headers)


templates = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                               undefined=jinja2.StrictUndefined)
templates.filters["pct"] = lambda v: "-" if v is None else f"{100 * v:.1f}%"
templates.filters["num"] = lambda v, d=3: "-" if v is None else f"{v:.{d}f}"


def _secure(request: Request) -> bool:
    return request.app.state.studio.settings.secure_cookies or request.url.scheme == "https"


def _set_cookie(request: Request, response: Response, name: str, value: str, max_age: int | None = None) -> None:
    response.set_cookie(name, value, max_age=max_age, httponly=True, samesite="strict", path="/",
                        secure=_secure(request))


def render(request: Request, template: str, status: int = 200, **context) -> HTMLResponse:
    """A page; it also hands the browser a CSRF cookie on its first visit."""
    studio: Studio = request.app.state.studio
    csrf = request.cookies.get(CSRF_COOKIE)
    fresh = not looks_like_token(csrf)
    if fresh:
        csrf = new_token()
    html = templates.get_template(template).render(
        csrf_token=csrf, editor=_editor(request), editing_enabled=studio.editors.enabled,
        may_browse=_may_browse(request), public=studio.settings.public, **context)
    response = HTMLResponse(html, status_code=status)
    if fresh:
        _set_cookie(request, response, CSRF_COOKIE, csrf)
    return response


def error_page(request: Request, status: int, message: str, errors: dict | None = None) -> HTMLResponse:
    return render(request, "error.html", status=status, message=message, errors=errors or {})


async def read_form(request: Request) -> dict[str, str]:
    """The request's form after every check: size, type, fields, CSRF token and Origin. FormRefused if not."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_FORM_BYTES):
        raise FormRefused(f"the form is larger than {MAX_FORM_BYTES} bytes", 413)
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise FormRefused(f"the form is larger than {MAX_FORM_BYTES} bytes", 413)
    origin = request.headers.get("origin")
    if origin is not None and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
        raise FormRefused("the form was sent from another site", 403)
    form = parse_form(body, request.headers.get("content-type"))
    if not csrf_ok(form, request.cookies.get(CSRF_COOKIE)):
        raise FormRefused("the form's security token is missing or stale: reload the page and send it again", 403)
    return form


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _editor(request: Request) -> str | None:
    return request.app.state.studio.editors.editor(request.cookies.get(EDITOR_COOKIE))


def _need_editor(request: Request) -> HTMLResponse | None:
    """None for a signed-in editor, else the page that says how to sign in."""
    if _editor(request) is None:
        studio: Studio = request.app.state.studio
        message = "Sign in as an editor first." if studio.editors.enabled else studio.editors.why_disabled
        return error_page(request, 403, message)
    return None


def _may_browse(request: Request) -> bool:
    """Whether this browser may see personas, their evidence and images: an editor always; a participant
    (a study session cookie) never; anyone else only on a studio that is not public."""
    if _editor(request) is not None:
        return True
    return not request.app.state.studio.settings.public and _participant(request) is None


def _need_browser(request: Request) -> Response | None:
    """None where `_may_browse`, else a refusal (the study is all a participant or, when public, a visitor sees)."""
    if _may_browse(request):
        return None
    return error_page(request, 403, "The persona browser is for the researchers: sign in as an editor.")


def _client(request: Request) -> str:
    return client_key(request.client.host if request.client else None)


def too_many(request: Request, wait_s: float, what: str) -> HTMLResponse:
    minutes = max(1, round(wait_s / 60))
    response = error_page(request, 429, f"{what}: try again in about {minutes} minute{'s' if minutes > 1 else ''}.")
    response.headers["retry-after"] = str(max(1, int(wait_s + 0.999)))
    return response


# --- pages -------------------------------------------------------------------------------------


async def home(request: Request) -> Response:
    studio: Studio = request.app.state.studio
    return render(request, "home.html", study=studio.settings.study,
                  generator=studio.models.image_generator.description, llm=studio.models.llm_resource.description)


async def personas_page(request: Request) -> Response:
    refused = _need_browser(request)
    if refused:
        return refused
    studio: Studio = request.app.state.studio
    query, shard = request.query_params.get("q", "").strip(), request.query_params.get("shard", "")
    try:
        rows, matched = await run_in_threadpool(browse.search_personas, studio.lake_dir, query, shard)
    except ValueError as error:
        return render(request, "personas.html", status=400, rows=[], matched=0, query="", shard="",
                      shards=SHARD_KEYS, error=str(error))
    return render(request, "personas.html", rows=rows, matched=matched, query=query, shard=shard, shards=SHARD_KEYS,
                  error=None)


async def persona_page(request: Request, errors: dict | None = None, status: int = 200,
                       notice: str | None = None) -> Response:
    refused = _need_browser(request)
    if refused:
        return refused
    studio: Studio = request.app.state.studio
    user_id = request.path_params["user_id"]
    try:
        detail = await run_in_threadpool(browse.persona_detail, studio.lake_dir, studio.settings.data_dir, user_id)
    except ValueError:
        detail = None
    if detail is None:
        return error_page(request, 404, "No persona for that pseudonym.")
    persona = detail["persona"] or {}
    fields = [{"name": f, "value": field_as_text(persona, f), "help": field_help(f)} for f in EDITABLE_FIELDS]
    return render(request, "persona.html", status=status, d=detail, fields=fields, errors=errors or {},
                  methods=REGENERATION_METHODS, notice=notice or request.query_params.get("notice", "")[:100])


async def _persona_action(request: Request, fields: set[str], action) -> Response:
    """An editor's form about one persona: the guards and the error pages `persona_edit` and
    `persona_regenerate` share. `action(studio, user_id, form, editor)` runs in a thread and returns
    the URL to go to."""
    studio: Studio = request.app.state.studio
    form = await read_form(request)
    editor = _editor(request)
    if editor is None:
        return _need_editor(request)
    user_id = request.path_params["user_id"]
    try:
        if set(form) - fields - {"csrf_token"}:
            raise InvalidInput({"form": "unexpected fields"})
        return see_other(await run_in_threadpool(action, studio, user_id, form, editor))
    except InvalidInput as error:
        return await persona_page(request, errors=error.errors, status=400)
    except ValueError:
        return error_page(request, 404, "No persona for that pseudonym.")
    except QueueFull as error:
        return error_page(request, 503, str(error))


def _edit(studio: Studio, user_id: str, form: dict, editor: str) -> str:
    studio.edit(user_id, form.get("field", ""), form.get("value", ""), editor)
    return f"/personas/{user_id}?notice=saved"


def _regenerate(studio: Studio, user_id: str, form: dict, editor: str) -> str:
    job = studio.queue_regeneration(user_id, form.get("prompt_id", ""), form.get("method", ""), editor)
    return f"/jobs/{job.id}"


async def persona_edit(request: Request) -> Response:
    return await _persona_action(request, {"field", "value"}, _edit)


async def persona_regenerate(request: Request) -> Response:
    return await _persona_action(request, {"prompt_id", "method"}, _regenerate)


async def jobs_page(request: Request) -> Response:
    refused = _need_editor(request)
    return refused or render(request, "jobs.html", jobs=request.app.state.studio.jobs.listed())


async def job_page(request: Request) -> Response:
    refused = _need_editor(request)
    if refused:
        return refused
    job_id = request.path_params["job_id"]
    job = request.app.state.studio.jobs.get(job_id) if _JOB_ID.match(job_id) else None
    if job is None or job.owner != "editor":
        return error_page(request, 404, "No such job (the list is kept in memory until the studio restarts).")
    return render(request, "job.html", job=job)


async def audit_page(request: Request) -> Response:
    refused = _need_editor(request)
    if refused:
        return refused
    edits = await run_in_threadpool(browse.all_edits, request.app.state.studio.lake_dir)
    return render(request, "audit.html", edits=edits)


async def results_page(request: Request) -> Response:
    refused = _need_editor(request)
    if refused:
        return refused
    studio: Studio = request.app.state.studio
    rows = await run_in_threadpool(studio.results)
    return render(request, "results.html", rows=rows, pending=studio.store.pending())


async def editor_page(request: Request) -> Response:
    return render(request, "editor.html", errors={})


async def editor_sign_in(request: Request) -> Response:
    """Sign in with one's own editor token (the account names the editor in the audit trail). Wrong
    tokens count against a rate limit; over it, every token is refused until the window moves on."""
    studio: Studio = request.app.state.studio
    form = await read_form(request)
    client = _client(request)
    wait = studio.sign_in_limiter.blocked_for(client)
    if wait > 0:
        return too_many(request, wait, "Too many wrong editor tokens from this address or in all")
    if set(form) - {"token", "csrf_token"}:
        return render(request, "editor.html", status=400, errors={"form": "unexpected fields"})
    try:
        session = studio.editors.sign_in(form.get("token", ""))
    except InvalidInput as error:
        studio.sign_in_limiter.record(client)
        return render(request, "editor.html", status=403, errors=error.errors)
    response = see_other("/personas")
    _set_cookie(request, response, EDITOR_COOKIE, session)
    return response


async def editor_sign_out(request: Request) -> Response:
    await read_form(request)
    request.app.state.studio.editors.sign_out(request.cookies.get(EDITOR_COOKIE))
    response = see_other("/")
    response.delete_cookie(EDITOR_COOKIE, path="/", secure=_secure(request), httponly=True, samesite="strict")
    return response


async def invitations_page(request: Request, created: list[str] | None = None, errors: dict | None = None,
                           status: int = 200) -> Response:
    refused = _need_editor(request)
    if refused:
        return refused
    studio: Studio = request.app.state.studio
    scheme = "https" if _secure(request) else request.url.scheme
    links = [f"{scheme}://{request.url.netloc}/study?invite={token}" for token in created or []]
    invitations = await run_in_threadpool(studio.invitations.listed)
    return render(request, "invitations.html", status=status, links=links, invitations=invitations[:200],
                  errors=errors or {})


async def invitations_create(request: Request) -> Response:
    """New invitation links, shown on this page once (only their hashes are kept)."""
    studio: Studio = request.app.state.studio
    form = await read_form(request)
    editor = _editor(request)
    if editor is None:
        return _need_editor(request)
    try:
        if set(form) - {"uses", "days", "count", "csrf_token"}:
            raise InvalidInput({"form": "unexpected fields"})
        tokens = await run_in_threadpool(studio.invitations.create_from_form, editor, form)
    except InvalidInput as error:
        return await invitations_page(request, errors=error.errors, status=400)
    return await invitations_page(request, created=tokens)


async def invitation_revoke(request: Request) -> Response:
    studio: Studio = request.app.state.studio
    form = await read_form(request)
    editor = _editor(request)
    if editor is None:
        return _need_editor(request)
    invitation_id = request.path_params["invitation_id"]
    try:
        if set(form) - {"csrf_token"} or not _INVITATION_ID.match(invitation_id):
            raise InvalidInput({"id": "no such invitation"})
        await run_in_threadpool(studio.invitations.revoke, invitation_id, editor)
    except InvalidInput as error:
        return await invitations_page(request, errors=error.errors, status=400)
    return see_other("/invitations")


# --- the study ---------------------------------------------------------------------------------


def _participant(request: Request) -> dict | None:
    return request.app.state.studio.session_of(request.cookies.get(STUDY_COOKIE))


def _continue(session: dict, studio: Studio) -> RedirectResponse:
    step = studio.progress(session).step
    return see_other({"prompts": "/study/prompts", "done": "/study/done"}.get(step, "/study/compare"))


def _survey(request: Request, invite: str, status: int = 200, errors: dict | None = None,
            values: dict | None = None) -> HTMLResponse:
    studio: Studio = request.app.state.studio
    return render(request, "study_survey.html", status=status, errors=errors or {}, values=values or {},
                  ages=AGE_CHOICES, genders=GENDER_CHOICES, n_prompts=studio.settings.study.n_prompts, invite=invite)


def _too_many_sessions(request: Request, wait_s: float) -> Response:
    return too_many(request, wait_s, "Too many study sessions or invitation links from this address or in all")


async def _invitation_refused(request: Request, invite: str, use: bool) -> Response | None:
    """On a public studio, a refusal unless `invite` is an open invitation (one of its uses taken with `use`)."""
    studio: Studio = request.app.state.studio
    if not studio.settings.public:
        return None
    if not invite:
        return error_page(request, 403, "This study is by invitation: open the link the researchers sent you.")
    try:
        await run_in_threadpool(studio.invitations.redeem if use else studio.invitations.check, invite)
    except InvalidInput as error:
        return error_page(request, 403, error.errors["invite"])
    return None


async def study_intro(request: Request) -> Response:
    studio: Studio = request.app.state.studio
    session = _participant(request)
    if session is not None:
        return _continue(session, studio)
    if not studio.settings.public:
        return _survey(request, "")
    # Wrong links count against the session limit, so that links cannot be guessed at speed.
    wait = studio.session_limiter.blocked_for(_client(request))
    if wait > 0:
        return _too_many_sessions(request, wait)
    invite = request.query_params.get("invite", "")[:200]
    refused = await _invitation_refused(request, invite, use=False)
    if refused and invite:
        studio.session_limiter.record(_client(request))
    return refused or _survey(request, invite)


async def study_survey(request: Request) -> Response:
    """A new study session from the survey: rate limited per address and in all, and, when public, only
    from an open invitation (one of its uses is taken)."""
    studio: Studio = request.app.state.studio
    form = await read_form(request)
    if _participant(request) is not None:
        return _continue(_participant(request), studio)
    invite = form.get("invite", "")[:200] if studio.settings.public else ""
    values = {k: v for k, v in form.items() if k not in ("csrf_token", "invite")}
    try:
        survey = parse_survey(values)
    except InvalidInput as error:
        return _survey(request, invite, 400, error.errors, values)
    wait = studio.session_limiter.take(_client(request))  # counts the attempt, whatever its invitation
    if wait > 0:
        return _too_many_sessions(request, wait)
    refused = await _invitation_refused(request, invite, use=True)
    if refused:
        return refused
    token = await run_in_threadpool(studio.start_session, survey)
    response = see_other("/study/prompts")
    _set_cookie(request, response, STUDY_COOKIE, token, max_age=30 * 24 * 3600)
    return response


async def study_prompts(request: Request) -> Response:
    studio: Studio = request.app.state.studio
    session = _participant(request)
    if session is None:
        return see_other("/study")
    if session["prompts_json"]:
        return _continue(session, studio)
    suggestions = studio.suggestions(session)
    prompts = [{"field": prompt_field(i), "value": s["base_prompt"]} for i, s in enumerate(suggestions)]
    return render(request, "study_prompts.html", prompts=prompts, errors={})


async def study_prompts_submit(request: Request) -> Response:
    studio: Studio = request.app.state.studio
    form = await read_form(request)
    session = _participant(request)
    if session is None:
        return see_other("/study")
    if session["prompts_json"]:
        return _continue(session, studio)
    suggestions = studio.suggestions(session)
    try:
        prompts = parse_prompts(form, session["session_id"], suggestions, int(session["n_prompts"]))
    except InvalidInput as error:
        shown = [{"field": prompt_field(i), "value": form.get(prompt_field(i), "")[:300]}
                 for i in range(int(session["n_prompts"]))]
        return render(request, "study_prompts.html", status=400, prompts=shown, errors=error.errors)
    await run_in_threadpool(studio.save_prompts, session, prompts)
    return see_other("/study/compare")


async def study_compare(request: Request) -> Response:
    studio: Studio = request.app.state.studio
    session = _participant(request)
    if session is None:
        return see_other("/study")
    progress = await run_in_threadpool(studio.progress, session)
    if progress.step in ("prompts", "done"):
        return _continue(session, studio)
    if progress.step == "waiting":
        return render(request, "study_wait.html", progress=progress)
    if progress.step == "failed":
        return render(request, "error.html", status=500, errors={},
                      message=f"Your images could not be prepared ({progress.error}). Please tell the researcher.")
    studio.mark_shown(session["session_id"], progress.index)
    return render(request, "study_compare.html", progress=progress, comparison=progress.comparison)


async def study_vote(request: Request) -> Response:
    studio: Studio = request.app.state.studio
    form = await read_form(request)
    session = _participant(request)
    if session is None:
        return see_other("/study")
    try:
        row = await run_in_threadpool(studio.vote, session, form)
    except InvalidInput as error:
        return error_page(request, 400, "That vote could not be recorded.", error.errors)
    response = _continue(session, studio)
    if row is not None:
        response.headers["x-zipp-vote-id"] = row["vote_id"]  # the acknowledgement the load test checks
    return response


async def study_done(request: Request) -> Response:
    studio: Studio = request.app.state.studio
    session = _participant(request)
    if session is None:
        return see_other("/study")
    if studio.progress(session).step != "done":
        return _continue(session, studio)
    persona = json.loads(session["persona_json"]) if session["persona_json"] else None
    return render(request, "study_done.html", persona=persona, model=session["persona_model"] or "",
                  votes=len(studio.store.votes_of(session["session_id"])))


async def study_image(request: Request) -> Response:
    studio: Studio = request.app.state.studio
    session = _participant(request)
    index, side = request.path_params["index"], request.path_params["side"]
    path = studio.session_image(session, index, side) if session is not None else None
    if path is None or not path.is_file():
        return Response("not found", status_code=404, media_type="text/plain")
    return FileResponse(path, media_type="image/png")


# --- images ------------------------------------------------------------------------------------


def _file_under(root: Path, relative: str) -> Path | None:
    path = (root / relative).resolve()
    return path if path.is_relative_to(root.resolve()) and path.is_file() else None


def _image_refused(request: Request) -> Response | None:
    return None if _may_browse(request) else Response("for editors only", status_code=403, media_type="text/plain")


async def zipbench_image(request: Request) -> Response:
    refused = _image_refused(request)
    if refused:
        return refused
    studio: Studio = request.app.state.studio
    method, shard, name = (request.path_params[k] for k in ("method", "shard", "name"))
    if method not in METHODS or shard not in SHARD_KEYS or not browse.IMAGE_NAME.match(name):
        return Response("not found", status_code=404, media_type="text/plain")
    path = _file_under(studio.settings.data_dir / "zipbench" / "images", f"{method}/{shard}/{name}")
    return FileResponse(path, media_type="image/png") if path else Response("not found", 404, media_type="text/plain")


async def reference_image(request: Request) -> Response:
    refused = _image_refused(request)
    if refused:
        return refused
    studio: Studio = request.app.state.studio
    key = request.path_params["key"]
    if not browse.IMAGE_KEY.match(key):
        return Response("not found", status_code=404, media_type="text/plain")
    path = _file_under(studio.settings.data_dir / "raw" / "images", f"{key[:2]}/{key}")
    if path is None:
        return Response("not found", status_code=404, media_type="text/plain")
    with open(path, "rb") as f:
        kind = sniff_image_type(f.read(16))
    if kind is None:  # only images are served, whatever the cache holds
        return Response("not an image", status_code=404, media_type="text/plain")
    return FileResponse(path, media_type=kind)


async def regenerated_image(request: Request) -> Response:
    refused = _image_refused(request)
    if refused:
        return refused
    studio: Studio = request.app.state.studio
    user_id, name = request.path_params["user_id"], request.path_params["name"]
    if not browse.USER_ID.match(user_id) or not browse.IMAGE_NAME.match(name):
        return Response("not found", status_code=404, media_type="text/plain")
    path = _file_under(browse.regenerated_dir(studio.settings.data_dir, user_id), name)
    return FileResponse(path, media_type="image/png") if path else Response("not found", 404, media_type="text/plain")


# --- the app -----------------------------------------------------------------------------------


async def _refused(request: Request, error: FormRefused) -> Response:
    return error_page(request, error.status, str(error))


async def _failed(request: Request, error: Exception) -> Response:
    # A lake that cannot be read (a pre-Delta folder, a table being rewritten) says so on a page; loopback
    # users are the researchers running the studio, and the message names the table, not the request.
    log.error("studio: %s %s failed", request.method, request.url.path, exc_info=error)
    first = (str(error).splitlines() or [""])[0][:300]
    return error_page(request, 500, f"The studio could not do that: {type(error).__name__}: {first}")


def create_app(studio: Studio, start: bool = True) -> Starlette:
    """The ASGI app; with `start`, the studio starts and stops with it (lifespan)."""

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if start:
            await run_in_threadpool(studio.start)
        try:
            yield
        finally:
            if start:
                await run_in_threadpool(studio.stop)

    routes = [
        Route("/", home),
        Route("/personas", personas_page),
        Route("/personas/{user_id}", persona_page),
        Route("/personas/{user_id}/edit", persona_edit, methods=["POST"]),
        Route("/personas/{user_id}/regenerate", persona_regenerate, methods=["POST"]),
        Route("/jobs", jobs_page),
        Route("/jobs/{job_id}", job_page),
        Route("/audit", audit_page),
        Route("/results", results_page),
        Route("/editor", editor_page),
        Route("/editor", editor_sign_in, methods=["POST"]),
        Route("/editor/sign-out", editor_sign_out, methods=["POST"]),
        Route("/invitations", invitations_page),
        Route("/invitations", invitations_create, methods=["POST"]),
        Route("/invitations/{invitation_id}/revoke", invitation_revoke, methods=["POST"]),
        Route("/study", study_intro),
        Route("/study", study_survey, methods=["POST"]),
        Route("/study/prompts", study_prompts),
        Route("/study/prompts", study_prompts_submit, methods=["POST"]),
        Route("/study/compare", study_compare),
        Route("/study/vote", study_vote, methods=["POST"]),
        Route("/study/done", study_done),
        Route("/study/image/{index:int}/{side}", study_image),
        Route("/images/zipbench/{method}/{shard}/{name}", zipbench_image),
        Route("/images/reference/{key}", reference_image),
        Route("/images/regenerated/{user_id}/{name}", regenerated_image),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=list(studio.settings.allowed_hosts)),
                  Middleware(SecurityHeaders, hsts=studio.settings.secure_cookies)]
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan,
                    exception_handlers={FormRefused: _refused, Exception: _failed})
    app.state.studio = studio
    return app
