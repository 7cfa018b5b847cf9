"""Training losses (spec §1.5, §1.6): masked noise-prediction MSE and attention regularisation."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, official_scale: bool = False):
    """Mean squared error inside ``mask``, averaged over the batch.

    Args:
        prediction, target: [B, C, h, w].
        mask: [B, 1, h, w] weights in [0, 1].
        official_scale: divide by the mask sum over one channel only, as the official code does, which
            makes the value C× (4× for SD) the per-element masked mean.
    Returns:
        scalar; samples whose mask is empty contribute 0.
    """
    error = (prediction.float() - target.float()) ** 2 * mask  # (B, C, h, w)
    area = mask.sum(dim=(1, 2, 3))  # (B,)
    if not official_scale:
        area = area * prediction.shape[1]
    per_sample = error.sum(dim=(1, 2, 3)) / area.clamp_min(1e-8)  # (B,)
    return per_sample.mean()


def attention_regularisation(
    maps: list[torch.Tensor], mask: torch.Tensor, full_identity: bool
) -> torch.Tensor | None:
    """Official attention regulariser: keep the concept words' attention on the subject.

    Args:
        maps: per cross-attention layer, probabilities of the two concept-word columns,
            [B, heads, r, r, 2] (column 0 = first word, 1 = second word); layers may differ in r.
        mask: [B, 1, H, W] subject (or valid-area) mask.
        full_identity: the second word must match the whole mask (else only stay inside it).
    Returns:
        Σ over resolutions of (subject term + adjective term), or None when no term is defined
        (e.g. a mask covering the whole image leaves no background).
    """
    by_res: dict[int, list[torch.Tensor]] = {}
    for m in maps:
        by_res.setdefault(int(m.shape[2]), []).append(m)
    total = None
    for r, group in sorted(by_res.items()):
        a = torch.cat(group, dim=1).float().mean(dim=1)  # (B, r, r, 2) mean over heads and layers
        a1, a2 = a[..., 0], a[..., 1]
        a1 = a1 / a1.max().clamp_min(1e-12)
        a2 = a2 / a2.max().clamp_min(1e-12)
        m = F.interpolate(mask.float(), size=(r, r), mode="nearest")[:, 0]  # (B, r, r)
        background = m == 0
        if not bool(background.any()):
            continue
        subject = ((a2 - m) ** 2).mean() if full_identity else a2[background].mean()
        term = subject + a1[background].mean()
        total = term if total is None else total + term
    return total
