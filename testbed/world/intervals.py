"""How sure the fidelity numbers are: a paired two-level bootstrap for the fusion drop ratio, and Wilson
intervals for shares of boxes.

Host-free, numpy only. The benchmark samples a few images per concept, so a drop of 0.05 in the attribute
score can be noise; these intervals say when it is.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from statistics import NormalDist

import numpy as np

__all__ = ["binding_interval", "drop_ratio_interval", "wilson"]


def wilson(successes: int, n: int, level: float = 0.9) -> tuple[float, float]:
    """Wilson score interval of a share ``successes / n`` at two-sided ``level`` (0.9: 5 % either side)."""
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"wilson needs 0 <= successes <= n and n > 0; got successes={successes}, n={n}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1); got {level}")
    z = NormalDist().inv_cdf((1 + level) / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def binding_interval(score: Mapping[str, float], level: float = 0.9) -> tuple[float, float]:
    """Wilson interval of ``score['right']`` for a fidelity.binding result (its share and its 'boxes')."""
    n = int(score["boxes"])
    return wilson(round(score["right"] * n), n, level)


def drop_ratio_interval(single: Sequence[Sequence[float]], gradient: Sequence[Sequence[float]],
                        average: Sequence[Sequence[float]], target: float = 1 / 3, draws: int = 2000,
                        level: float = 0.9, seed: int = 0) -> dict[str, float]:
    """Bootstrap of (single - gradient) / (single - average), the identity drop of gradient fusion over
    that of weight averaging. Each argument is [concepts][images] per-image scores, paired: image j of
    concept i comes from the same seed in all three. Each draw resamples concepts, then images within each
    drawn concept (both with replacement). A draw where averaging loses nothing has no finite ratio and
    counts as +inf (no evidence for gradient fusion). Returns the ratio on the data, the interval's ``low``
    and ``high`` ends at ``level``, and ``meets``: the share of draws with a ratio at or below ``target``."""
    s, g, a = (np.asarray(x, dtype=np.float64) for x in (single, gradient, average))  # each (C, I)
    if s.ndim != 2 or s.size == 0 or s.shape != g.shape or s.shape != a.shape:
        raise ValueError(f"drop_ratio_interval needs three equal [concepts][images] score grids; got shapes "
                         f"{s.shape}, {g.shape}, {a.shape}")
    concepts, images = s.shape
    rng = np.random.default_rng(seed)
    pick_c = rng.integers(concepts, size=(draws, concepts))  # (D, C)
    pick_i = rng.integers(images, size=(draws, concepts, images))  # (D, C, I)
    rows = pick_c[:, :, None]

    def mean(x: np.ndarray) -> np.ndarray:  # (D,)
        return x[rows, pick_i].mean(axis=(1, 2))

    ratios = _ratio(mean(s) - mean(g), mean(s) - mean(a))
    ordered = np.sort(ratios)
    tail = (1 - level) / 2
    low = ordered[int(math.floor(tail * draws))]
    high = ordered[min(draws - 1, int(math.ceil((1 - tail) * draws)) - 1)]
    ratio = _ratio(np.array([s.mean() - g.mean()]), np.array([s.mean() - a.mean()]))[0]
    return {"ratio": float(ratio), "low": float(low), "high": float(high), "meets": float((ratios <= target).mean()),
            "draws": float(draws)}


def _ratio(drop_gradient: np.ndarray, drop_average: np.ndarray) -> np.ndarray:
    out = np.full(drop_gradient.shape, np.inf)
    ok = drop_average > 1e-12
    out[ok] = drop_gradient[ok] / drop_average[ok]
    return out

