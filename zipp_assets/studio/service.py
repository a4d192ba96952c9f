"""The studio as one object: the study store, the worker, the models, the editor sign-in, the
invitations and the rate limits, and the operations the web layer calls. Plain Python: the web layer
only parses requests and renders.

A participant's session is found from their token (a cookie) and nothing else, so a participant
can reach only their own session. Every slow step (a persona from the LLM, images) is a queued job.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from zipp_assets.llm.resources import LLMResource
from zipp_assets.personas.overrides import edit_persona
from zipp_assets.studio import browse
from zipp_assets.studio.jobs import Job, JobQueue
from zipp_assets.studio.models import StudioModels, prepare_comparisons, regenerate_prompt, verbalize_survey
from zipp_assets.studio.results import study_results
from zipp_assets.studio.access import EDITORS_FILE, INVITATIONS_FILE, EditorAuth, EditorRegistry, Invitations
from zipp_assets.studio.security import (
    SESSION_LIMIT,
    SIGN_IN_LIMIT,
    Limit,
    RateLimiter,
    looks_like_token,
    parse_field_value,
)
from zipp_assets.studio.storage import DuplicateVote, StudyStore
from zipp_assets.studio.study import (
    STUDY_VERSION,
    Comparison,
    InvalidInput,
    StudyConfig,
    Survey,
    check_session_id,
    parse_vote,
    plan_comparisons,
    session_id_of,
    suggested_prompts,
    vote_row,
)
from zipp_assets.zipbench.rewrite import METHODS, USES_PERSONA

log = logging.getLogger(__name__)
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
REGENERATION_METHODS = tuple(m for m in METHODS if m in USES_PERSONA and m != "zipp_shuffled")  # zipp_0shot first


@dataclass
class StudioSettings:
    """`public`: the studio serves people other than its researchers (through a proxy or bound to a
    network): study sessions start only from invitation links, and the persona browser and its images
    are for editors only. `secure_cookies`: the studio is reached over https (a TLS proxy in front, or
    served with a certificate), so cookies carry `Secure` and pages ask for HSTS."""

    data_dir: Path
    study: StudyConfig = field(default_factory=StudyConfig)
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS
    flush_interval_s: float = 0.5
    public: bool = False
    secure_cookies: bool = False
    sign_in_limit: Limit = SIGN_IN_LIMIT
    session_limit: Limit = SESSION_LIMIT

    @property
    def lake_dir(self) -> Path:
        return Path(self.data_dir) / "lake"

    @property
    def studio_dir(self) -> Path:
        return Path(self.data_dir) / "studio"


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Progress:
    """Where a participant stands: `step` is prompts | waiting | failed | compare | done."""

    step: str
    session: dict
    index: int = 0
    total: int = 0
    comparison: Comparison | None = None
    error: str | None = None


class Studio:
    def __init__(self, settings: StudioSettings, llm: LLMResource, image_generator, generator_factory=None):
        self.settings = settings
        self.lake_dir = settings.lake_dir
        self.store = StudyStore(self.lake_dir, settings.studio_dir / "journal", settings.flush_interval_s)
        self.jobs = JobQueue()
        self.models = StudioModels(llm, image_generator, generator_factory)
        self.editors = EditorAuth(EditorRegistry(settings.studio_dir / EDITORS_FILE))
        self.invitations = Invitations(settings.studio_dir / INVITATIONS_FILE)
        self.sign_in_limiter = RateLimiter(settings.sign_in_limit)  # wrong editor tokens
        self.session_limiter = RateLimiter(settings.session_limit)  # study sessions started, bad invitations
        self._shown: dict[tuple[str, int], datetime] = {}
        self._shown_lock = threading.Lock()
        self._edit_lock = threading.Lock()

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Studio:
        self.store.open()
        self.jobs.start()
        resumed = 0
        for session in self.store.all_sessions():  # work a stopped server left undone
            sid = session["session_id"]
            if not session["persona_json"] and not session["persona_error"]:
                self._queue_persona(sid)
                resumed += 1
            elif session["prompts_json"] and not session["prepare_error"] and not self._all_ready(session):
                self._queue_preparation(sid)
                resumed += 1
        if resumed:
            log.info("studio: resumed the preparation of %d study sessions", resumed)
        return self

    def stop(self) -> None:
        self.jobs.stop()
        self.store.close()
        self.models.close()

    def session_dir(self, session_id: str) -> Path:
        return self.settings.studio_dir / "sessions" / check_session_id(session_id)

    # --- the study -----------------------------------------------------------------------------

    def start_session(self, survey: Survey) -> str:
        """A new participant session from the intake survey; returns the participant's token."""
        token = secrets.token_urlsafe(32)
        sid = session_id_of(token)
        config = self.settings.study
        now = _now()
        self.store.save_session({
            "session_id": sid, "created_utc": now, "updated_utc": now, "study_version": STUDY_VERSION,
            "comparison": config.comparison, "zipp_method": config.zipp_method, "baseline_method": config.baseline,
            "n_prompts": config.n_prompts, **survey.as_dict(), "generator": self.models.image_generator.description,
        })
        self._queue_persona(sid)
        return token

    def session_of(self, token: str | None) -> dict | None:
        if not looks_like_token(token):
            return None
        return self.store.session(session_id_of(token))

    @staticmethod
    def config_of(session: dict) -> StudyConfig:
        return StudyConfig(n_prompts=int(session["n_prompts"]), baseline=session["baseline_method"],
                           zipp_method=session["zipp_method"])

    def suggestions(self, session: dict) -> list[dict]:
        return suggested_prompts(session["session_id"], int(session["n_prompts"]))

    def save_prompts(self, session: dict, prompts: list[dict]) -> None:
        if session["prompts_json"]:
            return  # chosen already (a resubmitted form): the first choice stands
        flips = [secrets.randbelow(2) == 1 for _ in prompts]  # the display order, hidden from the participant
        comparisons = plan_comparisons(prompts, flips)
        self.store.update_session(session["session_id"], {
            "prompts_json": json.dumps(prompts), "updated_utc": _now(),
            "comparisons_json": json.dumps([c.as_dict() for c in comparisons])})
        self._queue_preparation(session["session_id"])

    @staticmethod
    def comparisons_of(session: dict) -> list[Comparison]:
        return [Comparison.from_dict(c) for c in json.loads(session["comparisons_json"] or "[]")]

    def _all_ready(self, session: dict) -> bool:
        methods = {session["zipp_method"], session["baseline_method"]}
        return all(set(c.images) >= methods for c in self.comparisons_of(session))

    def progress(self, session: dict) -> Progress:
        sid = session["session_id"]
        total = int(session["n_prompts"])
        if not session["prompts_json"]:
            return Progress("prompts", session, total=total)
        index = len(self.store.votes_of(sid))
        if index >= total:
            return Progress("done", session, index=index, total=total)
        comparison = self.comparisons_of(session)[index]
        methods = {session["zipp_method"], session["baseline_method"]}
        if set(comparison.images) >= methods:
            return Progress("compare", session, index, total, comparison)
        error = session["prepare_error"] or (f"the persona could not be built: {session['persona_error']}"
                                             if session["persona_error"] else None)
        return Progress("failed" if error else "waiting", session, index, total, error=error)

    def mark_shown(self, session_id: str, index: int) -> None:
        with self._shown_lock:
            self._shown.setdefault((session_id, index), _now())

    def vote(self, session: dict, form: dict) -> dict | None:
        """Record the vote in `form` for the comparison being shown; None when it repeats one already
        recorded (a double click or a resent form). InvalidInput for a bad form."""
        current = self.progress(session)
        raw = form.get("index", "")
        if raw.isdigit() and len(raw) <= 3 and int(raw) < current.index:
            return None  # that comparison has its vote
        if current.step != "compare":
            raise InvalidInput({"index": "there is no comparison waiting for a vote"})
        index, choice = parse_vote(form, current.index)
        sid = session["session_id"]
        with self._shown_lock:
            shown = self._shown.pop((sid, index), None)
        now = _now()
        row = vote_row(sid, current.comparison, self.config_of(session), choice, shown or now, now)
        if shown is None:
            row["time_taken_ms"] = None  # shown before a restart: the time is not known
        try:
            return self.store.add_vote(row)
        except DuplicateVote:
            return None

    def results(self) -> list[dict]:
        return study_results(self.store.all_votes(), self.store.all_sessions())

    def _queue_persona(self, sid: str) -> Job:
        return self.jobs.submit("study_persona", "a study participant's persona", lambda job: self._verbalize(sid),
                                owner="study")

    def _queue_preparation(self, sid: str) -> Job:
        return self.jobs.submit("study_images", "a study participant's image pairs", lambda job: self._prepare(sid),
                                owner="study")

    def _verbalize(self, sid: str) -> dict:
        session = self.store.session(sid)
        if session is None or session["persona_json"]:
            return {}
        survey = Survey(session["age_band"], session["gender"], session["country"], session["profession"],
                        tuple(session["hobbies"] or ()))
        try:
            persona, model, error = verbalize_survey(self.models.llm, sid, survey)
        except Exception as caught:  # a model that cannot be reached fails this session, visibly
            persona, model, error = None, self.models.llm_name, f"{type(caught).__name__}: {caught}"[:300]
        self.store.update_session(sid, {"persona_json": json.dumps(persona) if persona else None,
                                        "persona_model": model, "persona_error": error, "updated_utc": _now()})
        return {"ok": persona is not None}

    def _prepare(self, sid: str) -> dict:
        session = self.store.session(sid)
        if session is None:
            return {}
        if not session["persona_json"] and not session["persona_error"]:
            self._verbalize(sid)
            session = self.store.session(sid)
        if not session["persona_json"]:
            return {"ok": False}
        comparisons = self.comparisons_of(session)

        def ready(done: list[Comparison]) -> None:
            self.store.update_session(sid, {"comparisons_json": json.dumps([c.as_dict() for c in done]),
                                            "updated_utc": _now()})

        try:
            prepare_comparisons(self.models, self.config_of(session), comparisons, json.loads(session["persona_json"]),
                                self.session_dir(sid), ready)
        except Exception as error:
            self.store.update_session(sid, {"prepare_error": f"{type(error).__name__}: {error}"[:300]})
            raise
        return {"ok": True}

    def session_image(self, session: dict, index: int, side: str) -> Path | None:
        """The file shown on `side` of comparison `index`, only for that participant's own session."""
        comparisons = self.comparisons_of(session)
        if not 0 <= index < len(comparisons) or side not in ("left", "right"):
            return None
        method = comparisons[index].method_on(side, self.config_of(session))
        name = comparisons[index].images.get(method)
        return self.session_dir(session["session_id"]) / name if name else None

    # --- personas ------------------------------------------------------------------------------

    def edit(self, user_id: str, field: str, text: str, editor: str) -> dict:
        """One persona field edited through the override table (with its audit row)."""
        value = parse_field_value(field, text)
        with self._edit_lock:
            detail = browse.persona_detail(self.lake_dir, self.settings.data_dir, user_id)
            if detail is None or detail["persona"] is None:
                raise InvalidInput({"user": "this user has no persona to edit"})
            try:
                return edit_persona(self.lake_dir, user_id, field, value, editor, detail["persona"])
            except ValueError as error:
                raise InvalidInput({"value": str(error)[:300]}) from None

    def queue_regeneration(self, user_id: str, prompt_id: str, method: str, editor: str) -> Job:
        """Queue one prompt's image for the user's current persona (edits applied when the job runs)."""
        if method not in REGENERATION_METHODS:
            raise InvalidInput({"method": f"choose one of {', '.join(REGENERATION_METHODS)}"})
        detail = browse.persona_detail(self.lake_dir, self.settings.data_dir, user_id)
        if detail is None or detail["persona"] is None:
            raise InvalidInput({"user": "this user has no persona"})
        prompt = browse.user_prompt(detail, prompt_id)
        if prompt is None:
            raise InvalidInput({"prompt_id": "not one of this user's prompts"})

        def work(job: Job) -> dict:
            current = browse.persona_detail(self.lake_dir, self.settings.data_dir, user_id)
            job.progress = "rewriting and generating"
            return regenerate_prompt(self.models, user_id, current["persona"], prompt, method,
                                     browse.regenerated_dir(self.settings.data_dir, user_id), job.id)

        return self.jobs.submit("regenerate", f"{user_id}: {prompt['base_prompt'][:60]} ({method}, by {editor})",
                                work)
