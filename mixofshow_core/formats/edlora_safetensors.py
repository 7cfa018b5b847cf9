"""The pack's native concept format: one safetensors file with versioned metadata.

Tensors:
    embedding.<i>                          [L, D]  word i (order given by metadata ``words``)
    text_encoder.<module>.lora_down.weight [r, in]    diffusers text-encoder module names
    text_encoder.<module>.lora_up.weight   [out, r]
    unet.<module>.lora_down.weight         [r, in]    diffusers UNet module names
    unet.<module>.lora_up.weight           [out, r]
Metadata (strings): mixofshow.format = "edlora", mixofshow.format_version = "1",
mixofshow.base_family, mixofshow.layer_count, mixofshow.text_width, mixofshow.words (JSON list),
mixofshow.rank, mixofshow.alpha, mixofshow.name, mixofshow.word_groups (JSON list of word lists;
several groups = a bundle of fused concepts); optional mixofshow.orthogonal (JSON object: basis, slot,
scale, rank) for Orthogonal Adaptation concepts.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open

from ..concept import Concept
from ..errors import ConceptFileError
from ..files import save_safetensors_atomic
from ..lora import LoRAPair
from . import file_kinds

FORMAT = "edlora"
FORMAT_VERSION = 1
_PARTS = ("text_encoder", "unet")
_AGAIN = "Copy or download the file again, or export it again."
_CHOOSE = "Choose the concept file (.safetensors or .pth) that ED-LoRA training or export wrote."


def write(concept: Concept, path: str | os.PathLike[str]) -> Path:
    """Save ``concept`` atomically; reading it back gives identical tensors and fields."""
    tensors: dict[str, torch.Tensor] = {}
    for i, word in enumerate(concept.words):
        tensors[f"embedding.{i}"] = concept.embeddings[word]
    for part, loras in (("text_encoder", concept.text_lora), ("unet", concept.unet_lora)):
        for module, pair in loras.items():
            tensors[f"{part}.{module}.lora_down.weight"] = pair.down
            tensors[f"{part}.{module}.lora_up.weight"] = pair.up
    metadata = {
        "mixofshow.format": FORMAT,
        "mixofshow.format_version": str(FORMAT_VERSION),
        "mixofshow.base_family": concept.base_family,
        "mixofshow.layer_count": str(concept.layer_count),
        "mixofshow.text_width": str(concept.text_width),
        "mixofshow.words": json.dumps(concept.words),
        "mixofshow.rank": str(concept.rank),
        "mixofshow.alpha": repr(float(concept.alpha)),
        "mixofshow.name": concept.name,
        "mixofshow.word_groups": json.dumps(concept.word_groups),
    }
    if concept.orthogonal:
        metadata["mixofshow.orthogonal"] = json.dumps(concept.orthogonal, sort_keys=True)
    return save_safetensors_atomic(tensors, path, metadata)


def _unreadable(path: Path) -> str:
    """What is wrong with a file safetensors refused, from its header bytes (one sentence each: found, to do)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        start = f.read(9)
        if len(start) < 9 or start[8:9] != b"{":  # 8-byte header length, then a JSON object
            return (f"{path.name} is not a safetensors file: it holds {file_kinds.describe(file_kinds.head(path))}. "
                    f"{_CHOOSE}")
        header_size = int.from_bytes(start[:8], "little")
        if 8 + header_size > size:
            return (f"{path.name} is truncated: its header needs {header_size} bytes but the file ends after "
                    f"{size - 8}. {_AGAIN}")
        try:
            header = json.loads(b"{" + f.read(max(header_size - 1, 0)))
            ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
        except (ValueError, TypeError, KeyError, IndexError):
            return f"{path.name} is damaged: its header is not valid safetensors JSON. {_AGAIN}"
    needed = 8 + header_size + max(ends, default=0)
    if needed > size:
        return f"{path.name} is truncated: it has {size} of its {needed} bytes. {_AGAIN}"
    return f"{path.name} is damaged: its header and tensor data disagree. {_AGAIN}"


