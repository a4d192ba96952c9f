"""What one LLM call asks for (`LLMRequest`) and what it gives back (`LLMResult`).

Messages are OpenAI chat messages. Untrusted text (Reddit comments, earlier model output) only ever
travels inside a message's `content`; a request refuses any other shape, so such text can never
become a role, a tool call or a file path. Images are bytes, or paths that are resolved under a
configured root (see `images_to_data_uris`) and never outside it.
"""

from __future__ import annotations

import base64
import mimetypes
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROLES = ("system", "user", "assistant")
MAX_IMAGE_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True)
class LLMRequest:
    id: str
    messages: tuple[dict[str, str], ...]
    images: tuple[bytes | str, ...] = ()
    json_schema: dict[str, Any] | None = None
    schema_name: str = "output"
    max_tokens: int = 512
    temperature: float = 0.0

    def __post_init__(self):
        messages = tuple(dict(m) for m in self.messages)
        if not messages:
            raise ValueError(f"request {self.id!r} has no messages")
        for message in messages:
            if set(message) != {"role", "content"}:
                raise ValueError(f"request {self.id!r}: a message has exactly 'role' and 'content', "
                                 f"got {sorted(message)}")
            if message["role"] not in ROLES:
                raise ValueError(f"request {self.id!r}: role {message['role']!r} is not one of {ROLES}")
            if not isinstance(message["content"], str):
                raise ValueError(f"request {self.id!r}: message content must be text")
        object.__setattr__(self, "messages", messages)
        object.__setattr__(self, "images", tuple(self.images))
        if self.max_tokens < 1:
            raise ValueError(f"request {self.id!r}: max_tokens must be >= 1")

    @classmethod
    def chat(cls, id: str, user: str, system: str | None = None, **kwargs) -> LLMRequest:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        return cls(id=id, messages=tuple(messages), **kwargs)


@dataclass(frozen=True)
class LLMResult:
    id: str
    ok: bool
    text: str = ""
    parsed: dict[str, Any] | None = None
    error: str | None = None  # the reason, when not ok
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    attempts: int = 0
    backend: str = ""
    model: str = ""
    finish_reason: str | None = None  # the server's: "stop", or "length" when max_tokens cut the output

    @classmethod
    def failure(cls, request: LLMRequest, reason: str, *, backend: str, model: str, **kwargs) -> LLMResult:
        return cls(id=request.id, ok=False, error=reason, backend=backend, model=model, **kwargs)


_MAGIC = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF8", "image/gif"))


def sniff_image_type(data: bytes) -> str | None:
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def image_bytes(image: bytes | str, image_root: str | Path | None) -> bytes:
    """The bytes of one image; a path must resolve (symlinks followed) inside `image_root`."""
    if isinstance(image, bytes):
        data = image
    else:
        if image_root is None:
            raise ValueError("image paths need an image_root; none is configured")
        root = Path(image_root).resolve()
        path = (root / image).resolve()
        if not path.is_relative_to(root):
            raise ValueError(f"image path {image!r} leaves the image root")
        if not path.is_file():
            raise ValueError(f"image {image!r} not found under the image root")
        if path.stat().st_size > MAX_IMAGE_BYTES:
            raise ValueError(f"image {image!r} is over {MAX_IMAGE_BYTES} bytes")
        data = path.read_bytes()
    if len(data) > MAX_IMAGE_BYTES:
        raise ValueError(f"an image is over {MAX_IMAGE_BYTES} bytes")
    return data


def images_to_data_uris(images: Sequence[bytes | str], image_root: str | Path | None) -> list[str]:
    uris = []
    for image in images:
        data = image_bytes(image, image_root)
        mime = sniff_image_type(data) or (mimetypes.guess_type(image)[0] if isinstance(image, str) else None)
        if mime is None or not mime.startswith("image/"):
            raise ValueError("an image is not PNG, JPEG, GIF or WebP")
        uris.append(f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}")
    return uris


def openai_messages(request: LLMRequest, image_root: str | Path | None = None) -> list[dict[str, Any]]:
    """The request's messages in OpenAI chat format; images join the last user message as data: URIs."""
    messages: list[dict[str, Any]] = [dict(m) for m in request.messages]
    if not request.images:
        return messages
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    if not users:
        raise ValueError("a request with images needs a user message to carry them")
    last = messages[users[-1]]
    parts: list[dict[str, Any]] = [{"type": "text", "text": last["content"]}]
    uris = images_to_data_uris(request.images, image_root)
    parts += [{"type": "image_url", "image_url": {"url": uri}} for uri in uris]
    messages[users[-1]] = {"role": "user", "content": parts}
    return messages
