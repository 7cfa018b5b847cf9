"""Regional cross-attention (spec §3.3): inside a region, attention to that region's context.

Given the query rows of one cross-attention layer and per-region key/value contexts, the output is:
inside one or more regions, the weighted average of attention to each region's context (overlaps
averaged); outside every region, the global output unchanged. Rows of each region are gathered, so
the cost grows with the covered area, not with the number of regions times the image.

``delta=True`` (used in the host) adds ``mean_r(A_r) − A_global`` to the global output instead of
replacing it, where A is attention to the plain global context; whatever other attention patches
added to the global output (e.g. an image prompt) is kept inside regions too.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def regional_output(
    q: torch.Tensor,
    base_out: torch.Tensor,
    region_kv: Sequence[tuple[torch.Tensor, torch.Tensor]],
    masks: torch.Tensor,
    weights: Sequence[float],
    attend: Attend,
    project: Callable[[torch.Tensor], torch.Tensor] = lambda a: a,
    global_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Combine region attention into a layer's output.

    Args:
        q: queries [B, N, C].
        base_out: the layer's global output [B, N, C_out] (after ``project``).
        region_kv: per region (k [B, T, C], v [B, T, C]), rows matching q's batch.
        masks: [R, N] bool, which positions each region covers.
        weights: per-region weight in the average.
        attend: (q [B, n, C], k, v) -> [B, n, C], multi-head attention.
        project: maps attention outputs to the output space (e.g. to_out's linear part).
        global_kv: with it, the delta form (see module docstring); without, plain replacement.
    Returns:
        [B, N, C_out].
    """
    batch, tokens, _ = q.shape
    total = torch.zeros(batch, tokens, q.shape[2], dtype=q.dtype, device=q.device)  # (B, N, C)
    count = torch.zeros(tokens, dtype=q.dtype, device=q.device)  # (N,)
    rows = [mask.nonzero(as_tuple=True)[0] for mask in masks]  # per region (n_r,)
    live = [r for r, idx in enumerate(rows) if idx.numel() > 0]
    lengths = {region_kv[r][0].shape[1] for r in live}
    if live and len(lengths) == 1:
        # one batched call for all regions: rows padded to the largest region (pads are discarded)
        longest = max(rows[r].numel() for r in live)
        padded = torch.stack([torch.cat([rows[r], rows[r][-1:].expand(longest - rows[r].numel())]) for r in live])
        q_all = torch.cat([q[:, padded[i]] for i in range(len(live))])  # (R*B, n_max, C)
        k_all = torch.cat([region_kv[r][0] for r in live])  # (R*B, T, C)
        v_all = torch.cat([region_kv[r][1] for r in live])
        out_all = attend(q_all, k_all, v_all).split(batch)  # R x (B, n_max, C)
        outs = {r: out_all[i][:, :rows[r].numel()] for i, r in enumerate(live)}
    else:
        outs = {r: attend(q[:, rows[r]], *region_kv[r]) for r in live}  # (B, n_r, C) each
    for r in live:
        total.index_add_(1, rows[r], weights[r] * outs[r])
        count.index_add_(0, rows[r], torch.full_like(rows[r], weights[r], dtype=q.dtype))
    covered = (count > 0).nonzero(as_tuple=True)[0]  # (n_cov,)
    if covered.numel() == 0:
        return base_out
    mean = total[:, covered] / count[covered][None, :, None]  # (B, n_cov, C)
    result = base_out.clone()
    if global_kv is None:
        result[:, covered] = project(mean).to(result.dtype)
    else:
        plain = attend(q[:, covered], *global_kv)  # (B, n_cov, C)
        result[:, covered] = result[:, covered] + project(mean - plain).to(result.dtype)
    return result
