"""What a file that is not the expected format holds, guessed from its first bytes (nothing is parsed)."""
from __future__ import annotations

from pathlib import Path

_MAGIC = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"PK\x03\x04", "a zip archive"),
    (b"\x1f\x8b", "a gzip archive"),
)
HEAD_BYTES = 512


def head(path: Path, size: int = HEAD_BYTES) -> bytes:
    """The first ``size`` bytes of ``path``."""
    with open(path, "rb") as f:
        return f.read(size)


def describe(data: bytes) -> str:
    """A short phrase for what ``data`` (a file's first bytes) looks like, e.g. "a PNG image"."""
    if not data:
        return "an empty file"
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "a WebP image"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:  # a multi-byte character cut at the end still counts as text
        text = data[:err.start].decode("utf-8") if err.start >= len(data) - 3 else ""
    if text and all(c.isprintable() or c in "\r\n\t" for c in text):
        return "text"
    return "bytes of no known format"