def read(path: Path) -> Concept | None:
    """Read a native concept file; None when the file is not one (wrong suffix or no format tag)."""
    if path.suffix.lower() != ".safetensors":
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("mixofshow.format") != FORMAT:
                return None
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except ConceptFileError:
        raise
    except Exception as err:  # safetensors raises its own error types for damaged headers/data
        raise ConceptFileError(_unreadable(path)) from err
    return _from_tensors(path, meta, tensors)


def _meta_int(path: Path, meta: dict[str, str], key: str) -> int:
    try:
        return int(meta[key])
    except (KeyError, ValueError) as err:
        raise ConceptFileError(f"{path.name}: metadata '{key}' missing or not an integer ({meta.get(key)!r}).") from err


def _from_tensors(path: Path, meta: dict[str, str], tensors: dict[str, torch.Tensor]) -> Concept:
    version = _meta_int(path, meta, "mixofshow.format_version")
    if version > FORMAT_VERSION:
        raise ConceptFileError(
            f"{path.name} has format version {version}; this pack reads up to {FORMAT_VERSION}. "
            "Update the Mix-of-Show pack."
        )
    try:
        words = json.loads(meta["mixofshow.words"])
        alpha = float(meta.get("mixofshow.alpha", "1.0"))
        groups = json.loads(meta.get("mixofshow.word_groups", "[]"))
        orthogonal = json.loads(meta.get("mixofshow.orthogonal", "{}"))
    except (KeyError, ValueError) as err:
        raise ConceptFileError(
            f"{path.name}: metadata 'mixofshow.words', 'mixofshow.alpha' or 'mixofshow.orthogonal' is malformed."
        ) from err
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise ConceptFileError(
            f"{path.name}: metadata 'mixofshow.words' must be a JSON list of strings, found {words!r}.")
    embeddings: dict[str, torch.Tensor] = {}
    for i, word in enumerate(words):
        key = f"embedding.{i}"
        if key not in tensors:
            raise ConceptFileError(f"{path.name}: word {word!r} has no tensor '{key}'.")
        embeddings[word] = tensors.pop(key)
    loras: dict[str, dict[str, dict[str, torch.Tensor]]] = {part: {} for part in _PARTS}
    unknown = []
    for key, value in tensors.items():
        part, _, rest = key.partition(".")
        for end, slot in ((".lora_down.weight", "down"), (".lora_up.weight", "up")):
            if part in loras and rest.endswith(end):
                loras[part].setdefault(rest[: -len(end)], {})[slot] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise ConceptFileError(
            f"{path.name}: unknown tensors {sorted(unknown)[:12]}; the file was not written by this pack.")
    pairs = {part: _pairs(path, part, found) for part, found in loras.items()}
    concept = Concept(
        words=words,
        embeddings=embeddings,
        text_lora=pairs["text_encoder"],
        unet_lora=pairs["unet"],
        alpha=alpha,
        name=meta.get("mixofshow.name", ""),
        base_family=meta.get("mixofshow.base_family", ""),
        word_groups=groups,
        orthogonal=orthogonal if isinstance(orthogonal, dict) else {},
    )
    for key, value in (("mixofshow.layer_count", concept.layer_count), ("mixofshow.text_width", concept.text_width)):
        if _meta_int(path, meta, key) != value:
            raise ConceptFileError(f"{path.name}: metadata {key}={meta[key]} but the embeddings say {value}.")
    return concept


def _pairs(path: Path, part: str, found: dict[str, dict[str, torch.Tensor]]) -> dict[str, LoRAPair]:
    half = [m for m, f in found.items() if set(f) != {"down", "up"}]
    if half:
        raise ConceptFileError(f"{path.name}: LoRA modules missing their down or up half: {sorted(half)[:12]}.")
    return {m: LoRAPair.from_factors(f["down"], f["up"], f"{part}.{m}.lora_down.weight", f"{part}.{m}.lora_up.weight")
            for m, f in found.items()}
