"""Low-rank weight deltas with the official Mix-of-Show scale (method spec §1.3).

The official ED-LoRA layer computes ``y = W x + b + alpha * up(down(x))``: the scale is ``alpha``
itself, **not** ``alpha / rank`` as in kohya-style files. With rank 4 and alpha 1.0 (the shipped
configs) the delta is ``1.0 * up @ down``. Exporters that target ``alpha / rank`` loaders therefore
store ``alpha * rank`` (see formats/kohya.py).

The research branch also adapts 1x1 convolutions (``proj_in``/``proj_out`` of SD1.5's transformers):
factors ``down [r, in, 1, 1]`` and ``up [out, r, 1, 1]``, delta ``alpha * up @ down`` on the squeezed
factors, reshaped to the weight's ``[out, in, 1, 1]``. A 1x1 convolution is a linear map over channels,
so ``LoRAPair.from_factors`` keeps its factors as matrices; hosts reshape the delta to the weight's shape.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import ConceptFileError

SUPPORTED_SHAPES = "linear [rank, in] / [out, rank], or 1x1 convolution [rank, in, 1, 1] / [out, rank, 1, 1]"


@dataclass(frozen=True)
class LoRAPair:
    """One adapted linear layer: ``down`` (rank, in_features) and ``up`` (out_features, rank)."""

    down: torch.Tensor
    up: torch.Tensor

    @classmethod
    def from_factors(cls, down: torch.Tensor, up: torch.Tensor, down_key: str, up_key: str) -> LoRAPair:
        """A pair from a file's factors, linear or 1x1 convolution; ConceptFileError naming the key otherwise."""
        matrices = []
        for key, factor in ((down_key, down), (up_key, up)):
            if factor.dim() == 4 and tuple(factor.shape[2:]) == (1, 1):
                factor = factor.reshape(factor.shape[0], factor.shape[1])  # 1x1 convolution: channels only
            elif factor.dim() != 2:
                raise ConceptFileError(
                    f"LoRA key '{key}' has shape {list(factor.shape)}, which this pack cannot apply. "
                    f"Supported: {SUPPORTED_SHAPES}."
                )
            matrices.append(factor)
        if matrices[0].shape[0] != matrices[1].shape[1]:
            raise ConceptFileError(
                f"LoRA keys '{down_key}' {list(down.shape)} and '{up_key}' {list(up.shape)} disagree on the rank. "
                f"Supported: {SUPPORTED_SHAPES}, with one rank."
            )
        return cls(down=matrices[0], up=matrices[1])

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
                "Build pairs from file factors with LoRAPair.from_factors (it also takes 1x1 convolutions)."
            )

    def delta(self, alpha: float) -> torch.Tensor:
        """Return ``alpha * up @ down`` in fp32 (fp64 if the factors are), shape (out_features, in_features)."""
        dtype = torch.promote_types(self.up.dtype, torch.float32)
        return alpha * (self.up.to(dtype) @ self.down.to(dtype))  # (out, in)


@dataclass(frozen=True)
class DenseDelta:
    """One layer's full weight change in the weight's own shape (``[out, in]``, ``[out, in, kh, kw]``): what a
    standard LoRA's adapter adds when it is not a plain low-rank pair (LoHa, LoKr, DoRA, a Tucker-factored or
    3x3 convolution), computed by the host's own adapter at the concept's strength."""

    change: torch.Tensor

    @property
    def rank(self) -> int:
        return 0  # not factored

    @property
    def in_features(self) -> int:
        return int(self.change[0].numel())

    @property
    def out_features(self) -> int:
        return int(self.change.shape[0])

    @property
    def linear(self) -> bool:
        """True when the change acts on channels alone (a linear layer or a 1x1 convolution)."""
        return self.change.dim() == 2 or (self.change.dim() == 4 and tuple(self.change.shape[2:]) == (1, 1))

    def check(self, name: str) -> None:
        if self.change.dim() not in (2, 3, 4, 5):
            raise ValueError(f"Weight change '{name}': expected [out, in] or a convolution's [out, in, *kernel], "
                             f"found {list(self.change.shape)}.")

    def delta(self, alpha: float) -> torch.Tensor:
        """``alpha * change`` as a matrix [out, in·kernel] in fp32."""
        return alpha * self.change.float().flatten(1)  # (out, in*k)


LayerDelta = LoRAPair | DenseDelta
