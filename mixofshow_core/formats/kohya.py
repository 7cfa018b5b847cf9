"""Export of a concept's LoRA part as a standard (kohya-style) LoRA file.

Keys: ``lora_te_<module with dots as underscores>`` for the text encoder and ``lora_unet_<...>`` for
the UNet, with diffusers module names (what kohya sd-scripts writes for SD1.x), each with
``.lora_down.weight``, ``.lora_up.weight`` and a scalar ``.alpha``. Loaders scale by
``alpha_file / rank``; the official ED-LoRA scale is ``alpha`` itself, so ``alpha_file = alpha * rank``.
The concept words' embeddings are not part of a LoRA file: prompts using them need the ED-LoRA nodes.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..concept import Concept
from ..files import save_safetensors_atomic
from ..lora import LoRAPair

TEXT_PREFIX = "lora_te_"
UNET_PREFIX = "lora_unet_"


def lora_name(prefix: str, module: str) -> str:
    """Kohya name of a diffusers module, e.g. lora_te_text_model_encoder_layers_0_self_attn_q_proj."""
    return prefix + module.replace(".", "_")


def state_dict(concept: Concept) -> dict[str, torch.Tensor]:
    """Kohya-keyed tensors of the concept's LoRA deltas (official scale preserved)."""
    out: dict[str, torch.Tensor] = {}
    parts: tuple[tuple[str, dict[str, LoRAPair]], ...] = (
        (TEXT_PREFIX, concept.text_lora),
        (UNET_PREFIX, concept.unet_lora),
    )
    for prefix, loras in parts:
        for module, pair in loras.items():
            name = lora_name(prefix, module)
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
        "ss_base_model_version": "sd_v1" if concept.base_family == "sd1" else concept.base_family,
        "mixofshow.source_concept": concept.name,
        "mixofshow.words": " ".join(concept.words),
    }
    return save_safetensors_atomic(state_dict(concept), path, metadata)


def write_diff(text: dict[str, torch.Tensor], unet: dict[str, torch.Tensor], path: str | os.PathLike[str]) -> Path:
    """Save full weight changes (e.g. a fusion result) as a LoRA file with exact ``.diff`` keys.

    ``text`` / ``unet`` map diffusers module names to [out, in] deltas; loaders add ``strength · diff``.
    """
    tensors = {f"{lora_name(TEXT_PREFIX, m)}.diff": d for m, d in text.items()}
    tensors.update({f"{lora_name(UNET_PREFIX, m)}.diff": d for m, d in unet.items()})
    return save_safetensors_atomic(tensors, path, {"mixofshow.kind": "fused_diff"})
