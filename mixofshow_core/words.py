"""Finding concept words in prompts (spec §1.2: binding is plain substitution of each word)."""
from __future__ import annotations

import re
from collections.abc import Iterable

_ANGLE_WORD = re.compile(r"<[^<>\s]+>")


def word_pattern(words: Iterable[str]) -> re.Pattern[str] | None:
    """Regex matching any of ``words``, longest first so no word shadows a longer one."""
    ordered = sorted(set(words), key=len, reverse=True)
    if not ordered:
        return None
    return re.compile("|".join(re.escape(w) for w in ordered))


def find_words(text: str, words: Iterable[str]) -> list[str]:
    """Concept words found in ``text``, in order of appearance (repeats kept)."""
    pattern = word_pattern(words)
    return [] if pattern is None else pattern.findall(text)


def unknown_angle_words(text: str, words: Iterable[str]) -> list[str]:
    """``<...>`` words in ``text`` that are not loaded concept words (likely typos)."""
    known = set(words)
    return sorted({w for w in _ANGLE_WORD.findall(text) if w not in known})


def substitute(text: str, replacements: dict[str, str]) -> str:
    """Replace each concept word by its replacement, padded with spaces so it stays a separate word."""
    pattern = word_pattern(replacements)
    if pattern is None:
        return text
    return pattern.sub(lambda m: f" {replacements[m.group(0)]} ", text)
