"""What a host MODEL and CLIP look like to the method: UNet layout, cross-attention sites, text widths."""
from __future__ import annotations

import re
from typing import Any

from ..mixofshow_core.concept import FAMILY_NAMES, Concept, split_text_module
from ..mixofshow_core.errors import BaseModelMismatchError
from ..mixofshow_core.unet_layout import CrossAttnSite, UNetLayout, row_count

_TRANSFORMER_PATH = re.compile(r"^(?:(?:input_blocks|output_blocks)\.\d+|middle_block)\.\d+\.transformer_blocks\.\d+$")
# the host's model configs (comfy.supported_models) whose subclasses make up each UNet family
_FAMILIES = {"SD15": "SD1.x", "SD20": "SD2.x", "SDXL": "SDXL", "SDXLRefiner": "SDXL refiner"}
_ENCODERS = {("clip_l",): "SD1.x", ("clip_h",): "SD2.x", ("clip_l", "clip_g"): "SDXL", ("clip_g",): "SDXL refiner"}
CONCEPT_FAMILIES = ("SD1.x", "SDXL")  # every stage
SUPPORTED = "SD1.x (SD1.4/1.5 and their fine-tunes) and SDXL (base, Illustrious, NoobAI, Pony)"


def model_family(model: Any) -> str:
    """The family of a MODEL, named after the host's model config (SD1.x, SD2.x, SDXL, or e.g. 'Flux', 'SD3')."""
    config = getattr(model.model, "model_config", None)
    for cls in type(config).__mro__:
        if cls.__name__ in _FAMILIES:
            return _FAMILIES[cls.__name__]
    return type(config).__name__ if config is not None else type(model.model).__name__


def require_family(model: Any, stage: str = "the pack") -> str:
    """The MODEL's family; a clear error naming it, and ``stage``, when it is not one the pack supports."""
    family = model_family(model)
    if family not in CONCEPT_FAMILIES:
        raise BaseModelMismatchError(
            f"This MODEL is {family}: {stage} supports {SUPPORTED} models today; {family} is not supported yet.")
    return family


def concept_family(model: Any) -> str:
    """The base_family code a concept made on this MODEL carries ("sd1", "sdxl")."""
    return {"SD1.x": "sd1", "SDXL": "sdxl"}[require_family(model)]


def unet_layout(model: Any) -> UNetLayout:
    """Describe a ModelPatcher's UNet: resnets per level and every transformer with cross-attention."""
    unet = model.model.diffusion_model
    if not hasattr(unet, "input_blocks"):  # a DiT (SD3, Flux, ...): no UNet blocks to map
        require_family(model)
    paths = tuple(
        name
        for name, module in unet.named_modules()
        if _TRANSFORMER_PATH.match(name) and getattr(module, "attn2", None) is not None
    )
    levels, count = [], 0
    for block in list(unet.input_blocks)[1:]:
        if any(type(m).__name__ == "Downsample" for m in block):
            levels.append(count)
            count = 0
        else:
            count += 1
    levels.append(count)
    return UNetLayout(res_blocks_per_level=tuple(levels), transformer_modules=paths)


def cross_attention_sites(model: Any) -> list[CrossAttnSite]:
    """Cross-attention layers of a MODEL in the official order (down -> mid -> up)."""
    sites = unet_layout(model).sites()
    if not sites:
        raise BaseModelMismatchError(
            "This MODEL has no cross-attention layers; ED-LoRA concepts need a text-conditioned UNet (SD1.x, SDXL)."
        )
    return sites


def layer_rows(model: Any) -> int:
    """L, the layer-wise embedding rows of a MODEL: one per attention block (SD1.x 16, SDXL 11)."""
    return row_count(cross_attention_sites(model))


def unet_context_width(model: Any) -> int:
    """Width of the text context the UNet's cross-attention expects."""
    unet = model.model.diffusion_model
    first = cross_attention_sites(model)[0]
    return int(unet.get_submodule(first.ldm_prefix).attn2.to_k.weight.shape[1])


def clip_encoders(clip: Any) -> list[tuple[str, int]]:
    """[(name, width)] of a CLIP's text encoders in context order: [("clip_l", 768)] for SD1.x,
    [("clip_l", 768), ("clip_g", 1280)] for SDXL; a clear error naming any other family."""
    encoder = clip.cond_stage_model
    names = tuple(n for n in ("clip_l", "clip_g", "clip_h") if hasattr(encoder, n))
    if names not in (("clip_l",), ("clip_l", "clip_g")):
        family = _ENCODERS.get(names, type(encoder).__name__)
        raise BaseModelMismatchError(
            f"This CLIP is {family} (text encoders {list(names) or type(encoder).__name__}): the pack supports "
            f"{SUPPORTED}; {family} is not supported yet. ED-LoRA concepts need CLIP-L, or CLIP-L with CLIP-G.")
    return [(n, int(getattr(encoder, n).transformer.get_input_embeddings().weight.shape[1])) for n in names]


def clip_module(module: str) -> str:
    """The host path of a text_lora module inside ``clip.cond_stage_model`` (SDXL's second encoder: clip_g)."""
    index, inner = split_text_module(module)
    return f"{('clip_l', 'clip_g')[index]}.transformer.{inner}"


def model_and_clip(model: Any, clip: Any, stage: str = "the pack") -> tuple[str, int, list[tuple[str, int]]]:
    """(family, layer rows, text encoders) of a MODEL and CLIP that belong together; clear errors otherwise."""
    family = require_family(model, stage=stage)
    encoders = clip_encoders(clip)
    width, expected = sum(w for _, w in encoders), unet_context_width(model)
    if expected != width:
        raise BaseModelMismatchError(
            f"MODEL cross-attention expects text width {expected} but CLIP gives {width}; connect the MODEL and CLIP "
            "of the same checkpoint.")
    return family, layer_rows(model), encoders


def check_concept_fits(concept: Concept, layers: int, encoders: list[tuple[str, int]], family: str,
                       source: str) -> None:
    """Raise BaseModelMismatchError unless the concept's rows [L, D] (none: a standard LoRA) and text encoders fit
    this model."""
    if [w for _, w in concept.text_encoders] != [w for _, w in encoders] or concept.layer_count not in (layers, 1, 0):
        made_for = FAMILY_NAMES.get(concept.base_family, concept.base_family)
        theirs, ours = (" + ".join(f"{n} {w}" for n, w in e) for e in (concept.text_encoders, encoders))
        raise BaseModelMismatchError(
            f"Concept {source} was made for {made_for} (text encoders {theirs}, {concept.layer_count} layer rows), "
            f"but this model ({family}) has text encoders {ours} and {layers} layer rows. "
            f"Load it onto a checkpoint of its family ({made_for}), or train the concept again on this one."
        )
