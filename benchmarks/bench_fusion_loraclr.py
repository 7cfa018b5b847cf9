"""LoRACLR's contrastive merge vs the closed form vs averaging, per layer, on identical captured features.

Phase 1 is bench_fusion.py's capture (imported, same file): the real fusion pipeline on the generated full-size
SD1.5-shaped checkpoint (random weights) with N random official-layout concepts records the features streaming
into its representative layers (bench_fusion.LAYERS: a text-encoder q_proj, two cross-attention K/V, three other
UNet attention layers). An existing file is reused unless ``--recapture``. Phase 2 (core only) solves every layer
for 1 and N concepts with:

    C      closed form at the node's default ridge for the stage: FusionConfig().ridge for the text encoder and
           K/V, FusionConfig().spatial_ridge for the other UNet attention layers (timed: Gram accumulation + solve)
    C0     closed form at ridge 0 (the exact minimum of Σ_i ‖X_i(W − W_i)ᵀ‖²)
    L      LoRACLR at the paper's settings (benchmarks/loraclr.py): AdamW lr 1e-4, 50 steps, margin 0.5,
           λ_mse 0.1, λ_reg 1e-3, negatives = other concepts' outputs on their own inputs
    L*     the same loss with the optimiser run to a settled optimum: lr = 0.05 × the RMS element of the
           concepts' changes, cosine-annealed over --long-iters steps (is the paper's budget what limits it?)
    Lm     LoRACLR with a margin that binds: negatives X_i W_jᵀ (concept j's layer on concept i's inputs) and
           m = max_{i≠j} S_ij (S below), so that for every concept the hinge is active at exact reproduction; L*'s
           optimiser
    avg    the weight average Σ_i ΔW_i / N
    Cμ     a probe, not a node mode: the closed form of the positive term minus a quadratic repulsion,
           min_W Σ_i ‖X_i(W − W_i)ᵀ‖² − μ Σ_i mean_{j≠i} ‖X_i(W − W_j)ᵀ‖² (convex for μ < 1), solved as
           W − W₀ = Σ_i (ΔW_i − μ mean_{j≠i} ΔW_j) G_i (G + λI)⁻¹ / (1 − μ) at C's ridge, with μ ∈ [0, 1) set by
           bisection so that its mean own error equals Lm's: the separation the closed form buys at Lm's own error

Measures (W the merged layer, W_i = W₀ + ΔW_i concept i's own, X_i its features):
* own_i = ‖X_i(W − W_i)ᵀ‖ / ‖X_i W_iᵀ‖: own-prompt relative output error; mean and worst over concepts.
* separation s_ij = ‖X_i(W − W_j)ᵀ‖ / S_ij with S_ij = ‖X_i(W_i − W_j)ᵀ‖, over ordered pairs i ≠ j: how far the
  merged output on concept i's features is from concept j's own output on those same features, relative to how
  far concept i's own output is from it. 1 = as separated from j as concept i alone; 0 = the merged layer gives
  concept j's output there (full bleed); lower = more bleed. Above 1 the merge overshoots away from j (which also
  shows as own error). Mean and worst (min) over pairs.
* bleed b_ij = ⟨X_i(W − W_i)ᵀ, X_i(W_j − W_i)ᵀ⟩ / S_ij²: the fraction of the way from concept i's output toward
  concept j's that the merged output went (0 none, 1 all of it, < 0 pushed away); worst (max) over pairs. For
  two concepts averaging gives exactly s = 0.5, b = 0.5.
Ratios ×C: time and mean own error against C. LoRACLR runs in float32 (the authors' script runs fp16 autocast);
all measures are evaluated in float64. One run per case (--repeats for medians).

``--model testbed`` captures on the tiny SD1 testbed instead (UNet 32 channels, text width 64, two text layers:
the text layer is layers.1), same pipeline and file layout, for a quick run where the full size does not fit.

    eval "$(bash scripts/host/provision.sh)"
    $MOS_PYTHON benchmarks/bench_fusion_loraclr.py [--concepts 3] [--features PATH] [--recapture] [--long-iters 300]
    $MOS_PYTHON benchmarks/bench_fusion_loraclr.py --model testbed --features .cache/bench/loraclr_testbed.safetensors
"""
from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import time

import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_fusion  # noqa: E402  (puts the repo and scripts/ on sys.path)

from loraclr import loraclr_fuse  # noqa: E402
from mixofshow_core.config import FusionConfig  # noqa: E402
from mixofshow_core.fusion import GramStats, ScaledLoRA, average_deltas, dense  # noqa: E402
from mixofshow_core.lora import LoRAPair  # noqa: E402

METHODS = ("C", "C0", "L", "L*", "Lm", "avg", "Cμ")
def _closed(w0, feats, deltas, ridge):
    stats = GramStats(w0.shape[1], {"w": w0.shape[0]})
    for x, d in zip(feats, deltas):
        stats.add(x, {"w": d})
    return stats.solve(ridge=ridge, out_dtype=torch.float64)["w"]


