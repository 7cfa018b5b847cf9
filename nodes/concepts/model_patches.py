"""Applying an ED-LoRA concept to a MODEL and CLIP: LoRA as host weight patches, words on the CLIP."""
from __future__ import annotations

import math
from typing import Any

import comfy.lora
import comfy.sd
import torch

from ...mixofshow_core.concept import Concept
from ...mixofshow_core.errors import KeyMappingError, first_of
from ...mixofshow_core.formats import kohya
from ...mixofshow_core.unet_layout import UNetLayout, map_unet_modules
from ..model_layout import check_concept_fits, model_and_clip, unet_layout
from .layerwise import REGISTRY_KEY, register_words, with_layer_patch

LOADED_KEY = "mixofshow.loaded_concepts"  # on MODEL: concepts applied by EDLoRALoader, with their patch slots


def _check_lora_keys(model: Any, clip: Any, concept: Concept, layout: UNetLayout) -> None:
    """Every LoRA module must land on an existing weight of its shape, else fail listing the strays.

    A weight fits factors ``down [r, in]``, ``up [out, r]`` when it is ``[out, in]`` (linear) or
    ``[out, in, 1, 1]`` (1x1 convolution: SD1.5's proj_in/proj_out; SDXL's are linear): the host reshapes
    ``up @ down`` to the weight's own shape.
    """
    unet_keys = comfy.lora.model_lora_keys_unet(model.model, {})
    clip_keys = comfy.lora.model_lora_keys_clip(clip.cond_stage_model, {})
    ours = map_unet_modules(layout, list(concept.unet_lora))
    targets: dict[str, tuple[torch.nn.Module, str, Any]] = {}  # module -> (root, weight key, pair)
    strays = []
    for m, ldm in ours.items():
        key = unet_keys.get(kohya.unet_lora_name(m, concept.base_family))
        if key != f"diffusion_model.{ldm}.weight":
            strays.append(m)
        else:
            targets[m] = (model.model, key, concept.unet_lora[m])
    for m, pair in concept.text_lora.items():
        key = clip_keys.get(kohya.text_lora_name(m, concept.base_family))
        if not isinstance(key, str):
            strays.append(m)
        else:
            targets[m] = (clip.cond_stage_model, key, pair)
    if strays:
        shown = first_of(sorted(strays), 12)
        raise KeyMappingError(
            f"{len(strays)} LoRA module(s) of concept '{concept.name}' have no weight in this model: {shown}. "
            "The concept was trained on a different architecture."
        )
    misfits = []
    for m, (root, key, pair) in targets.items():
        shape = tuple(root.get_submodule(key[: -len(".weight")]).weight.shape)
        if shape[0] != pair.out_features or math.prod(shape[1:]) != pair.in_features or len(shape) not in (2, 4):
            misfits.append(f"{m} (LoRA [{pair.out_features}, {pair.in_features}], weight {list(shape)})")
    if misfits:
        shown = first_of(sorted(misfits), 6)
        raise KeyMappingError(
            f"{len(misfits)} LoRA module(s) of concept '{concept.name}' do not fit this model's weights: {shown}. "
            "Supported: a linear weight [out, in] or a 1x1 convolution [out, in, 1, 1]; the concept was trained "
            "on a model of other widths."
        )


def apply_concept(model: Any, clip: Any, concept: Concept, strength_model: float, strength_clip: float,
                  source: str, path: str = "") -> tuple[Any, Any]:
    """Return (MODEL, CLIP) clones with the concept's LoRA merged as patches and its words usable."""
    family, layers, encoders = model_and_clip(model, clip)
    layout = unet_layout(model)
    check_concept_fits(concept, layers, encoders, family, source)
    if concept.text_lora or concept.unet_lora:
        _check_lora_keys(model, clip, concept, layout)
        model, clip = comfy.sd.load_lora_for_models(
            model, clip, kohya.state_dict(concept), strength_model, strength_clip
        )
    clip = clip.clone()
    register_words(clip, concept, layers, source)
    model = with_layer_patch(model)
    entry = {"name": concept.name, "source": source, "path": path, "strength_model": strength_model,
             "strength_clip": strength_clip}
    model.model_options[LOADED_KEY] = list(model.model_options.get(LOADED_KEY, [])) + [entry]
    return model, clip


def loaded_concepts(model: Any) -> list[dict[str, Any]]:
    """Concepts applied to ``model`` by EDLoRALoader, oldest first."""
    return list(model.model_options.get(LOADED_KEY, []))


def without_loaded_concepts(model: Any, clip: Any, concepts: list[Concept]) -> tuple[Any, Any]:
    """Clones of (model, clip) with every EDLoRALoader concept undone; other patches stay.

    ``concepts`` are the loaded concepts themselves, in ``loaded_concepts`` order. Each LoRA is added again
    through the host's LoRA path at minus its strength (W + sΔ − sΔ = W, computed in float32 before the cast),
    so no host patch list is edited; the words leave the CLIP's registry.
    """
    entries = loaded_concepts(model)
    if len(entries) != len(concepts):
        raise ValueError(f"{len(entries)} concept(s) are loaded on this model but {len(concepts)} were given.")
    for entry, concept in zip(entries, concepts):
        if concept.text_lora or concept.unet_lora:
            model, clip = comfy.sd.load_lora_for_models(
                model, clip, kohya.state_dict(concept), -entry["strength_model"], -entry["strength_clip"]
            )
    model, clip = model.clone(), clip.clone()
    model.model_options[LOADED_KEY] = []
    clip.patcher.model_options[REGISTRY_KEY] = {}
    return model, clip
