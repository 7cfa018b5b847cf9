"""LoRACLR's per-layer contrastive merge (Simsar et al., CVPR 2025) on stored features: a reference solver for
benchmarks/bench_fusion_loraclr.py, not a fusion mode (measured worse than the closed form; see benchmarks/README.md).

Row convention ``y = x Wᵀ`` as in fusion.py. Concept i brings inputs ``X_i`` [n_i, in] and its own layer
``W_i = W₀ + ΔW_i``, so its own outputs are ``Y_i = X_i W_iᵀ``. LoRACLR learns one offset ``O`` (the paper's
ΔW; initialised to zero, so the merge starts at W₀) and the merged layer ``W = W₀ + O`` gives
``P_i = X_i Wᵀ`` on concept i's inputs. With ‖·‖ the Frobenius norm of a whole [rows, out] block:

    positive   d_ii² = ‖P_i − Y_i‖²                     (all n_i rows)
    negative   d_ij  = ‖P_i − Y_j‖,  j ≠ i               (see ``negatives``)
    L_con = (1/N) Σ_i [ d_ii² + max(0, m − min_{j≠i} d_ij)² ]
    L_mse = Σ_i d_ii² / (out · Σ_i n_i)                  (torch's mse_loss over every row of every concept)
    L_reg = ‖O‖                                          (Frobenius, not squared)
    L     = λ_con L_con + λ_mse L_mse + λ_reg L_reg

minimised by AdamW on ``O`` for ``iters`` steps, keeping the iterate with the lowest L seen. The positive term
is Mix-of-Show's gradient-fusion objective (up to the 1/N and the λ's); the hinge is what LoRACLR adds: it
pushes the merged output on concept i's inputs at least a distance m from the nearest other concept's output.

Settings followed, and where this module had to choose. Only the abstract and figure captions of the paper were
reachable here, so the loss and hyperparameters follow the authors' released merge script (weight_fusion.py,
``update_contrastive``, github.com/enisimsar/LoRACLR), read as a reference and not copied:
* Offset on W₀, initialised to zero; ``lr=1e-4``, ``margin=0.5``, ``lambda_con=1``, ``lambda_mse=0.1`` (what its
  ``compose_concepts`` passes; the function's own fallback is 0.01), ``lambda_reg=1e-3``, AdamW with
  ``weight_decay=1e-4``, 50 iterations for every stage (its ``--optimize_textenc_iters`` and
  ``--optimize_unet_iters`` defaults; K/V layers use the text-encoder count), best iterate kept. These are the
  defaults here. Choice: the iterate after the last step is scored too (the script keeps the best of those
  before each step only).
* The hardest negative (min over j ≠ i), squared distances for positives and a squared hinge for negatives, as
  the script computes them. The margin is absolute, in output units of the whole flattened block: it does not
  scale with the number of rows or the output width, so on features with many rows it is rarely active.
* ``negatives="paper"``: ``Y_j = X_j W_jᵀ``, concept j's outputs on *its own* inputs, paired row by row with
  concept i's (the script stacks the concepts' features, so it needs equal row counts). Choice: with unequal
  counts, the negative distances use the first ``min_i n_i`` rows of every concept (positives keep all rows).
  ``negatives="same_inputs"`` (an option, not in the paper): ``Y_j → X_i W_jᵀ``, concept j's layer on concept
  i's inputs, i.e. the bleed of j into i's outputs that benchmarks/bench_fusion_loraclr.py measures.
* The script runs under CUDA fp16 autocast and expands distances as ‖a‖² + ‖b‖² − 2ab. Here every term is
  computed in ``dtype`` (float64 by default) around each concept's own residual ``A_i = O − ΔW_i``, so small
  positive distances do not cancel: d_ii² = ‖F_i A_iᵀ‖² with ``F_i`` the rows of X_i or, when n_i > in, the R
  of its QR (same Gram matrix, fewer rows), and d_ij² = d_ii²(negative rows) + 2⟨A_i, K_ij⟩ + E_ij with
  ``K_ij = B_ijᵀ X_i``, ``E_ij = ‖B_ij‖²``, ``B_ij = Y_i − Y_j`` on the negative rows. Same loss, same gradient.
* ``schedule="cosine"`` (an option, not in the paper) anneals the learning rate to zero over ``iters``, so that
  Adam settles instead of dithering at the scale of lr; the paper's constant rate is the default.

Memory: the pairs' ``K_ij`` are N(N−1) matrices [out, in] in ``dtype``, plus each concept's compressed rows.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from mixofshow_core.fusion import Delta, dense

NEGATIVES = ("paper", "same_inputs")
SCHEDULES = ("constant", "cosine")


def _compress(x: torch.Tensor) -> torch.Tensor:
    """Rows F with Fᵀ F = xᵀ x and at most ``in`` of them: x itself, or the R of its QR when it has more rows."""
    if x.shape[0] <= x.shape[1]:
        return x
    return torch.linalg.qr(x, mode="r")[1]  # (in, in)


class ContrastiveProblem:
    """LoRACLR's loss for one layer as a function of the offset ``O`` [out, in] (see the module docstring).

    Built once from the stored features; ``terms(offset)`` evaluates every term (differentiable in ``offset``).
    """

    def __init__(self, w0: torch.Tensor, features: Sequence[torch.Tensor], deltas: Sequence[Delta | None],
                 margin: float = 0.5, negatives: str = "paper", dtype: torch.dtype = torch.float64) -> None:
        if len(features) != len(deltas) or not features:
            raise ValueError(f"LoRACLR needs one delta per concept's features, found {len(features)} features "
                             f"and {len(deltas)} deltas.")
        if negatives not in NEGATIVES:
            raise ValueError(f"negatives must be one of {NEGATIVES}, found {negatives!r}.")
        if margin < 0:
            raise ValueError(f"margin must be >= 0, found {margin}.")
        out_f, in_f = w0.shape
        self.margin = float(margin)
        self.w0 = w0.detach().to(dtype).clone()
        inputs = [x.detach().reshape(-1, in_f).to(device=w0.device, dtype=dtype).clone() for x in features]
        self.deltas = [dense(d).detach().to(self.w0).clone() if d is not None else torch.zeros_like(self.w0)
                       for d in deltas]
        self.rows = [x.shape[0] for x in inputs]
        self.elements = out_f * sum(self.rows)
        self.factors = [_compress(x) for x in inputs]  # positives: all rows
        n = len(inputs)
        if negatives == "paper":
            common = min(self.rows)
            neg_inputs = [x[:common] for x in inputs]
            outputs = [x @ (self.w0 + d).T for x, d in zip(neg_inputs, self.deltas)]  # Y_j = X_j W_jᵀ, (common, out)
            self.neg_factors = [f if r == common else _compress(x)
                                for f, r, x in zip(self.factors, self.rows, neg_inputs)]
            self.neg_same_rows = [r == common for r in self.rows]
        else:
            neg_inputs = inputs
            self.neg_factors = self.factors
            self.neg_same_rows = [True] * n
        self.pairs: list[list[tuple[torch.Tensor, torch.Tensor]]] = []  # per i: (K_ij, E_ij) for j != i
        for i in range(n):
            row = []
            for j in range(n):
                if j == i:
                    continue
                if negatives == "paper":
                    gap = outputs[i] - outputs[j]  # B_ij = Y_i − Y_j on the common rows, (common, out)
                else:
                    gap = neg_inputs[i] @ (self.deltas[i] - self.deltas[j]).T  # X_i (ΔW_i − ΔW_j)ᵀ, (n_i, out)
                row.append((gap.T @ neg_inputs[i], (gap ** 2).sum()))  # K_ij (out, in), E_ij
            self.pairs.append(row)

    def terms(self, offset: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every term at ``W = W₀ + offset``: ``positive`` [N] (d_ii²), ``negative`` [N] (min_{j≠i} d_ij; inf
        with one concept), ``hinge`` [N] (max(0, m − negative)²), ``con``, ``mse`` and ``reg`` (scalars)."""
        positive, nearest = [], []
        for i, delta in enumerate(self.deltas):
            residual = offset - delta  # A_i = W − W_i, (out, in)
            pos = ((self.factors[i] @ residual.T) ** 2).sum()
            positive.append(pos)
            if not self.pairs[i]:
                nearest.append(torch.full((), math.inf, dtype=pos.dtype, device=pos.device))
                continue
            base = pos if self.neg_same_rows[i] else ((self.neg_factors[i] @ residual.T) ** 2).sum()
            squared = torch.stack([base + 2 * (residual * k).sum() + e for k, e in self.pairs[i]])
            nearest.append(torch.sqrt(torch.clamp(squared, min=1e-12)).min())
        positive_t, nearest_t = torch.stack(positive), torch.stack(nearest)
        hinge = torch.clamp(self.margin - nearest_t, min=0.0) ** 2
        return {"positive": positive_t, "negative": nearest_t, "hinge": hinge,
                "con": (positive_t + hinge).mean(), "mse": positive_t.sum() / self.elements,
                "reg": torch.linalg.norm(offset)}

    def loss(self, offset: torch.Tensor, lambda_con: float, lambda_mse: float, lambda_reg: float) -> torch.Tensor:
        t = self.terms(offset)
        return lambda_con * t["con"] + lambda_mse * t["mse"] + lambda_reg * t["reg"]


