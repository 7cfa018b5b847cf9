"""Which linear layers ED-LoRA adapts in a ComfyUI model, named the diffusers way (spec §1.3).

Text encoder: q/k/v/out projections of every CLIP attention (48 for CLIP-L; SDXL adds 128 of CLIP-G, named
with the prefix ``text_encoder_2.``). UNet: to_q/to_k/to_v/to_out.0 of attn1 and attn2 in every transformer
block (128 for SD1.5, 560 for SDXL).
"""
from __future__ import annotations

import re
from typing import Any

from ...mixofshow_core.concept import TEXT_ENCODER_2
from .. import model_layout

_CLIP_ATTN = re.compile(
    r"^(clip_l|clip_g)\.transformer\.(text_model\.encoder\.layers\.\d+\.self_attn\.(q|k|v|out)_proj)$")
UNET_PROJECTIONS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
                    "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0")


def text_targets(clip: Any) -> dict[str, tuple[int, int]]:
    """diffusers text-encoder module name -> (in_features, out_features)."""
    out = {}
    for name, module in clip.cond_stage_model.named_modules():
        m = _CLIP_ATTN.match(name)
        if m:
            key = (TEXT_ENCODER_2 if m.group(1) == "clip_g" else "") + m.group(2)
            out[key] = (int(module.weight.shape[1]), int(module.weight.shape[0]))
    return out


def unet_targets(model: Any) -> dict[str, tuple[int, int]]:
    """diffusers UNet module name -> (in_features, out_features) for every attention projection."""
    unet = model.model.diffusion_model
    out = {}
    for site in model_layout.cross_attention_sites(model):
        block = unet.get_submodule(site.ldm_prefix)
        for proj in UNET_PROJECTIONS:
            weight = block.get_submodule(proj).weight
            out[f"{site.diffusers_prefix}.{proj}"] = (int(weight.shape[1]), int(weight.shape[0]))
    return out
