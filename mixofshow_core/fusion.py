"""Gradient fusion at the center node (spec §2), solved exactly from streamed Gram statistics.

Per fused linear layer (row convention ``y = x Wᵀ``), concept i brings inputs ``X_i`` [n_i, in] and
its own weight ``W_i = W₀ + ΔW_i``. The paper's objective

    min_W  Σ_i ‖X_i Wᵀ − X_i W_iᵀ‖²  (+ λ ‖W − W₀‖²  with the ridge option)

has normal equations ``(W − W₀)(G + λI) = Σ_i ΔW_i G_i`` with ``G_i = X_iᵀ X_i``, ``G = Σ_i G_i``. Its
solution closest to W₀ (what L-BFGS started at W₀ converges to) is

    W* = W₀ + (Σ_i ΔW_i G_i) (G + λI)⁺.

With an anchor A (e.g. the weight average Σ_i ΔW_i / n) the ridge pulls toward W₀ + A instead of W₀:
``λ ‖W − W₀ − A‖²``, so ``W* = W₀ + A + (C − A G)(G + λI)⁺``. Directions the features barely excite then
keep the average's change rather than being extrapolated (benchmarks/bench_fusion_safety.py).

``GramStats`` accumulates ``G`` and ``C = Σ_i ΔW_i G_i`` while features stream past (no feature
storage: memory does not grow with the number of concepts or rows). Modules that read the same input
(e.g. attn1 to_q/to_k/to_v) share one Gram matrix. ``lbfgs_fuse`` is the paper's per-layer L-BFGS on
stored features (reference mode) and ``average_deltas`` the weight-averaging baseline.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from .lora import LoRAPair


@dataclass(frozen=True)
class ScaledLoRA:
    """A concept's delta for one layer in factored form: ``alpha * up @ down``."""

    pair: LoRAPair
    alpha: float

    def dense(self) -> torch.Tensor:
        return self.pair.delta(self.alpha)  # (out, in)

    def times(self, gram: torch.Tensor) -> torch.Tensor:
        """``ΔW @ gram`` using the low rank: (out, r) @ ((r, in) @ (in, in))."""
        up = self.pair.up.to(gram)
        down = self.pair.down.to(gram)
        return self.alpha * (up @ (down @ gram))  # (out, in)


Delta = ScaledLoRA | torch.Tensor


def dense(delta: Delta) -> torch.Tensor:
    return delta.dense() if isinstance(delta, ScaledLoRA) else delta


