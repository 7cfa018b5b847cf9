"""Shared test data: the official SD1.5 layer table and seeded toy concepts (no host)."""
from __future__ import annotations

import torch

from mixofshow_core.concept_init import init_concept

# SD1.5-like naming at toy width: 2 text layers, 3 UNet attention blocks
TEXT_MODULES = {f"text_model.encoder.layers.{i}.self_attn.{p}_proj": (8, 8) for i in range(2) for p in "qkvo"}
TEXT_MODULES = {k.replace(".o_proj", ".out_proj"): v for k, v in TEXT_MODULES.items()}
UNET_BLOCKS = ("down_blocks.0.attentions.0", "mid_block.attentions.0", "up_blocks.1.attentions.2")
UNET_MODULES = {
    f"{b}.transformer_blocks.0.{a}.{p}": ((8 if a == "attn2" and p in ("to_k", "to_v") else 16), 16)
    for b in UNET_BLOCKS for a in ("attn1", "attn2") for p in ("to_q", "to_k", "to_v", "to_out.0")
}


# spec §0.1: index -> (diffusers attention block, ComfyUI block id)
SD15_TABLE = [
    ("down_blocks.0.attentions.0", ("input", 1)), ("down_blocks.0.attentions.1", ("input", 2)),
    ("down_blocks.1.attentions.0", ("input", 4)), ("down_blocks.1.attentions.1", ("input", 5)),
    ("down_blocks.2.attentions.0", ("input", 7)), ("down_blocks.2.attentions.1", ("input", 8)),
    ("mid_block.attentions.0", ("middle", 0)),
    ("up_blocks.1.attentions.0", ("output", 3)), ("up_blocks.1.attentions.1", ("output", 4)),
    ("up_blocks.1.attentions.2", ("output", 5)), ("up_blocks.2.attentions.0", ("output", 6)),
    ("up_blocks.2.attentions.1", ("output", 7)), ("up_blocks.2.attentions.2", ("output", 8)),
    ("up_blocks.3.attentions.0", ("output", 9)), ("up_blocks.3.attentions.1", ("output", 10)),
    ("up_blocks.3.attentions.2", ("output", 11)),
]


def make_concept(words=("<cat1>", "<cat2>"), layers=4, width=8, seed=0, up_std=0.1, alpha=1.0):
    g = torch.Generator().manual_seed(seed)
    vectors = [torch.randn(width, generator=g) for _ in words]
    concept = init_concept(list(words), vectors, layers, TEXT_MODULES, UNET_MODULES, rank=4, alpha=alpha,
                           seed=seed, up_std=up_std)
    for word in words:  # distinct rows per layer, as after training
        concept.embeddings[word] = concept.embeddings[word] + torch.randn(layers, width, generator=g)
    return concept
