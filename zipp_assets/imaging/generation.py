"""Rules every `ImageGenerator` backend shares: what a valid request is, and how a prompt is cut to
the text encoder's limit (explicitly, so a caller can record it, never silently inside a pipeline)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

MAX_SEED = 2**63 - 1
_WORD_END = re.compile(r"\S+")


def check_request(prompts: Sequence[str], seeds: Sequence[int]) -> tuple[list[str], list[int]]:
    """Prompts and seeds as lists, one seed per prompt, or a ValueError that says what is wrong."""
    if isinstance(prompts, str):
        raise ValueError("prompts must be a sequence of strings, not one string")
    prompts, seeds = list(prompts), list(seeds)
    if len(prompts) != len(seeds):
        raise ValueError(f"one seed per prompt: got {len(prompts)} prompts and {len(seeds)} seeds")
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise ValueError(f"prompt {i} is a {type(prompt).__name__}, not a string")
    checked = []
    for i, seed in enumerate(seeds):
        if isinstance(seed, bool) or not hasattr(seed, "__index__"):
            raise ValueError(f"seed {i} is a {type(seed).__name__}, not an integer")
        if not 0 <= int(seed) <= MAX_SEED:
            raise ValueError(f"seed {i} is {int(seed)}, outside 0..2**63-1")
        checked.append(int(seed))
    return prompts, checked


def fit_by_words(prompt: str, count_tokens: Callable[[str], int], limit: int | None) -> tuple[str, bool]:
    """The longest prefix of `prompt` that ends at a word boundary and counts at most `limit` tokens,
    and whether anything was cut. A first word longer than the limit on its own is cut by character."""
    if limit is None or count_tokens(prompt) <= limit:
        return prompt, False
    ends = [m.end() for m in _WORD_END.finditer(prompt)]
    fits = _longest_fitting(ends, lambda end: count_tokens(prompt[:end]) <= limit)
    if fits is None:
        fits = _longest_fitting(list(range(1, len(prompt) + 1)), lambda end: count_tokens(prompt[:end]) <= limit)
    return prompt[: fits or 0].rstrip(), True


def _longest_fitting(ends: list[int], fits: Callable[[int], bool]) -> int | None:
    """The largest end that fits, by bisection (token counts grow with the prefix)."""
    low, high, best = 0, len(ends) - 1, None
    while low <= high:
        middle = (low + high) // 2
        if fits(ends[middle]):
            best, low = ends[middle], middle + 1
        else:
            high = middle - 1
    return best
