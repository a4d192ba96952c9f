"""Images for one benchmark partition (method x shard): resumable, batched, PNG files plus a manifest.

Each image is `<images root>/<method>/<shard>/<user_id>__<prompt_id>.png`, written to a temporary
name and renamed into place, so a file that exists is complete. A killed partition therefore
continues where it stopped: existing images whose generator and prompt match are skipped (a sidecar
line in the manifest records both). Names are built from pseudonyms and the benchmark's own prompt
ids, checked against a strict pattern: no text from Reddit or from a model ever becomes a path.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from zipp_assets.zipbench.rewrite import METHODS

MANIFEST_SCHEMA = pa.schema([
    ("user_id", pa.string()), ("prompt_id", pa.string()), ("method", pa.string()), ("shard", pa.string()),
    ("seed", pa.int64()), ("final_prompt", pa.string()), ("image_path", pa.string()), ("generator", pa.string()),
    ("generation_key", pa.string()),
])
_SAFE = re.compile(r"^[A-Za-z0-9_.-]{1,80}$")


def image_relpath(method: str, shard: str, user_id: str, prompt_id: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}")
    for name, value in (("shard", shard), ("user_id", user_id), ("prompt_id", prompt_id)):
        if not _SAFE.match(value) or value.startswith("."):
            raise ValueError(f"unsafe {name} for an image path: {value!r}")
    return f"{method}/{shard}/{user_id}__{prompt_id}.png"


def generation_key(generator_name: str, prompt: str, seed: int) -> str:
    """What fixes an image: the generator, the final prompt and the seed."""
    return hashlib.sha256(f"{generator_name}\x00{prompt}\x00{seed}".encode()).hexdigest()[:16]


@dataclass
class GenerationReport:
    images: int = 0
    generated: int = 0
    skipped_existing: int = 0
    batches: int = 0
    seconds: float = 0.0


def _key_file(path: Path) -> Path:
    return path.with_suffix(".key")


def generate_images(rows: Sequence[dict], generator, images_root: Path, batch_size: int,
                    progress: Callable[[str], None] | None = None) -> tuple[list[dict], GenerationReport]:
    """Generate the image of each rewrite row (method, shard, user_id, prompt_id, final_prompt, seed).

    Returns one manifest row per input row and a report. Images already on disk with the same
    generation key are kept, not regenerated.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    started = time.perf_counter()
    report = GenerationReport(images=len(rows))
    todo: list[tuple[dict, Path, str]] = []
    manifest: list[dict] = []
    for row in rows:
        rel = image_relpath(row["method"], row["shard"], row["user_id"], row["prompt_id"])
        path = Path(images_root) / rel
        key = generation_key(generator.name, row["final_prompt"], int(row["seed"]))
        manifest.append({"user_id": row["user_id"], "prompt_id": row["prompt_id"], "method": row["method"],
                         "shard": row["shard"], "seed": int(row["seed"]), "final_prompt": row["final_prompt"],
                         "image_path": rel, "generator": generator.name, "generation_key": key})
        key_file = _key_file(path)
        if path.is_file() and key_file.is_file() and key_file.read_text() == key:
            report.skipped_existing += 1
            continue
        todo.append((row, path, key))
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        images = generator.generate([r["final_prompt"] for r, _, _ in batch], [int(r["seed"]) for r, _, _ in batch])
        if len(images) != len(batch):
            raise RuntimeError(f"generator returned {len(images)} images for {len(batch)} prompts")
        for (_, path, key), image in zip(batch, images):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            image.save(tmp, format="PNG")
            os.replace(tmp, path)
            _key_file(path).write_text(key)  # after the image: a key file vouches for a complete image
        report.generated += len(batch)
        report.batches += 1
        if progress and (report.batches % 25 == 0 or start + batch_size >= len(todo)):
            progress(f"generated {report.generated}/{len(todo)} images ({report.skipped_existing} kept from before)")
    report.seconds = time.perf_counter() - started
    return manifest, report
