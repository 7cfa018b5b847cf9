"""Low-rank weight deltas with the official Mix-of-Show scale (method spec §1.3).

The official ED-LoRA layer computes ``y = W x + b + alpha * up(down(x))``: the scale is ``alpha``
itself, **not** ``alpha / rank`` as in kohya-style files. With rank 4 and alpha 1.0 (the shipped
configs) the delta is ``1.0 * up @ down``. Exporters that target ``alpha / rank`` loaders therefore
store ``alpha * rank`` (see formats/kohya.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LoRAPair:
    """One adapted linear layer: ``down`` (rank, in_features) and ``up`` (out_features, rank)."""

    down: torch.Tensor
    up: torch.Tensor

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def in_features(self) -> int:
        return int(self.down.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.up.shape[0])

    def check(self, name: str) -> None:
        """Raise ValueError unless the two factors are 2-D and share the rank."""
        if self.down.dim() != 2 or self.up.dim() != 2 or self.up.shape[1] != self.down.shape[0]:
            raise ValueError(
                f"LoRA '{name}': expected down [rank, in] and up [out, rank] with the same rank, "
                f"found down {list(self.down.shape)} and up {list(self.up.shape)}. "
                "The file is damaged or not an ED-LoRA file."
            )

    def delta(self, alpha: float) -> torch.Tensor:
        """Return ``alpha * up @ down`` in fp32 (fp64 if the factors are), shape (out_features, in_features)."""
        dtype = torch.promote_types(self.up.dtype, torch.float32)
        return alpha * (self.up.to(dtype) @ self.down.to(dtype))  # (out, in)
