"""A standard LoRA (kohya, diffusers/PEFT, LyCORIS) as a concept for gradient fusion, read the host's own way.

The file's keys are mapped by ComfyUI's LoRA key maps for this MODEL and CLIP and its weights read by the host's
weight adapters, exactly as ``LoraLoader`` would apply them; a key the host would skip ("lora key not loaded")
fails here, listed. Each layer's change becomes:
* a ``LoRAPair`` when the adapter is a plain low-rank pair (kohya/diffusers/PEFT LoRA, LoCon on linear layers
  and 1x1 convolutions): ``up · (strength · alpha / rank)`` and ``down``, exact and small;
* otherwise (LoHa, LoKr, DoRA, Tucker or 3x3 LoCon, full diffs) a ``DenseDelta``: the host's
  ``calculate_weight`` on the layer's weight minus that weight, at the node's strength.
Biases and norm scales (ComfyUI's Train LoRA writes them: ``.diff_b``, 1-D ``.diff``) are computed the same way
and kept by parameter key in ``Concept.other_changes``.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import comfy.lora
import comfy.utils
import safetensors.torch
import torch

from ...mixofshow_core.concept import FAMILY_NAMES, TEXT_ENCODER_2, Concept
from ...mixofshow_core.errors import BaseModelMismatchError, KeyMappingError, first_of
from ...mixofshow_core.formats import lora_metadata
from ...mixofshow_core.lora import DenseDelta, LayerDelta, LoRAPair
from ..model_layout import concept_family, model_and_clip

try:
    from comfy import lora_convert
except ImportError:  # ComfyUI 2024-03
    lora_convert = None

_DIFFUSION = "diffusion_model."
_TEXT_ROOTS = {"clip_l.transformer.": "", "clip_g.transformer.": TEXT_ENCODER_2}
_NOT_LOADED = "lora key not loaded: "


class _NotLoaded(logging.Handler):
    """Collects the keys the host's LoRA loader reports it could not place."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.keys: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith(_NOT_LOADED):
            self.keys.append(message[len(_NOT_LOADED):])


@contextmanager
def _not_loaded_keys() -> Iterator[list[str]]:
    """The host logs every key ``comfy.lora.load_lora`` leaves unused (checked on 0.3.75 and 2024-03)."""
    handler = _NotLoaded()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler.keys
    finally:
        root.removeHandler(handler)


def _lora_weights(patch: Any) -> tuple | None:
    """(up, down, alpha, mid, dora_scale, reshape) of a plain LoRA patch: the host's LoRAAdapter (0.3.x) or its
    ("lora", weights) tuple (2024-03); None for any other adapter."""
    if getattr(patch, "name", None) == "lora" and hasattr(patch, "weights"):
        return tuple(patch.weights) + (None,) * (6 - len(patch.weights))
    if isinstance(patch, tuple) and len(patch) == 2 and patch[0] == "lora":
        return tuple(patch[1]) + (None,) * (6 - len(patch[1]))
    return None


def _pair(weights: tuple, weight: torch.Tensor, key: str, strength: float) -> LoRAPair | None:
    up, down, alpha, mid, dora_scale, reshape = weights[:6]
    pointwise = all(f.dim() == 2 or (f.dim() == 4 and tuple(f.shape[2:]) == (1, 1)) for f in (up, down))
    if mid is not None or dora_scale is not None or reshape is not None:
        return None
    if not pointwise or weight.shape[2:].numel() != 1:
        return None
    scale = strength * (float(alpha) / down.shape[0] if alpha is not None else 1.0)  # the host's alpha / rank
    return LoRAPair.from_factors(down.float(), up.float() * scale, f"{key} (down)", f"{key} (up)")


def _dense_change(patch: Any, weight: torch.Tensor, key: str, strength: float) -> torch.Tensor:
    """What the host's adapter adds to ``weight`` at ``strength``, in the parameter's shape (float32)."""
    base = weight.detach().to("cpu", torch.float32)
    changed = comfy.lora.calculate_weight([(strength, patch, 1.0, None, None)], base.clone(), key)
    return (changed - base).contiguous()


