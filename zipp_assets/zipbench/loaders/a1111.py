"""The AUTOMATIC1111 parameter block ("Steps: 30, Sampler: Euler a, CFG scale: 7, Seed: 42, Size: 512x768,
Model: ...") that gallery scrapes leave inside a text field (most often the negative prompt) when they copy
the image's whole generation text into one field without parsing it.

`split_parameters(text)` -> (the text before the block, {name: value}); names are as written ("CFG scale").
A quoted value ("Lora hashes: \"a: 1, b: 2\"") keeps its commas. Text without a block comes back whole
with an empty dict.
"""

from __future__ import annotations

import re

# The block starts with "Steps: <n>," on a line of its own or after the text, as A1111 writes it.
_BLOCK = re.compile(r"(?:^|\n|,\s*|\s)(Steps:\s*\d+\s*,.*)$", re.DOTALL)
_PARAM = re.compile(r'\s*([A-Za-z][\w \-/]*?):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')
_NEGATIVE_LABEL = re.compile(r"^\s*Negative prompt:\s*", re.IGNORECASE)


def split_parameters(text: str) -> tuple[str, dict[str, str]]:
    match = _BLOCK.search(text)
    if match is None:
        return _NEGATIVE_LABEL.sub("", text), {}
    block = " ".join(match.group(1).split())
    params: dict[str, str] = {}
    for name, value in _PARAM.findall(block):
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1].replace('\\"', '"')
        params.setdefault(name.strip(), value)
    before = text[: match.start(1)].rstrip(" ,\n\r\t")
    return _NEGATIVE_LABEL.sub("", before), params


SIZE = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")


def parse_size(value: str | None) -> tuple[int, int] | None:
    """'512x768' -> (512, 768); anything else -> None."""
    match = SIZE.match(value or "")
    return (int(match.group(1)), int(match.group(2))) if match else None
