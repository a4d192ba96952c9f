"""Loading the images users posted: through the cache, from `file` and `http(s)` sources, safely.

URLs come from Reddit and are untrusted. Every failure is a recorded reason, never a crash:
a URL that is not http(s)/file, a file outside the allowed roots, a host that is not on the
public internet (checked on the address actually connected to, see `safe_fetch`), a dead link
(HTTP status, unreachable, timeout, overall deadline), a response that is not an image or larger
than the size limit, bytes in a format Reddit does not serve (ALLOWED_FORMATS), and bytes that do
not decode as an image for any reason. Fetched bytes are
cached under the URL's hash; the URL text never becomes a path.

Memory bound: a loaded image is a thumbnail of at most MAX_SIDE x MAX_SIDE pixels (448: the
shorter side of a 2:1 photo still covers CLIP's 224), so it holds at most 448 * 448 * 3 B =
588 KiB as RGB, and a chunk of n loaded images at most n * 588 KiB (588 MiB for the default
chunk of 1024). While it decodes, a worker holds the compressed bytes (at most the size limit)
and one frame: a JPEG is decoded at reduced scale (`draft`, 1/2 to 1/8, so at most about
4 * MAX_SIDE^2 pixels), another format at full size, which the pixel cap (MAX_PIXELS, refused
from the header before decoding) bounds at 4 B * 50M = 200 MB.
"""

from __future__ import annotations

import io
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from PIL import Image, UnidentifiedImageError

from zipp_assets.graph.safe_fetch import PUBLIC_INTERNET, AddressPolicy, FetchError, FetchLimits, fetch
from zipp_assets.reddit.image_urls import image_cache_path

# The formats Reddit serves images in; Pillow's other decoders (43 formats in all, EPS through
# Ghostscript among them) are never run on untrusted bytes. JPEG: photos on i.redd.it and every
# preview.redd.it rendition. PNG: screenshots and graphics on i.redd.it. GIF: i.redd.it's animated
# GIFs (the first frame is used). WebP: what preview.redd.it and external-preview.redd.it serve
# when asked for `format=webp`, and some i.redd.it uploads.
ALLOWED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP")
MAX_PIXELS = 50_000_000  # decompression bombs are refused from the header, before decoding
MAX_SIDE = 448  # loaded images are thumbnailed to fit MAX_SIDE x MAX_SIDE


class ImageLoadError(Exception):
    """Why one image could not be loaded; the message is the recorded reason."""


@dataclass(frozen=True)
class LoaderConfig:
    timeout_seconds: float = 10.0  # connect and each read
    deadline_seconds: float = 30.0  # a whole download, redirects included
    max_bytes: int = 20 * 1024 * 1024
    allow_http: bool = True
    user_agent: str = "zipp-assets/0.1 (research pipeline)"


class ImageLoader:
    """Loads images by URL. `address_policy` says which hosts may be fetched from: the public
    internet only, unless code (a test with a local server) passes another policy object."""

    def __init__(self, cache_dir: Path, allowed_file_roots: list[Path], config: LoaderConfig = LoaderConfig(),
                 address_policy: AddressPolicy = PUBLIC_INTERNET):
        self.cache_dir = Path(cache_dir)
        self.allowed_roots = [Path(r).resolve() for r in allowed_file_roots]
        self.config = config
        self.address_policy = address_policy

    def load(self, url: str) -> Image.Image:
        """The decoded RGB thumbnail (see MAX_SIDE), or ImageLoadError with the reason."""
        try:
            return self._load(url)
        except ImageLoadError:
            raise
        except Exception as exc:  # untrusted input can fail anywhere: a reason, recorded once, never a crash loop
            raise ImageLoadError(f"load error: {type(exc).__name__}") from None

    def _load(self, url: str) -> Image.Image:
        cached = image_cache_path(self.cache_dir, url)
        if cached.is_file():
            return self._decode(self._read_file(cached))
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme == "file":
            data = self._read_file(self._safe_file_path(parts.path))
        elif scheme in ("http", "https"):
            if not self.config.allow_http:
                raise ImageLoadError("http fetching disabled")
            data = self._fetch(url)
            self._store(cached, data)
        else:
            raise ImageLoadError(f"unsupported scheme {scheme!r}")
        return self._decode(data)

    def _safe_file_path(self, raw_path: str) -> Path:
        path = Path(unquote(raw_path))
        if not path.is_absolute():
            raise ImageLoadError("unsafe path: file URLs must be absolute")
        resolved = path.resolve()
        if not any(resolved == root or root in resolved.parents for root in self.allowed_roots):
            raise ImageLoadError("unsafe path: outside the allowed image folders")
        return resolved

    def _read_file(self, path: Path) -> bytes:
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise ImageLoadError(f"missing file ({exc.strerror})") from None
        if size > self.config.max_bytes:
            raise ImageLoadError(f"too large: {size} bytes > {self.config.max_bytes}")
        return path.read_bytes()

    def _fetch(self, url: str) -> bytes:
        limits = FetchLimits(timeout_seconds=self.config.timeout_seconds, deadline_seconds=self.config.deadline_seconds,
                             max_bytes=self.config.max_bytes, user_agent=self.config.user_agent)
        try:
            return fetch(url, limits, self.address_policy)
        except FetchError as exc:
            raise ImageLoadError(str(exc)) from None

    def _store(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    @staticmethod
    def _decode(data: bytes) -> Image.Image:
        try:
            with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as probe:
                width, height = probe.size
                if width * height > MAX_PIXELS:
                    raise ImageLoadError(f"too large: {width}x{height} pixels")
                probe.verify()  # structure and checksums, without decoding pixels
            with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as image:
                image.draft("RGB", (MAX_SIDE, MAX_SIDE))  # JPEG: decode at 1/2..1/8 scale, never the full frame
                image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BILINEAR)
                return image.convert("RGB")
        except ImageLoadError:
            raise
        except Image.DecompressionBombError:
            raise ImageLoadError("too large: decompression bomb") from None
        except UnidentifiedImageError:  # empty, junk, or a format outside ALLOWED_FORMATS
            raise ImageLoadError("not an image: not JPEG, PNG, GIF or WebP") from None
        except Exception as exc:  # noqa: BLE001 - any decoder failure is the image's fault
            raise ImageLoadError(f"not an image: {type(exc).__name__}") from None
