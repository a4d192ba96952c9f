"""Loading the images users posted: through the cache, from `file` and `http(s)` sources, safely.

URLs come from Reddit and are untrusted. Every failure is a recorded reason, never a crash:
a URL that is not http(s)/file, a file outside the allowed roots, a host on a private network
(unless allowed), a dead link (HTTP status, unreachable, timeout), a response that is not an
image or larger than the size limit, and bytes that do not decode as an image. Fetched bytes are
cached under the URL's hash; the URL text never becomes a path.
"""

from __future__ import annotations

import io
import ipaddress
import os
import socket
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from PIL import Image

from zipp_assets.reddit.image_urls import image_cache_path

MAX_PIXELS = 50_000_000  # decompression bombs are refused before decoding


class ImageLoadError(Exception):
    """Why one image could not be loaded; the message is the recorded reason."""


@dataclass(frozen=True)
class LoaderConfig:
    timeout_seconds: float = 10.0
    max_bytes: int = 20 * 1024 * 1024
    allow_http: bool = True
    allow_private_hosts: bool = False  # production fetches from the public internet only
    user_agent: str = "zipp-assets/0.1 (research pipeline)"


class ImageLoader:
    def __init__(self, cache_dir: Path, allowed_file_roots: list[Path], config: LoaderConfig = LoaderConfig()):
        self.cache_dir = Path(cache_dir)
        self.allowed_roots = [Path(r).resolve() for r in allowed_file_roots]
        self.config = config

    def load(self, url: str) -> Image.Image:
        """The decoded RGB image, or ImageLoadError with the reason."""
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
            data = self._fetch(url, parts.hostname or "")
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

    def _check_host(self, host: str) -> None:
        if self.config.allow_private_hosts:
            return
        try:
            addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
        except (socket.gaierror, UnicodeError) as exc:
            raise ImageLoadError(f"unreachable: cannot resolve host ({exc})") from None
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%")[0])
            if ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_multicast:
                raise ImageLoadError("unsafe host: resolves to a private or local address")

    def _fetch(self, url: str, host: str) -> bytes:
        self._check_host(host)
        request = urllib.request.Request(url, headers={"User-Agent": self.config.user_agent})
        opener = urllib.request.build_opener(_SafeRedirects(self._check_host))
        try:
            with opener.open(request, timeout=self.config.timeout_seconds) as response:
                content_type = (response.headers.get("Content-Type") or "").split(";")[0].strip().lower()
                if not content_type.startswith("image/"):
                    raise ImageLoadError(f"not an image: content type {content_type or 'missing'!r}")
                length = response.headers.get("Content-Length")
                if length and length.isdigit() and int(length) > self.config.max_bytes:
                    raise ImageLoadError(f"too large: {length} bytes > {self.config.max_bytes}")
                data = response.read(self.config.max_bytes + 1)
        except ImageLoadError:
            raise
        except urllib.error.HTTPError as exc:
            if 300 <= exc.code < 400:  # urllib refused to follow it (to ftp/file, say)
                raise ImageLoadError(f"unsafe redirect: not followed (HTTP {exc.code})") from None
            raise ImageLoadError(f"dead link: HTTP {exc.code}") from None
        except (TimeoutError, socket.timeout):
            raise ImageLoadError(f"dead link: timeout after {self.config.timeout_seconds}s") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, (TimeoutError, socket.timeout)):
                raise ImageLoadError(f"dead link: timeout after {self.config.timeout_seconds}s") from None
            raise ImageLoadError(f"dead link: unreachable ({reason})") from None
        if len(data) > self.config.max_bytes:
            raise ImageLoadError(f"too large: more than {self.config.max_bytes} bytes")
        return data

    def _store(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    @staticmethod
    def _decode(data: bytes) -> Image.Image:
        try:
            with Image.open(io.BytesIO(data)) as probe:
                width, height = probe.size
                if width * height > MAX_PIXELS:
                    raise ImageLoadError(f"too large: {width}x{height} pixels")
                probe.verify()
            image = Image.open(io.BytesIO(data))
            image.load()
            return image.convert("RGB")
        except ImageLoadError:
            raise
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise ImageLoadError(f"not an image: {type(exc).__name__}") from None


class _SafeRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to http(s) hosts that pass the same host check as the first request."""

    def __init__(self, check_host):
        super().__init__()
        self.check_host = check_host

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        target = urlsplit(newurl)
        if target.scheme.lower() not in ("http", "https"):
            raise ImageLoadError("unsafe redirect: to a non-http scheme")
        self.check_host(target.hostname or "")
        return super().redirect_request(req, fp, code, msg, headers, newurl)
