"""Import of checkpoints written by the original Mix-of-Show code (spec §1.9).

Layout: ``{"params": {"new_concept_embedding": {word: [L, D]}, "text_encoder": {...}, "unet": {...}}}``.
LoRA keys are ``<module>.lora_down.weight`` / ``.lora_up.weight`` (main branch) or
``<module>_lora.down.weight`` / ``_lora.up.weight`` (research branch). The pickle is read with
``torch.load(weights_only=True)``: a file whose pickle holds code is refused, never executed.
The official alpha is not stored (it is 1.0 at training); it is imported as 1.0.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import torch

from ..concept import Concept
from ..errors import ConceptFileError
from ..lora import LoRAPair

SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
_LORA_ENDS = (
    (".lora_down.weight", "down"),
    (".lora_up.weight", "up"),
    ("_lora.down.weight", "down"),
    ("_lora.up.weight", "up"),
)


def read(path: Path) -> Concept | None:
    """Read an official checkpoint; None when the file is not a pickle checkpoint."""
    if path.suffix.lower() not in SUFFIXES:
        return None
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ConceptFileError(
            f"Refused to load {path.name}: its pickle asks to run code or build objects that are not plain "
            f"tensors ({err}). Mix-of-Show never executes code from a file. Re-save the checkpoint as "
            "plain tensors, or convert it to safetensors with a tool you trust."
        ) from err
    except Exception as err:
        raise ConceptFileError(
            f"{path.name} cannot be read as a PyTorch checkpoint ({type(err).__name__}: {err}). "
            "The file is corrupt or truncated; copy it again."
        ) from err
    params = data.get("params") if isinstance(data, dict) else None
    if not isinstance(params, dict) or "new_concept_embedding" not in params:
        raise ConceptFileError(
            f"{path.name} is a checkpoint but not a Mix-of-Show ED-LoRA one: expected "
            f"params/new_concept_embedding, found top-level keys "
            f"{sorted(data)[:8] if isinstance(data, dict) else type(data).__name__}."
        )
    unknown_parts = sorted(set(params) - {"new_concept_embedding", "text_encoder", "unet"})
    if unknown_parts:
        raise ConceptFileError(f"{path.name}: unknown sections under params: {unknown_parts}.")
    embeddings = {str(w): t.float() for w, t in params["new_concept_embedding"].items()}
    return Concept(
        words=list(embeddings),
        embeddings=embeddings,
        text_lora=_pairs(path, params.get("text_encoder", {}), "text_encoder"),
        unet_lora=_pairs(path, params.get("unet", {}), "unet"),
        alpha=1.0,
        name=path.stem,
    )


def _pairs(path: Path, tensors: dict[str, torch.Tensor], part: str) -> dict[str, LoRAPair]:
    found: dict[str, dict[str, torch.Tensor]] = {}
    unknown = []
    for key, value in tensors.items():
        for end, slot in _LORA_ENDS:
            if key.endswith(end):
                found.setdefault(key[: -len(end)], {})[slot] = value.float()
                break
        else:
            unknown.append(key)
    if unknown:
        raise ConceptFileError(
            f"{path.name}: unknown keys under params/{part}: {sorted(unknown)[:12]}. Expected "
            "'<module>.lora_down.weight'/'.lora_up.weight' or '<module>_lora.down.weight'/'_lora.up.weight'."
        )
    half = sorted(m for m, f in found.items() if set(f) != {"down", "up"})
    if half:
        raise ConceptFileError(
            f"{path.name}: LoRA modules missing their down or up half under params/{part}: {half[:12]}.")
    return {m: LoRAPair(down=f["down"], up=f["up"]) for m, f in found.items()}
