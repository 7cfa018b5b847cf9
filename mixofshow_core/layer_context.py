"""Layer-wise conditioning packed into one cross-attention context (spec §1.2).

ED-LoRA gives each cross-attention layer l its own text context C_l, [T, D]. To travel through a
host's conditioning machinery as one ordinary tensor, the L contexts are *interleaved* token-major:

    packed[t * L + l] = C_l[t]              packed: [T * L, D]

Properties this layout is chosen for:
* Layer l is ``packed[l::L]``. Hosts that batch contexts of different lengths repeat the shorter
  one end to end (attention is unchanged by whole-sequence repetition); since every copy has length
  T * L, ``[l::L]`` of the repeated row is C_l repeated, which attends identically.
* Every C_l starts with the text encoder's BOS output, identical for all layers (causal attention:
  position 0 sees only itself), and the packer writes it bit-identically. A packed row therefore
  starts with L equal vectors, which a plain CLIP context never does (its position 1 is a word).
  ``is_packed`` uses this to tell packed rows from plain ones in a mixed batch.
"""
from __future__ import annotations

import torch


def pack_layers(contexts: torch.Tensor) -> torch.Tensor:
    """Interleave per-layer contexts.

    Args:
        contexts: [L, B, T, D], layer-major.
    Returns:
        [B, T * L, D] with ``out[:, t * L + l] = contexts[l, :, t]``.
    """
    layers, batch, tokens, width = contexts.shape
    contexts = contexts.clone()
    contexts[:, :, 0] = contexts[0, :, 0]  # identical BOS block: the packing signature
    return contexts.permute(1, 2, 0, 3).reshape(batch, tokens * layers, width)  # (B, T*L, D)


def tile_plain(context: torch.Tensor, layers: int) -> torch.Tensor:
    """Pack a context that is the same for every layer ([B, T, D] -> [B, T * L, D]) without re-encoding."""
    return pack_layers(context.unsqueeze(0).expand(layers, *context.shape))


def is_packed(row: torch.Tensor, layers: int) -> bool:
    """True when a context row [N, D] carries L interleaved layers (see the module docstring)."""
    if layers < 2 or row.shape[0] % layers != 0 or row.shape[0] < layers:
        return False
    head = row[:layers]  # (L, D)
    return bool(torch.equal(head, head[:1].expand_as(head)))


def layer_of_packed(packed: torch.Tensor, layer: int, layers: int) -> torch.Tensor:
    """Layer ``layer`` of packed contexts: [B, T * L, D] -> [B, T, D]."""
    return packed[:, layer::layers]


def mean_over_layers(packed: torch.Tensor, layers: int) -> torch.Tensor:
    """Average of the L layer contexts, [B, T * L, D] -> [B, T, D] (for models without the layer patch)."""
    batch, n, width = packed.shape
    return packed.reshape(batch, n // layers, layers, width).mean(dim=2)  # (B, T, D)


def select_layer(context: torch.Tensor, layer: int, layers: int) -> torch.Tensor:
    """The context cross-attention layer ``layer`` must see, row by row.

    Packed rows give their layer; plain rows are returned unchanged. When a batch mixes both, the
    packed rows' layer is repeated L times to keep one sequence length (attention-neutral).

    Args:
        context: [B, N, D].
    Returns:
        [B, N / L, D] when every row is packed, else [B, N, D].
    """
    flags = [is_packed(row, layers) for row in context]
    if not any(flags):
        return context
    picked = layer_of_packed(context, layer, layers)  # (B, N/L, D)
    if all(flags):
        return picked
    rows = [p.repeat(layers, 1) if f else row for p, row, f in zip(picked, context, flags)]
    return torch.stack(rows)  # (B, N, D)