def _layer_delta(patch: Any, weight: torch.Tensor, key: str, strength: float) -> LayerDelta:
    weights = _lora_weights(patch)
    pair = _pair(weights, weight, key, strength) if weights is not None else None
    if pair is not None:
        return pair
    return DenseDelta(_dense_change(patch, weight, key, strength))  # (out, in, *kernel)


def _weight(root: torch.nn.Module, key: str) -> torch.Tensor:
    return comfy.utils.get_attr(root, key)


def concept_from_lora(model: Any, clip: Any, path: str, triggers: list[str], strength_model: float,
                      strength_clip: float, name: str = "") -> Concept:
    """The standard LoRA at ``path`` as a concept for ``model``/``clip`` at the given strengths.

    ``triggers``: the phrases prompts use for it (the node reads suggestions from the file's metadata).
    Errors name the unknown keys, a family mismatch, and keys that are not weights.
    """
    name = name or os.path.basename(path)
    shown, _, encoders = model_and_clip(model, clip, "standard LoRA concepts")  # shown: "SD1.x", "SDXL"
    family = concept_family(model)
    metadata = lora_metadata.read_metadata(path)
    made_for = lora_metadata.base_family(metadata)
    if made_for and made_for != family:
        raise BaseModelMismatchError(
            f"LoRA {name} was trained for {FAMILY_NAMES.get(made_for, made_for)} (its metadata says so), but this "
            f"model is {shown}. Use it with a checkpoint of its family.")
    state = safetensors.torch.load_file(path)
    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    key_map = comfy.lora.model_lora_keys_clip(clip.cond_stage_model, key_map)
    if lora_convert is not None:  # 0.3.x: the host's own conversions of other trainers' layouts
        state = lora_convert.convert_lora(state)
    with _not_loaded_keys() as unknown:
        patches = comfy.lora.load_lora(state, key_map)
    if unknown:
        raise KeyMappingError(
            f"LoRA {name}: {len(unknown)} of its {len(state)} keys match no weight of this "
            f"{shown} model (LoraLoader would skip them): {first_of(sorted(unknown), 8)}. "
            "The file was made for another architecture, or holds layers this pack cannot take; it was not used.")
    text: dict[str, LayerDelta] = {}
    unet: dict[str, LayerDelta] = {}
    other: dict[str, torch.Tensor] = {}  # biases and norm scales by parameter key
    refused = []
    for key, patch in sorted(patches.items(), key=lambda kv: str(kv[0])):
        if not isinstance(key, str) or not key.endswith((".weight", ".bias")):
            refused.append(str(key))
            continue
        text_root = next((r for r in _TEXT_ROOTS if key.startswith(r)), None)
        if not key.startswith(_DIFFUSION) and text_root is None:
            refused.append(key)
            continue
        root, strength = (model.model, strength_model) if text_root is None else (clip.cond_stage_model,
                                                                                  strength_clip)
        weight = _weight(root, key)
        if key.endswith(".bias") or weight.dim() < 2:
            other[key] = _dense_change(patch, weight, key, strength)  # (channels,)
        elif text_root is None:
            unet[key[len(_DIFFUSION):-len(".weight")]] = _layer_delta(patch, weight, key, strength)
        else:
            module = _TEXT_ROOTS[text_root] + key[len(text_root):-len(".weight")]
            text[module] = _layer_delta(patch, weight, key, strength)
    if refused:
        raise KeyMappingError(
            f"LoRA {name} changes {len(refused)} parameter(s) gradient fusion cannot take: {first_of(refused, 8)}. "
            "Supported: the UNet's and the text encoders' weights, biases and norms. Apply this LoRA with LoraLoader "
            "after the fusion instead.")
    if not text and not unet and not other:
        raise KeyMappingError(f"LoRA {name} holds no weight change ({len(state)} keys); pick a LoRA file.")
    shown_name = f"{os.path.splitext(name)[0]} ({', '.join(triggers)})"
    return Concept(words=[], embeddings={}, triggers=triggers, text_lora=text, unet_lora=unet, name=shown_name,
                   other_changes=other,
                   text_encoders=encoders, base_family=family)
