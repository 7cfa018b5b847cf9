"""Concept file formats: a registry of readers tried in order, and the writers by name.

Each reader module has ``read(path) -> Concept | None``; ``None`` means "not my format", an exception
means "my format, but broken". This mirrors ComfyUI's weight-adapter registry.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..concept import Concept
from ..errors import ConceptFileError
from . import edlora_safetensors, kohya, mixofshow_pth

READERS = [edlora_safetensors, mixofshow_pth]
WRITERS = {"edlora": edlora_safetensors.write, "kohya_lora": kohya.write}
CONCEPT_EXTENSIONS = (".safetensors", ".pth", ".pt", ".ckpt")


def load_concept(path: str | os.PathLike[str]) -> Concept:
    """Read a concept file in any supported format."""
    p = Path(path)
    if not p.is_file():
        raise ConceptFileError(f"Concept file not found: {p}. Put concept files in models/edloras.")
    for reader in READERS:
        concept = reader.read(p)
        if concept is not None:
            return concept
    raise ConceptFileError(
        f"{p.name} is not an ED-LoRA concept file. Expected a Mix-of-Show safetensors file "
        "(metadata 'mixofshow.format' = 'edlora') or an original Mix-of-Show checkpoint (.pth with "
        "params/new_concept_embedding). A plain LoRA belongs in models/loras with LoraLoader."
    )


__all__ = ["CONCEPT_EXTENSIONS", "READERS", "WRITERS", "load_concept"]
