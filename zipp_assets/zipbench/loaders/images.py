"""Preference pairs' images on disk: where an image id is looked for, and writing the images a Parquet
file carries (Pick-a-Pic's jpg_0/jpg_1, Rapidata's image1/image2 features) into a folder.

An image id (a Pick-a-Pic uid, a Rapidata path, a URL, or "sha256:<hex>" for bytes without a path) maps
to one file name, `image_stem(id)` plus the extension its bytes call for. `find_image(root, id)` looks
only inside `root`: an id never names a path outside it, and nothing is fetched from a URL.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pyarrow.parquet as pq

from zipp_assets.zipbench.loaders.containers import PARQUET_MAGIC, BenchmarkFileError, column_key, data_files
from zipp_assets.zipbench.loaders.formats import BadRow, _image_id

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def image_kind(data: bytes) -> str | None:
    """The file extension the bytes' magic number names, or None for bytes that are no image."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return ".png"
    if data[:3] == b"\xff\xd8\xff":
        return ".jpg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return ".gif"
    return None


def image_stem(image_id: str) -> str:
    """The file name (without extension) an image id is stored under: a URL by its last part, a path with
    its folders joined by '__' (so flux/1.png and dalle/1.png stay apart), unsafe characters as '_'."""
    text = image_id.strip().replace("\\", "/")
    if text.startswith("sha256:"):
        return "sha256-" + _UNSAFE.sub("_", text[7:])
    if re.match(r"^[a-z][a-z0-9+.-]*://", text):
        text = PurePosixPath(text.split("?", 1)[0].split("#", 1)[0]).name
    parts = [p for p in PurePosixPath(text).parts if p not in ("", "/", ".", "..")]
    if parts:
        last = parts[-1]
        parts[-1] = last.rsplit(".", 1)[0] if "." in last[1:] else last
    stem = _UNSAFE.sub("_", "__".join(parts)).strip("._")
    return stem[:200] or "image"


def find_image(root: Path, image_id: str) -> Path | None:
    """The file of an image id under `root` (`image_stem` plus an image extension), or None."""
    root = Path(root)
    if not re.match(r"^[a-z][a-z0-9+.-]*:", image_id.strip()):  # a relative path as published, inside root only
        resolved_root = root.resolve()
        candidate = (root / image_id.strip().replace("\\", "/")).resolve()
        if (candidate.is_relative_to(resolved_root) and candidate.is_file()
                and candidate.suffix.lower() in IMAGE_SUFFIXES):
            return candidate
    stem = image_stem(image_id)
    for suffix in IMAGE_SUFFIXES:
        candidate = root / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _parquet_files(path: Path) -> list[Path]:
    files = data_files(path)[0] if path.is_dir() else [path]
    out = []
    for file in files:
        with open(file, "rb") as handle:
            if handle.read(4) == PARQUET_MAGIC:
                out.append(file)
    return out


def _pairs_of_images(file: Path) -> Iterator[tuple[str, bytes | None]]:
    """(image id, bytes) for every image a Parquet file carries, Pick-a-Pic's or Rapidata's layout."""
    parquet = pq.ParquetFile(file)
    names = {column_key(c): c for c in parquet.schema_arrow.names}
    if {"jpg0", "image0uid"} <= names.keys():
        columns = [names[k] for k in ("image0uid", "jpg0", "image1uid", "jpg1") if k in names]
        for batch in parquet.iter_batches(batch_size=64, columns=columns):
            for row in batch.to_pylist():
                for uid, data in ((names["image0uid"], names["jpg0"]), (names.get("image1uid"), names.get("jpg1"))):
                    if uid and data and row.get(uid):
                        yield str(row[uid]), row.get(data)
    elif {"image1", "image2"} <= names.keys():
        columns = [names[k] for k in ("image1", "image2", "image1path", "image2path") if k in names]
        for batch in parquet.iter_batches(batch_size=64, columns=columns):
            for row in batch.to_pylist():
                for image, path in (("image1", "image1path"), ("image2", "image2path")):
                    feature = row.get(names[image])
                    data = feature.get("bytes") if isinstance(feature, dict) else None
                    try:
                        image_id = _image_id(row.get(names[path]) if path in names else None, path) or \
                            _image_id(feature, image)
                    except BadRow:
                        image_id = None
                    if image_id:
                        yield image_id, data
    else:
        raise BenchmarkFileError(file, "expected Pick-a-Pic's jpg_0/jpg_1 or Rapidata's image1/image2 columns, "
                                       "got neither")


def export_images(path: Path, out: Path) -> dict[str, int]:
    """Write every image a Parquet file (or a folder of them) carries to `out` as `image_stem(id)` + its
    extension; an image already there is kept. Counts: written, kept, no bytes, not an image."""
    path, out = Path(path), Path(out)
    files = _parquet_files(path)
    if not files:
        raise BenchmarkFileError(path, "expected Parquet files carrying image bytes, got none")
    out.mkdir(parents=True, exist_ok=True)
    counts: Counter[str] = Counter()
    for file in files:
        for image_id, data in _pairs_of_images(file):
            if not data:
                counts["no bytes"] += 1
                continue
            suffix = image_kind(bytes(data[:16]))
            if suffix is None:
                counts["not an image"] += 1
                continue
            target = out / f"{image_stem(image_id)}{suffix}"
            if target.exists():
                counts["kept"] += 1
                continue
            tmp = target.with_name(f".{target.name}.partial")
            tmp.write_bytes(data)
            os.replace(tmp, target)
            counts["written"] += 1
    return {key: counts.get(key, 0) for key in ("written", "kept", "no bytes", "not an image")}
