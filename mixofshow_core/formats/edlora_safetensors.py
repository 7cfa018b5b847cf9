"""The pack's native concept format: one safetensors file with versioned metadata.

Tensors:
    embedding.<i>                            [L, D]  word i (order given by metadata ``words``); one text encoder
    embedding.<encoder>.<i>                  [L, D_e] word i for each text encoder (version 2, e.g. SDXL's
                                                      embedding.clip_l.<i> [11, 768], embedding.clip_g.<i> [11, 1280])
    text_encoder.<module>.lora_down.weight   [r, in]    diffusers text-encoder module names
    text_encoder.<module>.lora_up.weight     [out, r]
    text_encoder_2.<module>.lora_*.weight               the second text encoder (SDXL's CLIP-G), version 2
    unet.<module>.lora_down.weight           [r, in]    diffusers UNet module names
    unet.<module>.lora_up.weight             [out, r]
Metadata (strings): mixofshow.format = "edlora", mixofshow.format_version = "1" (one text encoder) or "2",
mixofshow.base_family ("sd1", "sdxl"), mixofshow.layer_count (L rows: one per UNet attention block),
mixofshow.text_width (D), mixofshow.words (JSON list), mixofshow.rank, mixofshow.alpha, mixofshow.name,
mixofshow.word_groups (JSON list of word lists; several groups = a bundle of fused concepts); optional
mixofshow.orthogonal (JSON object: basis, slot, scale, rank) for Orthogonal Adaptation concepts. Version 2 adds
mixofshow.text_encoders (JSON list of [name, width], row order) and mixofshow.layer_granularity
("attention_block": one row per SpatialTransformer; its transformer blocks share it).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open

from ..concept import TEXT_ENCODER_2, Concept
from ..errors import ConceptFileError
from ..files import save_safetensors_atomic
from ..lora import LoRAPair
from . import file_kinds

FORMAT = "edlora"
FORMAT_VERSION = 2
GRANULARITY = "attention_block"
_PARTS = ("text_encoder", "text_encoder_2", "unet")
_AGAIN = "Copy or download the file again, or export it again."
_CHOOSE = "Choose the concept file (.safetensors or .pth) that ED-LoRA training or export wrote."


def write(concept: Concept, path: str | os.PathLike[str]) -> Path:
    """Save ``concept`` atomically; reading it back gives identical tensors and fields."""
    if concept.triggers:
        raise ConceptFileError(
            f"'{concept.name}' is a standard LoRA used as a concept (trigger {concept.triggers}); it stays in its own "
            "LoRA file and is not saved as an ED-LoRA concept. Save a fusion result with the LoRA export of Gradient "
            "Fusion (lora_filename) instead.")
    tensors: dict[str, torch.Tensor] = {}
    several = len(concept.text_encoders) > 1
    for i, word in enumerate(concept.words):
        if several:
            tensors.update({f"embedding.{name}.{i}": rows.contiguous()
                            for name, rows in concept.encoder_rows(word).items()})
        else:
            tensors[f"embedding.{i}"] = concept.embeddings[word]
    for module, pair in concept.text_lora.items():
        key = module if module.startswith(TEXT_ENCODER_2) else f"text_encoder.{module}"
        tensors[f"{key}.lora_down.weight"] = pair.down
        tensors[f"{key}.lora_up.weight"] = pair.up
    for module, pair in concept.unet_lora.items():
        tensors[f"unet.{module}.lora_down.weight"] = pair.down
        tensors[f"unet.{module}.lora_up.weight"] = pair.up
    metadata = {
        "mixofshow.format": FORMAT,
        "mixofshow.format_version": str(FORMAT_VERSION if several else 1),  # version 1 readers keep SD1 files
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
    if several:
        metadata["mixofshow.text_encoders"] = json.dumps([list(e) for e in concept.text_encoders])
        metadata["mixofshow.layer_granularity"] = GRANULARITY
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
        encoders = [(str(n), int(w)) for n, w in json.loads(meta.get("mixofshow.text_encoders", "[]"))]
    except (KeyError, ValueError, TypeError) as err:
        raise ConceptFileError(
            f"{path.name}: metadata 'mixofshow.words', 'mixofshow.alpha', 'mixofshow.orthogonal' or "
            "'mixofshow.text_encoders' is malformed."
        ) from err
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise ConceptFileError(
            f"{path.name}: metadata 'mixofshow.words' must be a JSON list of strings, found {words!r}.")
    granularity = meta.get("mixofshow.layer_granularity", GRANULARITY)
    if granularity != GRANULARITY:
        raise ConceptFileError(
            f"{path.name} has layer granularity {granularity!r}; this pack reads {GRANULARITY!r} (one row per UNet "
            "attention block). Update the Mix-of-Show pack.")
    embeddings = {word: _embedding(path, tensors, i, word, encoders) for i, word in enumerate(words)}
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
        text_lora={**pairs["text_encoder"], **{TEXT_ENCODER_2 + m: p for m, p in pairs["text_encoder_2"].items()}},
        unet_lora=pairs["unet"],
        alpha=alpha,
        name=meta.get("mixofshow.name", ""),
        base_family=meta.get("mixofshow.base_family", ""),
        word_groups=groups,
        orthogonal=orthogonal if isinstance(orthogonal, dict) else {},
        text_encoders=encoders,
    )
    for key, value in (("mixofshow.layer_count", concept.layer_count), ("mixofshow.text_width", concept.text_width)):
        if _meta_int(path, meta, key) != value:
            raise ConceptFileError(f"{path.name}: metadata {key}={meta[key]} but the embeddings say {value}.")
    return concept


def _embedding(path: Path, tensors: dict[str, torch.Tensor], i: int, word: str,
               encoders: list[tuple[str, int]]) -> torch.Tensor:
    """Word i's rows [L, D], taken out of ``tensors``: one tensor, or one per text encoder side by side."""
    keys = [f"embedding.{name}.{i}" for name, _ in encoders] if len(encoders) > 1 else [f"embedding.{i}"]
    missing = [k for k in keys if k not in tensors]
    if missing:
        raise ConceptFileError(f"{path.name}: word {word!r} has no tensor {missing}.")
    parts = [tensors.pop(k) for k in keys]
    wrong = [f"{k} {list(p.shape)} (expected width {w})" for k, p, (_, w) in zip(keys, parts, encoders)
             if p.dim() != 2 or p.shape[1] != w]
    if len(encoders) > 1 and wrong:
        raise ConceptFileError(f"{path.name}: embeddings do not match mixofshow.text_encoders: {wrong}.")
    if len({p.shape[0] for p in parts}) != 1:
        raise ConceptFileError(f"{path.name}: word {word!r} has a different row count per text encoder "
                               f"({[list(p.shape) for p in parts]}).")
    return torch.cat(parts, dim=1)  # (L, D)


def _pairs(path: Path, part: str, found: dict[str, dict[str, torch.Tensor]]) -> dict[str, LoRAPair]:
    half = [m for m, f in found.items() if set(f) != {"down", "up"}]
    if half:
        raise ConceptFileError(f"{path.name}: LoRA modules missing their down or up half: {sorted(half)[:12]}.")
    return {m: LoRAPair.from_factors(f["down"], f["up"], f"{part}.{m}.lora_down.weight", f"{part}.{m}.lora_up.weight")
            for m, f in found.items()}
