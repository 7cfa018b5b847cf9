"""Export of a concept's LoRA part as a standard (kohya-style) LoRA file.

Keys as kohya sd-scripts writes them, each with ``.lora_down.weight``, ``.lora_up.weight`` and a scalar
``.alpha``, module names with dots as underscores:
* SD1.x: ``lora_te_<diffusers text module>``, ``lora_unet_<diffusers UNet module>``
  (``lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q``);
* SDXL: ``lora_te1_`` (CLIP-L) and ``lora_te2_`` (CLIP-G) text modules, ``lora_unet_<LDM UNet module>``
  (``lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q``).
 Loaders scale by
``alpha_file / rank``; the official ED-LoRA scale is ``alpha`` itself, so ``alpha_file = alpha * rank``.
The concept words' embeddings are not part of a LoRA file: prompts using them need the ED-LoRA nodes.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..concept import Concept, split_text_module
from ..files import save_safetensors_atomic
from ..lora import DenseDelta
from ..unet_layout import is_ldm_name, sdxl_layout

TEXT_PREFIX = "lora_te_"
TEXT_PREFIXES_SDXL = ("lora_te1_", "lora_te2_")
UNET_PREFIX = "lora_unet_"
BASE_MODEL_VERSION = {"sd1": "sd_v1", "sdxl": "sdxl_base_v1-0"}  # kohya's ss_base_model_version


def lora_name(prefix: str, module: str) -> str:
    """Kohya name of a diffusers module, e.g. lora_te_text_model_encoder_layers_0_self_attn_q_proj."""
    return prefix + module.replace(".", "_")


def text_lora_name(module: str, family: str) -> str:
    """Kohya name of a text-encoder module of a ``family`` model (lora_te_ / SDXL: lora_te1_, lora_te2_)."""
    index, inner = split_text_module(module)
    return lora_name(TEXT_PREFIXES_SDXL[index] if family == "sdxl" else TEXT_PREFIX, inner)


def unet_lora_name(module: str, family: str) -> str:
    """Kohya name of a UNet module of a ``family`` model (diffusers names for SD1.x, LDM names for SDXL; a module
    already named the LDM way keeps its name, which loaders accept for every family)."""
    if family == "sdxl" and not is_ldm_name(module):
        module = sdxl_layout().diffusers_to_ldm(module)
    return lora_name(UNET_PREFIX, module)


def state_dict(concept: Concept) -> dict[str, torch.Tensor]:
    """Kohya-keyed tensors of the concept's LoRA deltas (official scale preserved; a full change as ``.diff``)."""
    out: dict[str, torch.Tensor] = {}
    for namer, loras in ((text_lora_name, concept.text_lora), (unet_lora_name, concept.unet_lora)):
        for module, pair in loras.items():
            name = namer(module, concept.base_family)
            if isinstance(pair, DenseDelta):
                out[f"{name}.diff"] = float(concept.alpha) * pair.change
                continue
            out[f"{name}.lora_down.weight"] = pair.down
            out[f"{name}.lora_up.weight"] = pair.up
            out[f"{name}.alpha"] = torch.tensor(float(concept.alpha) * pair.rank, dtype=torch.float32)
    return out


def write(concept: Concept, path: str | os.PathLike[str]) -> Path:
    """Save the LoRA part of ``concept`` as a kohya-style safetensors LoRA, atomically."""
    metadata = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(concept.rank),
        "ss_network_alpha": str(float(concept.alpha) * concept.rank),
        "ss_base_model_version": BASE_MODEL_VERSION.get(concept.base_family, concept.base_family),
        "mixofshow.source_concept": concept.name,
        "mixofshow.words": " ".join(concept.words),
    }
    return save_safetensors_atomic(state_dict(concept), path, metadata)


def other_change_name(key: str) -> str:
    """LoRA key of a bias or norm change given by the host's parameter key, in ComfyUI's own generic layout (what
    its Train LoRA writes): ``diffusion_model.<path>.diff_b`` for a bias, ``.diff`` for a weight; text-encoder
    parameters under ``text_encoders.`` (``clip_l.transformer.…`` -> ``text_encoders.clip_l.transformer.…``)."""
    base, _, param = key.rpartition(".")
    if param not in ("weight", "bias") or not base:
        raise ValueError(f"Expected a parameter key ending in .weight or .bias, found {key!r}.")
    prefix = "" if base.startswith("diffusion_model.") else "text_encoders."
    return f"{prefix}{base}.{'diff_b' if param == 'bias' else 'diff'}"


def write_diff(text: dict[str, torch.Tensor], unet: dict[str, torch.Tensor], path: str | os.PathLike[str],
               family: str = "sd1", other: dict[str, torch.Tensor] | None = None) -> Path:
    """Save full weight changes (e.g. a fusion result) as a LoRA file with exact ``.diff`` keys.

    ``text`` / ``unet`` map diffusers module names to [out, in] deltas of a ``family`` model ("sd1", "sdxl");
    ``other`` maps host parameter keys of biases and norms to their changes (``other_change_name``);
    loaders add ``strength · diff``.
    """
    tensors = {f"{text_lora_name(m, family)}.diff": d for m, d in text.items()}
    tensors.update({f"{unet_lora_name(m, family)}.diff": d for m, d in unet.items()})
    tensors.update({other_change_name(k): d for k, d in (other or {}).items()})
    return save_safetensors_atomic(tensors, path, {"mixofshow.kind": "fused_diff", "mixofshow.base_family": family})
