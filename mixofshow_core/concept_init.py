"""Fresh ED-LoRA concepts (spec §1.1, §1.3): layer-wise word rows and rank-r LoRA factors.

Initialisation as in the official main branch: a ``<rand-σ>`` word gets one vector ``randn(D)·σ``
copied into all L rows, a class word its token embedding in all L rows; ``lora_down`` is
Kaiming-uniform (a = √5), ``lora_up`` zeros (so a fresh concept leaves the model unchanged).
``up_std > 0`` draws ``lora_up`` from N(0, up_std²) instead, for demos and tests that need a
visible change without training.
"""
from __future__ import annotations

import math

import torch

from .concept import Concept
from .lora import LoRAPair


def random_word_vector(width: int, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """The official ``<rand-σ>`` initializer: one vector [D] drawn from N(0, σ²)."""
    return torch.randn(width, generator=generator) * sigma  # (D,)


def init_lora(in_features: int, out_features: int, rank: int, generator: torch.Generator,
              up_std: float = 0.0) -> LoRAPair:
    """down [rank, in] Kaiming-uniform(a=√5); up [out, rank] zeros (or N(0, up_std²))."""
    bound = 1.0 / math.sqrt(in_features)  # kaiming_uniform_ with a=sqrt(5) on a [rank, in] weight
    down = (torch.rand(rank, in_features, generator=generator) * 2 - 1) * bound  # (r, in)
    up = torch.randn(out_features, rank, generator=generator) * up_std  # (out, r)
    return LoRAPair(down=down, up=up)


def init_concept(
    words: list[str],
    word_vectors: list[torch.Tensor],
    layers: int,
    text_modules: dict[str, tuple[int, int]],
    unet_modules: dict[str, tuple[int, int]],
    rank: int = 4,
    alpha: float = 1.0,
    seed: int = 0,
    up_std: float = 0.0,
    text_encoders: list[tuple[str, int]] | None = None,
    base_family: str = "",
) -> Concept:
    """Build a concept whose word i has ``word_vectors[i]`` ([D]) in every one of ``layers`` rows.

    ``text_modules`` / ``unet_modules`` map diffusers module names to (in_features, out_features);
    ``text_encoders`` and ``base_family`` as in Concept (default: from the width).
    """
    g = torch.Generator().manual_seed(seed)
    embeddings = {w: v.float().unsqueeze(0).repeat(layers, 1) for w, v in zip(words, word_vectors)}  # (L, D)
    text = {m: init_lora(i, o, rank, g, up_std) for m, (i, o) in sorted(text_modules.items())}
    unet = {m: init_lora(i, o, rank, g, up_std) for m, (i, o) in sorted(unet_modules.items())}
    return Concept(words=list(words), embeddings=embeddings, text_lora=text, unet_lora=unet, alpha=alpha,
                   text_encoders=list(text_encoders or []), base_family=base_family)