def _stage_ridge(stage: str) -> float:
    cfg = FusionConfig()
    return cfg.spatial_ridge if stage == "UNet attention" else cfg.ridge


def _repulsion_parts(stage, w0, feats, deltas):
    """(A, B) with the Cμ solution (A − μ B) / (1 − μ): A = Σ_i ΔW_i G_i (G+λI)⁻¹, B = Σ_i mean_{j≠i} ΔW_j G_i (…)⁻¹."""
    n = len(feats)
    stats = GramStats(w0.shape[1], {"pos": w0.shape[0], "neg": w0.shape[0]})
    dense_deltas = [dense(d).double() for d in deltas]
    for i, x in enumerate(feats):
        others = sum((dense_deltas[j] for j in range(n) if j != i), torch.zeros_like(dense_deltas[i])) / max(n - 1, 1)
        stats.add(x, {"pos": dense_deltas[i], "neg": others})
    solved = stats.solve(ridge=_stage_ridge(stage), out_dtype=torch.float64)
    return solved["pos"], solved["neg"]


def _match_own(parts, w0, feats, deltas, target: float) -> tuple[torch.Tensor, float]:
    """Cμ with μ set by bisection so that the mean own error is ``target`` (μ = 0 when C is already there)."""
    a, b = parts

    def fused(mu):
        return (a - mu * b) / (1 - mu)

    def own(mu):
        return statistics.mean(_measures(w0, fused(mu), feats, deltas)[0])

    if len(feats) < 2 or own(0.0) >= target:
        return fused(0.0), 0.0
    lo, hi = 0.0, 0.999
    if own(hi) <= target:
        return fused(hi), hi
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if own(mid) < target else (lo, mid)
    return fused(lo), lo


def _pair_gaps(w0, feats, deltas):
    """S_ij = ‖X_i(ΔW_i − ΔW_j)ᵀ‖ for ordered pairs i ≠ j."""
    return {(i, j): float(torch.linalg.norm(feats[i] @ (dense(deltas[i]) - dense(deltas[j])).T))
            for i, j in itertools.permutations(range(len(feats)), 2)}


def _measures(w0, fused, feats, deltas):
    """own errors [N], separations and bleeds {(i, j): value} of the fused change ``fused`` [out, in]."""
    own, sep, bleed = [], {}, {}
    residual = [x @ (fused - dense(d)).T for x, d in zip(feats, deltas)]  # X_i (W − W_i)ᵀ
    for i, (x, d) in enumerate(zip(feats, deltas)):
        own.append(float(torch.linalg.norm(residual[i]) / torch.linalg.norm(x @ (w0 + dense(d)).T)))
    for i, j in itertools.permutations(range(len(feats)), 2):
        toward = feats[i] @ (dense(deltas[j]) - dense(deltas[i])).T  # X_i (W_j − W_i)ᵀ
        gap = float(torch.linalg.norm(toward))
        if gap == 0:
            continue
        sep[(i, j)] = float(torch.linalg.norm(residual[i] - toward)) / gap
        bleed[(i, j)] = float((residual[i] * toward).sum()) / gap ** 2
    return own, sep, bleed


def _solve(method, stage, w0, feats, deltas, long_iters):
    if method in ("C", "C0"):
        return _closed(w0, feats, deltas, 0.0 if method == "C0" else _stage_ridge(stage))
    if method == "Cμ":  # the two solves; μ is matched afterwards (a measuring harness, not timed)
        return _repulsion_parts(stage, w0, feats, deltas)
    if method == "avg":
        return average_deltas(deltas, *w0.shape).double()
    feats32 = [f.float() for f in feats]
    if method == "L":
        return loraclr_fuse(w0.float(), feats32, deltas, dtype=torch.float32).double() - w0
    rms = statistics.mean(float(dense(d).double().pow(2).mean()) for d in deltas) ** 0.5
    settled = {"iters": long_iters, "lr": 0.05 * rms, "schedule": "cosine", "dtype": torch.float32}
    if method == "L*":
        return loraclr_fuse(w0.float(), feats32, deltas, **settled).double() - w0
    gaps = _pair_gaps(w0, feats, deltas)
    margin = max(gaps.values()) if gaps else 0.0
    return loraclr_fuse(w0.float(), feats32, deltas, margin=margin, negatives="same_inputs", **settled).double() - w0


