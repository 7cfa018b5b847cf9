"""What a host MODEL and CLIP look like to the method: UNet layout, cross-attention sites, text widths."""
from __future__ import annotations

import re
from typing import Any

from ..mixofshow_core.concept import Concept, family_for_text_width
from ..mixofshow_core.errors import BaseModelMismatchError
from ..mixofshow_core.unet_layout import CrossAttnSite, UNetLayout

_TRANSFORMER_PATH = re.compile(r"^(?:(?:input_blocks|output_blocks)\.\d+|middle_block)\.\d+\.transformer_blocks\.\d+$")
# the host's model configs (comfy.supported_models) whose subclasses make up each UNet family
_FAMILIES = {"SD15": "SD1.x", "SD20": "SD2.x", "SDXL": "SDXL", "SDXLRefiner": "SDXL"}
_ENCODERS = {("clip_l",): "SD1.x", ("clip_h",): "SD2.x", ("clip_g", "clip_l"): "SDXL", ("clip_g",): "SDXL"}
SUPPORTED = "the pack supports SD1.x models (SD1.4/1.5 and their fine-tunes) today; SDXL is planned"


def model_family(model: Any) -> str:
    """The family of a MODEL, named after the host's model config (SD1.x, SD2.x, SDXL, or e.g. 'Flux', 'SD3')."""
    config = getattr(model.model, "model_config", None)
    for cls in type(config).__mro__:
        if cls.__name__ in _FAMILIES:
            return _FAMILIES[cls.__name__]
    return type(config).__name__ if config is not None else type(model.model).__name__


def require_sd1(model: Any) -> None:
    """Raise a clear error for a MODEL of any family but SD1.x, naming it."""
    family = model_family(model)
    if family != "SD1.x":
        raise BaseModelMismatchError(f"This MODEL is {family}: {SUPPORTED}; {family} is not supported yet.")


def unet_layout(model: Any) -> UNetLayout:
    """Describe a ModelPatcher's UNet: resnets per level and every transformer with cross-attention."""
    unet = model.model.diffusion_model
    if not hasattr(unet, "input_blocks"):  # a DiT (SD3, Flux, ...): no UNet blocks to map
        require_sd1(model)
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
            "This MODEL has no cross-attention layers; ED-LoRA concepts need a text-conditioned UNet (SD1.x)."
        )
    return sites


def unet_context_width(model: Any) -> int:
    """Width of the text context the UNet's cross-attention expects."""
    unet = model.model.diffusion_model
    first = cross_attention_sites(model)[0]
    return int(unet.get_submodule(first.ldm_prefix).attn2.to_k.weight.shape[1])


def clip_text_width(clip: Any) -> int:
    """Hidden size of an SD1-style CLIP; raises for multi-encoder CLIPs (SDXL) not supported yet."""
    encoder = clip.cond_stage_model
    names = tuple(n for n in ("clip_g", "clip_h", "clip_l") if hasattr(encoder, n))
    if names != ("clip_l",):
        family = _ENCODERS.get(names, type(encoder).__name__)
        raise BaseModelMismatchError(
            f"This CLIP is {family} (text encoders {list(names) or type(encoder).__name__}): {SUPPORTED}; "
            f"{family} is not supported yet. ED-LoRA concepts need one CLIP-L text encoder."
        )
    return int(encoder.clip_l.transformer.get_input_embeddings().weight.shape[1])


def check_concept_fits(concept: Concept, layers: int, width: int, source: str) -> None:
    """Raise BaseModelMismatchError unless the concept's [L, D] fits this model."""
    if concept.text_width != width or concept.layer_count not in (layers, 1):
        raise BaseModelMismatchError(
            f"Concept {source} was made for base family {concept.base_family} (text width "
            f"{concept.text_width}, {concept.layer_count} cross-attention layers), but this model has text "
            f"width {width} and {layers} layers ({family_for_text_width(width)}). Load it onto a checkpoint of "
            "its own family, or retrain it on this one."
        )
