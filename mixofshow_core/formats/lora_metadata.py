"""What a standard LoRA file says about itself: trigger phrases and the base model it was trained for.

Read from the safetensors header only (no tensor is loaded, nothing is unpickled). Sources, in order of trust:
* ``modelspec.trigger_phrase`` (Stability's model spec, written by kohya sd-scripts and others);
* kohya's dataset folders ``<repeats>_<trigger>`` (``ss_tag_frequency`` keys, e.g. ``"10_ohwx woman"``), the
  convention that names the trigger in the folder;
* the caption tags by frequency (``ss_tag_frequency``: folder -> {tag: count}); the most frequent one is the
  trigger when nothing above names it (anime captions often start with it, but also with "1girl": the node
  lists the tags so the user can pick).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from safetensors import safe_open

from ..errors import ConceptFileError
from . import file_kinds

_FOLDER = re.compile(r"^\d+_(?P<name>.+)$")
_FAMILY_HINTS = (("sdxl", "sdxl"), ("stable-diffusion-xl", "sdxl"), ("sd_v1", "sd1"), ("stable-diffusion-v1", "sd1"),
                 ("sd_v2", "sd2"), ("stable-diffusion-v2", "sd2"), ("flux", "flux"), ("sd3", "sd3"))


@dataclass
class LoRAInfo:
    """Attributes:
        triggers: the suggested trigger phrases (possibly empty).
        source: where they came from ("modelspec.trigger_phrase", "dataset folder", "most frequent tag", "").
        tags: every caption tag with its count over the dataset, most frequent first.
        base_family: "sd1", "sdxl", ... as the metadata names it, or "" when it does not.
    """

    triggers: list[str] = field(default_factory=list)
    source: str = ""
    tags: list[tuple[str, int]] = field(default_factory=list)
    base_family: str = ""

    def summary(self, limit: int = 12) -> str:
        found = f"trigger {', '.join(map(repr, self.triggers))} (from {self.source})" if self.triggers else \
            "no trigger in the file's metadata"
        tags = ", ".join(f"{t} ({n})" for t, n in self.tags[:limit])
        return found + (f"; caption tags: {tags}" if tags else "; no caption tags recorded")


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The safetensors header metadata of a LoRA file; ConceptFileError for anything that is not safetensors."""
    p = Path(path)
    if p.suffix.lower() != ".safetensors":
        raise ConceptFileError(
            f"{p.name}: standard LoRAs are read from .safetensors files only (found '{p.suffix}', which would need "
            "unpickling). Convert it to safetensors with the tool that made it, then pick the new file.")
    try:
        with safe_open(str(p), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as err:  # safetensors raises its own error types for every header problem
        raise ConceptFileError(
            f"{p.name} is not a readable safetensors file (it looks like {file_kinds.describe(file_kinds.head(p))}; "
            f"{str(err).splitlines()[0][:120]}). Download or export it again.") from err


def _tag_counts(metadata: dict[str, str]) -> tuple[list[str], list[tuple[str, int]]]:
    try:
        folders = json.loads(metadata.get("ss_tag_frequency", "{}")) or {}
    except json.JSONDecodeError:
        return [], []
    counts: dict[str, int] = {}
    for tags in folders.values() if isinstance(folders, dict) else []:
        for tag, n in (tags.items() if isinstance(tags, dict) else []):
            tag = " ".join(str(tag).split())
            if tag:
                counts[tag] = counts.get(tag, 0) + int(n)
    return list(folders) if isinstance(folders, dict) else [], sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def base_family(metadata: dict[str, str]) -> str:
    """The family the metadata names ("sd1", "sdxl", "sd2", ...), or "" when it names none."""
    text = " ".join(metadata.get(k, "") for k in ("ss_base_model_version", "modelspec.architecture")).lower()
    return next((family for hint, family in _FAMILY_HINTS if hint in text), "")


def describe_lora(metadata: dict[str, str]) -> LoRAInfo:
    """Triggers, tags and base family from a LoRA's metadata (see the module docstring for the order)."""
    folders, tags = _tag_counts(metadata)
    info = LoRAInfo(tags=tags, base_family=base_family(metadata))
    phrase = metadata.get("modelspec.trigger_phrase", "").strip()
    named = [m["name"].strip() for m in map(_FOLDER.match, folders) if m]
    if phrase:
        info.triggers, info.source = split_phrases(phrase), "modelspec.trigger_phrase"
    elif named:
        info.triggers, info.source = list(dict.fromkeys(named)), "dataset folder"
    elif tags:
        info.triggers, info.source = [tags[0][0]], "most frequent tag"
    return info


def split_phrases(text: str) -> list[str]:
    """Comma-separated trigger phrases, white space normalised, empties and repeats dropped."""
    return list(dict.fromkeys(p for p in (" ".join(part.split()) for part in text.split(",")) if p))