def compare(path: str, counts: list[int], long_iters: int, repeats: int, methods=METHODS) -> None:
    data = load_file(path)
    total = max(int(k.rsplit(".", 1)[1]) for k in data if k.startswith("x.")) + 1
    counts = [n for n in counts if n <= total]
    print(f"\nper-layer merge on identical captured features ({path}; CPU threads {torch.get_num_threads()}; "
          f"L* and Lm: {long_iters} steps)")
    header = (f"{'stage':14s} {'module':44s} {'N':>2s} {'rows':>6s} {'method':8s} | {'time s':>8s} {'×C':>7s} | "
              f"{'own mean':>9s} {'own worst':>9s} {'×C':>7s} | {'sep mean':>8s} {'sep worst':>9s} "
              f"{'bleed worst':>11s}")
    print(header)
    print("-" * len(header))
    summary: dict[tuple[int, str], list[tuple[float, float, float, float]]] = {}
    full = all(f"w0.{m}" in data for _, _, m, _ in bench_fusion.LAYERS)
    layers = bench_fusion.LAYERS if full else bench_fusion.TESTBED_LAYERS
    for stage, group, module, _ in layers:
        w0 = data[f"w0.{module}"].double()
        for n in counts:
            feats = [data[f"x.{group}.{i}"].double() for i in range(n)]
            deltas = [ScaledLoRA(LoRAPair(data[f"down.{module}.{i}"].double(), data[f"up.{module}.{i}"].double()), 1.0)
                      for i in range(n)]
            rows = sum(f.shape[0] for f in feats)
            times: dict[str, list[float]] = {m: [] for m in methods}
            fused = {}
            for _ in range(repeats):  # interleaved repeats
                for method in methods:
                    start = time.perf_counter()
                    fused[method] = _solve(method, stage, w0, feats, deltas, long_iters)
                    times[method].append(time.perf_counter() - start)
            label = {m: m for m in methods}
            if "Cμ" in fused:
                target = statistics.mean(_measures(w0, fused["Lm"], feats, deltas)[0])
                fused["Cμ"], mu = _match_own(fused["Cμ"], w0, feats, deltas, target)
                label["Cμ"] = f"Cμ{mu:.3f}"
            results = {m: _measures(w0, fused[m], feats, deltas) for m in methods}
            t_c = statistics.median(times["C"])
            own_c = statistics.mean(results["C"][0])
            short = module.replace("transformer_blocks.0.", "").replace("text_model.encoder.", "")
            for method in methods:
                own, sep, bleed = results[method]
                t = statistics.median(times[method])
                own_mean = statistics.mean(own)
                ratio = own_mean / own_c if own_c > 0 else float("nan")
                seps = (f"{statistics.mean(sep.values()):8.3f} {min(sep.values()):9.3f} {max(bleed.values()):11.3f}"
                        if sep else f"{'-':>8s} {'-':>9s} {'-':>11s}")
                print(f"{stage:14s} {short:44s} {n:2d} {rows:6d} {label[method]:8s} | {t:8.3f} {t / t_c:7.1f} | "
                      f"{own_mean:9.2e} {max(own):9.2e} {ratio:7.2f} | {seps}")
                summary.setdefault((n, method), []).append(
                    (t, ratio, min(sep.values(), default=float("nan")), max(bleed.values(), default=float("nan"))))
            print()
    print("C: closed form at the node's default ridge (text encoder, K/V: ridge; UNet attention: spatial_ridge); "
          "C0: ridge 0; L: LoRACLR, paper settings; L*: same loss, optimiser settled; Lm: binding margin on X_i W_jᵀ; "
          "avg: weight average; Cμ: closed form minus μ × quadratic repulsion, μ matched to Lm's mean own error")
    print("own: ‖X_i(W−W_i)ᵀ‖/‖X_i W_iᵀ‖; sep: ‖X_i(W−W_j)ᵀ‖/‖X_i(W_i−W_j)ᵀ‖ (1 = as apart from concept j as "
          "concept i alone, lower = more bleed); bleed: share of the way from i's output to j's; ×C: against C")
    print("summary per N and method over the layers: total time, median own-error ratio to C, worst separation, "
          "worst bleed")
    for (n, method), rows in sorted(summary.items()):
        sep = min((r[2] for r in rows), default=float("nan"))
        bleed = max((r[3] for r in rows), default=float("nan"))
        own = statistics.median(r[1] for r in rows)
        print(f"  N={n:2d} {method:4s}: time {sum(r[0] for r in rows):8.2f} s   own/C {own:9.2f}   "
              f"worst separation {sep:6.3f}   worst bleed {bleed:6.3f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concepts", type=int, default=3, help="concepts captured (phase 1) and merged (phase 2)")
    parser.add_argument("--model", choices=["sd15", "testbed"], default="sd15",
                        help="capture on the full-size SD1.5 shape (bench_fusion.capture) or the tiny testbed")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--features", default=os.path.join(bench_fusion.REPO, ".cache", "bench",
                                                           "fusion_features.safetensors"),
                        help="bench_fusion.py's capture file (written there when missing or with --recapture)")
    parser.add_argument("--recapture", action="store_true")
    parser.add_argument("--long-iters", type=int, default=300, help="steps of L* and Lm")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    if args.recapture or not os.path.exists(args.features):
        os.makedirs(os.path.dirname(os.path.abspath(args.features)), exist_ok=True)
        bench_fusion.capture(args.features, args.concepts, args.resolution, args.steps, testbed=args.model != "sd15")
    compare(args.features, sorted({1, args.concepts}), args.long_iters, args.repeats)


if __name__ == "__main__":
    main()