@dataclass
class GramStats:
    """Streaming statistics of the modules that share one input.

    Attributes:
        in_features: width of the shared input.
        out_features: module name -> its output width.
        gram: Σ_i w_i X_iᵀ X_i, [in, in].
        cross: module name -> Σ_i w_i ΔW_i X_iᵀ X_i, [out, in].
        energy: module name -> Σ_i w_i ‖X_i ΔW_iᵀ‖² (scalar), for the objective value.
        rows: number of feature rows seen.
    """

    in_features: int
    out_features: dict[str, int]
    dtype: torch.dtype = torch.float64
    device: torch.device | str = "cpu"
    gram: torch.Tensor = field(init=False)
    cross: dict[str, torch.Tensor] = field(init=False)
    energy: dict[str, torch.Tensor] = field(init=False)
    rows: int = 0

    def __post_init__(self) -> None:
        self.gram = torch.zeros(self.in_features, self.in_features, dtype=self.dtype, device=self.device)
        self.cross = {m: torch.zeros(o, self.in_features, dtype=self.dtype, device=self.device)
                      for m, o in self.out_features.items()}
        self.energy = {m: torch.zeros((), dtype=self.dtype, device=self.device) for m in self.out_features}

    def add(self, x: torch.Tensor, deltas: Mapping[str, Delta | None], weight: float = 1.0) -> None:
        """Fold in features ``x`` [..., in] of one concept whose deltas are ``deltas`` (missing = 0)."""
        rows = x.reshape(-1, self.in_features).to(device=self.device, dtype=self.dtype)  # (n, in)
        g = rows.T @ rows  # (in, in)
        self.gram += weight * g
        self.rows += rows.shape[0]
        for module, delta in deltas.items():
            if delta is None:
                continue
            if isinstance(delta, ScaledLoRA):
                self.cross[module] += weight * delta.times(g)
                low = rows @ delta.pair.down.to(g).T  # (n, r)
                self.energy[module] += weight * delta.alpha ** 2 * ((low @ delta.pair.up.to(g).T) ** 2).sum()
            else:
                self.cross[module] += weight * (delta.to(g) @ g)
                self.energy[module] += weight * ((rows @ delta.to(g).T) ** 2).sum()

    def add_pair(self, x: torch.Tensor, x_own: torch.Tensor, deltas: Mapping[str, Delta | None],
                 base: Mapping[str, torch.Tensor]) -> None:
        """Fold in features ``x`` [n, in] that the fused model's earlier layers produce, whose targets are the
        concept's own layer on its own inputs ``x_own`` [n, in] (same tokens): ``x_own (W₀ + ΔW_i)ᵀ``. The
        objective becomes Σ_i ‖X_i Wᵀ − X_own,i W_iᵀ‖², solved by the same normal equations with the cross term
        ``C = Σ_i R_iᵀ X_i``, ``R_i = X_own,i W_iᵀ − X_i W₀ᵀ``. ``base``: module -> W₀ [out, in]."""
        rows = x.reshape(-1, self.in_features).to(device=self.device, dtype=self.dtype)  # (n, in)
        own = x_own.reshape(-1, self.in_features).to(rows)  # (n, in)
        if own.shape != rows.shape:
            raise ValueError(f"paired features differ in shape: fused {list(rows.shape)}, own {list(own.shape)}")
        self.gram += rows.T @ rows
        self.rows += rows.shape[0]
        for module in self.cross:
            w0 = base[module].to(rows)  # (out, in)
            target = (own - rows) @ w0.T  # (n, out): what the inputs' difference alone changes
            delta = deltas.get(module)
            if delta is not None:
                target = target + own @ dense(delta).to(rows).T
            self.cross[module] += target.T @ rows
            self.energy[module] += (target ** 2).sum()

    def solve(self, ridge: float = 0.0, rtol: float = 1e-10, out_dtype: torch.dtype = torch.float32,
              anchor: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Fused deltas ``W* − W₀`` per module, [out, in] in ``out_dtype``.

        Args:
            ridge: λ as a fraction of the mean Gram eigenvalue (tr(G)/in); 0 = the exact
                minimum-change solution.
            rtol: eigenvalues below rtol·max are treated as zero in the pseudo-inverse.
            anchor: module -> the change the ridge pulls toward, [out, in] (None: no change, W₀).
        """
        names = list(self.cross)
        base = torch.cat([anchor[m].to(self.gram) if anchor else torch.zeros_like(self.cross[m]) for m in names])
        stacked = torch.cat([self.cross[m] for m in names]) - base @ self.gram  # (Σ out, in): C − A G
        if ridge > 0:  # G + λI is positive definite: Cholesky, ~20x cheaper than an eigendecomposition
            scale = ridge * torch.trace(self.gram) / self.in_features
            eye = torch.eye(self.in_features, dtype=self.gram.dtype, device=self.gram.device)
            factor, info = torch.linalg.cholesky_ex(self.gram + scale * eye)
            if int(info) == 0:
                solved = torch.cholesky_solve(stacked.T, factor).T  # C (G + λI)⁻¹
            else:  # all-zero statistics (nothing seen) or numerically indefinite
                solved = stacked @ torch.linalg.pinv(self.gram + scale * eye, hermitian=True, rtol=rtol)
        else:
            solved = stacked @ torch.linalg.pinv(self.gram, hermitian=True, rtol=rtol)  # (Σ out, in)
        solved = solved + base
        parts = solved.split([self.cross[m].shape[0] for m in names])
        return {m: p.to(out_dtype) for m, p in zip(names, parts)}

    def relative_residual(self, module: str, delta: torch.Tensor) -> float:
        """Objective Σ_i ‖X_i (Δ − ΔW_i)ᵀ‖² of a fused delta, relative to Σ_i ‖X_i ΔW_iᵀ‖² (0 = every
        concept's layer reproduced exactly on its features; 1 = as bad as keeping W₀)."""
        d = delta.to(self.gram)
        value = (d @ self.gram * d).sum() - 2 * (d * self.cross[module]).sum() + self.energy[module]
        energy = float(self.energy[module])
        return max(float(value), 0.0) / energy if energy > 0 else 0.0


def average_deltas(deltas: Sequence[Delta | None], out_features: int, in_features: int) -> torch.Tensor:
    """The weight-fusion baseline (spec §2.6): ``Σ_i ΔW_i / n`` with missing deltas counted as 0."""
    total = torch.zeros(out_features, in_features)
    for delta in deltas:
        if delta is not None:
            total += dense(delta).float()
    return total / max(len(deltas), 1)


def lbfgs_fuse(
    w0: torch.Tensor,
    features: Sequence[torch.Tensor],
    deltas: Sequence[Delta | None],
    iters: int,
    chunk_rows: int = 5000,
    on_eval: Callable[[], None] | None = None,
) -> torch.Tensor:
    """The paper's per-layer solver (spec §2.2) on stored features; returns the fused weight [out, in].

    Loss ``mse(K Wᵀ, V)`` over all concepts' rows, ``torch.optim.LBFGS(lr=1, max_iter=iters,
    history_size=25, line_search_fn="strong_wolfe", tolerances 1e-16)`` started at W₀, keeping the best W.
    """
    with torch.inference_mode(False), torch.enable_grad():  # hosts run nodes in inference mode
        w0 = w0.float().clone()
        inputs = [x.reshape(-1, w0.shape[1]).float().clone() for x in features]
        targets = [x @ (w0 + (dense(d).float().clone() if d is not None else 0)).T for x, d in zip(inputs, deltas)]
        total = sum(t.numel() for t in targets)
        weight = w0.clone().requires_grad_(True)
        optimizer = torch.optim.LBFGS([weight], lr=1, max_iter=iters, history_size=25,
                                      line_search_fn="strong_wolfe", tolerance_grad=1e-16, tolerance_change=1e-16)
        best = {"loss": float("inf"), "w": w0.clone()}

        def closure():
            if on_eval is not None:
                on_eval()
            optimizer.zero_grad()
            loss = torch.zeros((), dtype=torch.float32)
            for x, y in zip(inputs, targets):
                for start in range(0, x.shape[0], chunk_rows):
                    part = x[start:start + chunk_rows] @ weight.T - y[start:start + chunk_rows]  # (rows, out)
                    loss = loss + (part ** 2).sum()
            loss = loss / total
            loss.backward()
            if loss.item() < best["loss"]:
                best["loss"], best["w"] = loss.item(), weight.detach().clone()
            return loss

        optimizer.step(closure)
    return best["w"]


def objective(delta: torch.Tensor, features: Sequence[torch.Tensor], deltas: Sequence[Delta | None]) -> float:
    """Σ_i ‖X_i (Δ − ΔW_i)ᵀ‖² for a fused delta Δ [out, in] (what every solver minimises)."""
    total = 0.0
    for x, d in zip(features, deltas):
        x2 = x.reshape(-1, delta.shape[1]).double()
        diff = delta.double() - (dense(d).double() if d is not None else 0)
        total += float(((x2 @ diff.T) ** 2).sum())
    return total


def delta_growth(fused_delta: torch.Tensor, deltas: Sequence[Delta | None]) -> float:
    """‖Δ‖ / √(Σ_i ‖ΔW_i‖²) (Frobenius): 1 is the size of all concepts' changes added up as if they were
    orthogonal, which no fair compromise between them exceeds by much. Well above 1 the solution
    extrapolates along directions the features barely cover (an ill-conditioned Gram); a larger ridge
    pulls it back. 0 when no concept changes the layer."""
    own = sum(float(dense(d).double().norm()) ** 2 for d in deltas if d is not None) ** 0.5
    return float(fused_delta.double().norm()) / own if own > 0 else 0.0


def relative_output_error(w0: torch.Tensor, fused_delta: torch.Tensor, x: torch.Tensor, delta: Delta | None) -> float:
    """‖X(W₀+Δ)ᵀ − X W_iᵀ‖ / ‖X W_iᵀ‖: how far the fused layer is from concept i's own on its inputs."""
    x2 = x.reshape(-1, w0.shape[1]).double()
    own = w0.double() + (dense(delta).double() if delta is not None else 0)
    fused = w0.double() + fused_delta.double()
    return float(torch.linalg.norm(x2 @ (fused - own).T) / torch.linalg.norm(x2 @ own.T))
