"""Orthogonal Adaptation (Po et al., CVPR 2024): frozen down-projections from a shared orthogonal basis.

Basis construction (documented so anyone can rebuild it without downloads): for input width d,
draw G [d, d] from N(0, 1) in float64 with ``torch.Generator().manual_seed(BASIS_SEED + d)``,
take the QR decomposition G = QR, flip the columns of Q so diag(R) > 0 (this makes the factor
unique), and use the rows of O = Qᵀ. The result is a Haar-random orthogonal matrix; it is the
same for every concept of a given width.

Slots: at rank r, slot s owns rows [s·r, (s+1)·r) of O, so two concepts in different slots have
exactly orthogonal down-projections (Bᵢ Bⱼᵀ = 0) and their summed deltas do not interfere on each
other's input subspace. A concept's down-projection is ``SCALE · O[rows]`` (0.5 as in the
reference code) and stays frozen; only the up-projection trains. The down factors are stored in
the concept file, so merging checks the tensors themselves, not only the slot numbers.
"""
from __future__ import annotations

import functools
import itertools

import torch

from ..concept import Concept
from ..errors import MixOfShowError

BASIS_SEED = 20231204
BASIS_NAME = "qr-gaussian-v1"
SCALE = 0.5


class OrthogonalSlotError(MixOfShowError):
    """A slot does not fit the layer width, or two concepts share rows of the basis."""


@functools.lru_cache(maxsize=16)
def basis(width: int) -> torch.Tensor:
    """The shared orthogonal matrix O [d, d] (float64) whose rows are handed out in slots."""
    g = torch.Generator().manual_seed(BASIS_SEED + width)
    gaussian = torch.randn(width, width, generator=g, dtype=torch.float64)  # (d, d)
    q, r = torch.linalg.qr(gaussian)
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)  # unique QR: diag(R) > 0
    return q.T.contiguous()  # (d, d), rows orthonormal


def slot_count(width: int, rank: int) -> int:
    return width // rank


def slot_rows(width: int, rank: int, slot: int) -> range:
    if rank < 1 or slot < 0 or (slot + 1) * rank > width:
        raise OrthogonalSlotError(
            f"Orthogonal slot {slot} at rank {rank} needs basis rows {slot * rank}..{(slot + 1) * rank - 1}, but a "
            f"layer of input width {width} has only {slot_count(width, rank)} slots "
            f"(0..{slot_count(width, rank) - 1}). "
            "Pick a smaller slot or rank."
        )
    return range(slot * rank, (slot + 1) * rank)


def down_projection(width: int, rank: int, slot: int) -> torch.Tensor:
    """Frozen down factor [rank, width] of ``slot`` (fp32)."""
    rows = slot_rows(width, rank, slot)
    return (SCALE * basis(width)[rows.start: rows.stop]).float()  # (r, d)


def max_slot(widths: list[int], rank: int) -> int:
    """Largest slot usable in every layer (the narrowest input width decides)."""
    return slot_count(min(widths), rank) - 1


def _pairs(concept: Concept) -> dict[str, torch.Tensor]:
    return {f"text:{m}": p.down for m, p in concept.text_lora.items()} | {
        f"unet:{m}": p.down for m, p in concept.unet_lora.items()}


def interference(concepts: list[Concept], weights: list[float]) -> dict[str, float]:
    """Measured crosstalk between concepts about to be summed.

    Returns:
        overlap: max over layers and pairs of ‖Bᵢ Bⱼᵀ‖_F / √(‖Bᵢ Bᵢᵀ‖_F ‖Bⱼ Bⱼᵀ‖_F): 0 for orthogonal down
            factors, 1 for identical ones.
        crosstalk: max over layers and ordered pairs of ‖λⱼ ΔWⱼ Bᵢᵀ‖_F / ‖λᵢ ΔWᵢ Bᵢᵀ‖_F, the other concept's
            change on concept i's input subspace relative to concept i's own (0 = none).
    """
    overlap, crosstalk = 0.0, 0.0
    downs = [_pairs(c) for c in concepts]
    for i, j in itertools.permutations(range(len(concepts)), 2):
        for key in downs[i].keys() & downs[j].keys():
            bi, bj = downs[i][key].double(), downs[j][key].double()
            if bi.shape[1] != bj.shape[1]:
                continue
            if i < j:
                scale = ((bi @ bi.T).norm() * (bj @ bj.T).norm()).sqrt().clamp_min(1e-30)
                overlap = max(overlap, float((bi @ bj.T).norm() / scale))
            part, module = key.split(":", 1)
            pi = (concepts[i].text_lora if part == "text" else concepts[i].unet_lora)[module]
            pj = (concepts[j].text_lora if part == "text" else concepts[j].unet_lora)[module]
            own = (weights[i] * pi.delta(concepts[i].alpha).double() @ bi.T).norm()
            other = (weights[j] * pj.delta(concepts[j].alpha).double() @ bi.T).norm()
            if own > 0:
                crosstalk = max(crosstalk, float(other / own))
    return {"overlap": overlap, "crosstalk": crosstalk}


def check_slots(concepts: list[Concept]) -> list[str]:
    """Raise when two orthogonal concepts share a slot; return warnings for non-orthogonal ones."""
    seen: dict[int, str] = {}
    notes = []
    for c in concepts:
        info = c.orthogonal
        if not info:
            notes.append(f"'{c.name}' was not trained in orthogonal mode: summing it interferes with the others "
                         "(use Gradient Fusion for ordinary ED-LoRA concepts).")
            continue
        slot = int(info["slot"])
        if slot in seen:
            raise OrthogonalSlotError(
                f"Concepts '{seen[slot]}' and '{c.name}' both use orthogonal slot {slot}, so their deltas interfere. "
                "Retrain one of them with another orthogonal_slot."
            )
        seen[slot] = c.name
    return notes