def loraclr_fuse(
    w0: torch.Tensor,
    features: Sequence[torch.Tensor],
    deltas: Sequence[Delta | None],
    iters: int = 50,
    margin: float = 0.5,
    lr: float = 1e-4,
    lambda_con: float = 1.0,
    lambda_mse: float = 0.1,
    lambda_reg: float = 1e-3,
    weight_decay: float = 1e-4,
    negatives: str = "paper",
    schedule: str = "constant",
    dtype: torch.dtype = torch.float64,
    on_eval: Callable[[], None] | None = None,
) -> torch.Tensor:
    """LoRACLR's merge of one layer (module docstring: objective and the paper's settings, the defaults here).

    Args:
        w0: the base weight [out, in].
        features: per concept its inputs [n_i, in] (or [..., in]).
        deltas: per concept its change (``ScaledLoRA`` or dense [out, in]); None = no change.
        iters: AdamW steps (paper: 50).
        margin: m of the hinge, absolute, in output units of a whole [rows, out] block (paper: 0.5).
        negatives: "paper" (other concepts' outputs on their own inputs, row-paired) or "same_inputs".
        schedule: "constant" learning rate (paper) or "cosine" (annealed to 0 over ``iters``).
        dtype: precision of the optimisation (float64: positive distances stay exact near zero).
        on_eval: called before every loss evaluation (progress / interruption).

    Returns:
        The fused weight ``W₀ + O`` [out, in] in w0's dtype: the iterate with the lowest loss seen.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, found {schedule!r}.")
    with torch.inference_mode(False), torch.enable_grad():  # hosts run nodes in inference mode
        problem = ContrastiveProblem(w0, features, deltas, margin=margin, negatives=negatives, dtype=dtype)
        offset = torch.zeros_like(problem.w0).requires_grad_(True)
        optimizer = torch.optim.AdamW([offset], lr=lr, weight_decay=weight_decay)
        best_loss, best = math.inf, offset.detach().clone()
        for step in range(iters + 1):  # the last pass only scores the final iterate
            if on_eval is not None:
                on_eval()
            loss = problem.loss(offset, lambda_con, lambda_mse, lambda_reg)
            if loss.item() < best_loss:
                best_loss, best = loss.item(), offset.detach().clone()
            if step == iters:
                break
            if schedule == "cosine":
                for group in optimizer.param_groups:
                    group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / iters))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return (problem.w0 + best).to(w0.dtype)
