"""Which URLs of a submission are images the user posted, and where each is cached.

Rules, in order of preference (the first that yields images wins, so the same picture is not
counted twice through its preview):
1. gallery: `media_metadata` items (ordered by `gallery_data` when present) that are valid
   still images; the URL is the item's source `s.u` (HTML entities decoded) or, without one,
   the `i.redd.it` URL built from the media id and MIME type;
2. direct: the post URL when `post_hint == "image"` or its path ends in an image extension;
3. preview: for `post_hint == "image"` posts whose URL is not itself an image file (an imgur page,
   say), the `preview` source URLs, HTML entities decoded;
4. crosspost: the same rules applied to the crossposted parent.
Link posts with article thumbnails are not image posts: their preview is not the user's picture.
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".webp")
# Known image hosts: their URLs are images even without an extension when the post says so.
IMAGE_HOSTS = frozenset(
    {
        "i.redd.it",
        "preview.redd.it",
        "i.imgur.com",
        "i.reddituploads.com",
        "pbs.twimg.com",
        "i.pinimg.com",
        "upload.wikimedia.org",
    }
)
_MIME_EXTENSIONS = {"image/jpg": "jpg", "image/jpeg": "jpg", "image/png": "png", "image/gif": "gif", "image/webp": "webp"}


def normalize_url(url: object) -> str | None:
    """Decode HTML entities and keep only absolute http(s) URLs with a host."""
    if not isinstance(url, str):
        return None
    url = html.unescape(url).strip()
    if not url or any(ch.isspace() for ch in url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return url


def is_image_file_url(url: str) -> bool:
    path = urlsplit(url).path.lower()
    return path.endswith(IMAGE_EXTENSIONS)


def is_image_host(url: str) -> bool:
    return (urlsplit(url).hostname or "").lower() in IMAGE_HOSTS


def _gallery_urls(media_metadata: Any, gallery_data: Any) -> list[str]:
    if not isinstance(media_metadata, Mapping):
        return []
    order: list[str] = []
    if isinstance(gallery_data, Mapping) and isinstance(gallery_data.get("items"), list):
        order = [item.get("media_id") for item in gallery_data["items"] if isinstance(item, Mapping)]
    order = [m for m in order if isinstance(m, str) and m in media_metadata] or list(media_metadata)
    urls = []
    for media_id in order:
        item = media_metadata.get(media_id)
        if not isinstance(item, Mapping) or item.get("status", "valid") != "valid":
            continue
        if item.get("e") != "Image":  # AnimatedImage, RedditVideo: not a still image
            continue
        source = item.get("s") if isinstance(item.get("s"), Mapping) else {}
        url = normalize_url(source.get("u"))
        if url is None:
            ext = _MIME_EXTENSIONS.get(str(item.get("m", "")).lower())
            if ext and isinstance(media_id, str) and media_id.isalnum():
                url = f"https://i.redd.it/{media_id}.{ext}"
        if url:
            urls.append(url)
    return urls


def _preview_urls(preview: Any) -> list[str]:
    if not isinstance(preview, Mapping) or not isinstance(preview.get("images"), list):
        return []
    urls = []
    for image in preview["images"]:
        if isinstance(image, Mapping) and isinstance(image.get("source"), Mapping):
            url = normalize_url(image["source"].get("url"))
            if url:
                urls.append(url)
    return urls


def extract_image_urls(post: Mapping[str, Any], _depth: int = 0) -> list[tuple[str, str]]:
    """(url, source) pairs of the images a submission carries; source names the rule used."""
    gallery = _gallery_urls(post.get("media_metadata"), post.get("gallery_data"))
    if gallery:
        return _dedupe((u, "gallery") for u in gallery)
    url = normalize_url(post.get("url"))
    post_hint = post.get("post_hint")
    if url and not post.get("is_self") and not urlsplit(url).path.lower().endswith(".gifv"):
        if is_image_file_url(url) or (post_hint == "image" and is_image_host(url)):
            return [(url, "direct")]
    if post_hint == "image":
        preview = _preview_urls(post.get("preview"))
        if preview:
            return _dedupe((u, "preview") for u in preview)
    parents = post.get("crosspost_parent_list")
    if _depth == 0 and isinstance(parents, list) and parents and isinstance(parents[0], Mapping):
        return _dedupe((u, "crosspost") for u, _ in extract_image_urls(parents[0], _depth=1))
    return []


def _dedupe(pairs) -> list[tuple[str, str]]:
    seen: set[str] = set()
    out = []
    for url, source in pairs:
        if url not in seen:
            seen.add(url)
            out.append((url, source))
    return out


def url_cache_key(url: str) -> str:
    """Stable file name of an image URL in the cache (hex SHA-256 of the URL)."""
    return hashlib.sha256(url.encode("utf-8")).hexdigest()


def image_cache_path(cache_dir: Path, url: str) -> Path:
    """Where an image URL is cached: `<cache>/<2 hex>/<sha256>`, never a path taken from the URL."""
    key = url_cache_key(url)
    return Path(cache_dir) / key[:2] / key
