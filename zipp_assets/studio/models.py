"""The studio's model work, run by the worker thread: a persona from an intake survey (LLM resource),
prompts rewritten per method (ZIPBench's rewrite requests), image pairs with one seed (ImageGenerator
resource), and one prompt regenerated for an edited persona.

Image files are named from validated ids only (session hash, comparison number, method, job id):
nothing a participant or a model wrote ever becomes a path. Each file is written under a temporary
name and renamed, so a file that exists is complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

from zipp_assets.llm.resources import LLMResource
from zipp_assets.personas.verbalize import validate_persona
from zipp_assets.studio.study import Comparison, StudyConfig, Survey, check_session_id, studio_template_rule, survey_request
from zipp_assets.zipbench.rewrite import METHODS, USES_PERSONA, rewrite_request

_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,80}$")


class StudioModels:
    """The LLM client and the image generator, opened once on first use and kept for the studio's
    life (a managed vLLM server starts once, diffusion weights load once)."""

    def __init__(self, llm: LLMResource, image_generator, generator_factory: Callable[[], object] | None = None):
        self.llm_resource = llm
        self.image_generator = image_generator
        self._generator_factory = generator_factory or image_generator.build
        self._stack = contextlib.ExitStack()
        self._client = None
        self._generator = None
        self._lock = threading.Lock()

    @property
    def llm(self):
        with self._lock:
            if self._client is None:
                self._client = self._stack.enter_context(self.llm_resource.client(render=studio_template_rule))
            return self._client

    @property
    def generator(self):
        with self._lock:
            if self._generator is None:
                self._generator = self._generator_factory()
            return self._generator

    @property
    def llm_name(self) -> str:
        return getattr(self._client, "model", None) or self.llm_resource.description

    def close(self) -> None:
        self._stack.close()


def verbalize_survey(llm, session_id: str, survey: Survey) -> tuple[dict | None, str, str | None]:
    """(persona, model, None) or (None, model, reason): the persona the LLM writes from the survey,
    validated against the persona schema whatever the model said."""
    result = llm.generate([survey_request(check_session_id(session_id), survey)])[0]
    if not result.ok:
        return None, result.model, result.error or "the model gave no answer"
    persona, reason = validate_persona(result.parsed)
    return (persona.model_dump() if persona else None), result.model, reason


def rewrite_prompts(llm, fit_prompt: Callable[[str], tuple[str, bool]], base_prompts: Sequence[str], method: str,
                    persona: dict | None) -> list[tuple[str, bool, str | None]]:
    """Per base prompt: (final prompt for the generator, truncated, failure reason or None). `generic`
    keeps the base prompt; a failed rewrite keeps it too and says why, as ZIPBench does."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}")
    rewritten: list[tuple[str, str | None]] = [(p, None) for p in base_prompts]
    if method != "generic":
        requests = [rewrite_request(f"{method}/{i}", method, p, persona if method in USES_PERSONA else None, [])
                    for i, p in enumerate(base_prompts)]
        for i, result in enumerate(llm.generate(requests)):
            prompt = (result.parsed or {}).get("prompt") if result.ok else None
            if isinstance(prompt, str) and prompt.strip():
                rewritten[i] = (" ".join(prompt.split()), None)
            else:
                rewritten[i] = (base_prompts[i], result.error or "no prompt in the answer")
    out = []
    for text, error in rewritten:
        final, truncated = fit_prompt(text)
        out.append((final, truncated, error))
    return out


def save_png(image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    image.save(tmp, format="PNG")
    os.replace(tmp, path)


def comparison_image_name(index: int, method: str) -> str:
    if method not in METHODS or not 0 <= index < 1000:
        raise ValueError(f"bad comparison image {index}/{method}")
    return f"{index:03d}-{method}.png"


def prepare_comparisons(models: StudioModels, config: StudyConfig, comparisons: list[Comparison], persona: dict,
                        folder: Path, on_ready: Callable[[list[Comparison]], None]) -> None:
    """Rewrite every prompt with both methods, then make each comparison's two images (one seed, one
    generator call) and hand the comparisons over after each one, so the participant can start."""
    methods = (config.zipp_method, config.baseline)
    todo = [c for c in comparisons if set(c.images) != set(methods)]
    if not todo:
        return
    generator = models.generator
    for method in methods:
        rows = rewrite_prompts(models.llm, generator.fit_prompt, [c.base_prompt for c in todo], method, persona)
        for comparison, (final, truncated, _error) in zip(todo, rows):
            comparison.prompts[method] = final
            comparison.truncated[method] = truncated
    for comparison in todo:
        images = generator.generate([comparison.prompts[m] for m in methods], [comparison.seed] * len(methods))
        for method, image in zip(methods, images):
            name = comparison_image_name(comparison.index, method)
            save_png(image, folder / name)
            comparison.images[method] = name
        on_ready(comparisons)


def regenerate_prompt(models: StudioModels, user_id: str, persona: dict, prompt: dict, method: str, folder: Path,
                      job_id: str) -> dict:
    """One prompt's image for a (possibly edited) persona: rewritten with `method`, the prompt's own seed.
    Written to `<folder>/<prompt_id>__<method>__<job_id>.png`, listed in `<folder>/regenerated.jsonl`."""
    for name, value in (("user_id", user_id), ("prompt_id", prompt["prompt_id"]), ("job_id", job_id)):
        if not _SAFE_ID.match(value):
            raise ValueError(f"unsafe {name}: {value!r}")
    if method not in USES_PERSONA or method == "zipp_shuffled":
        raise ValueError(f"regeneration is for the persona's own rewrite methods, not {method!r}")
    generator = models.generator
    [(final, truncated, error)] = rewrite_prompts(models.llm, generator.fit_prompt, [prompt["base_prompt"]], method,
                                                  persona)
    [image] = generator.generate([final], [int(prompt["seed"])])
    name = f"{prompt['prompt_id']}__{method}__{job_id}.png"
    save_png(image, folder / name)
    record = {"job_id": job_id, "user_id": user_id, "prompt_id": prompt["prompt_id"], "method": method,
              "base_prompt": prompt["base_prompt"], "final_prompt": final, "truncated": truncated,
              "rewrite_error": error, "seed": int(prompt["seed"]), "image": name, "generator": generator.name,
              "llm": models.llm_name, "made_utc": datetime.now(timezone.utc).isoformat()}
    with open(folder / "regenerated.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    return record
