"""Gradient fusion cost as concepts are added: time split and peak memory at 2, 4 and 8 concepts.

Each count runs in its own process on the generated full-size SD1.5-shaped checkpoint (random weights) with
official-layout random concepts (``--model sdxl``: the full-size SDXL shape with SDXL concepts), through the
Gradient Fusion node's pipeline (closed form, default ridges).
Printed per count: seconds in feature extraction (encoding and sampling with each concept), statistics (folding
features into Gram matrices), solve, and the LoRA write; the share of statistics + solve; the process's peak
memory above what it held once the model was loaded (the memory fusion itself needs); and each stage's worst
relative residual. ``--fp64`` accumulates the statistics in float64 instead of the node's float32, to compare.

    eval "$(bash scripts/host/provision.sh)"; $MOS_PYTHON benchmarks/bench_fusion_scale.py [--counts 2,4,8]
    $MOS_PYTHON benchmarks/bench_fusion_scale.py --model sdxl --bf16-unet [--counts 2,4,8]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))
import checkpoints  # noqa: E402


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(count: int, resolution: int, steps: int, fp64: bool, family: str, bf16: bool) -> dict:
    import torch

    import comfy_host

    host = comfy_host.boot(tempfile.mkdtemp(prefix="mos-bench-scale-"))
    import comfy.cli_args
    import nodes

    comfy.cli_args.args.bf16_unet = bf16  # as main.py --bf16-unet: the UNet in bfloat16

    glue, formats = host.pack("nodes.fusion.pipeline"), host.pack("mixofshow_core.formats")
    kohya, config = host.pack("mixofshow_core.formats.kohya"), host.pack("mixofshow_core.config")
    with torch.inference_mode():
        model, clip = checkpoints.load(host, family)[:2]
        nodes.CLIPTextEncode().encode(clip, "warm up")  # the text encoder loaded, as before any fusion
        items = []
        for i in range(count):
            name = f"c{i}.safetensors" if family == "sdxl" else f"c{i}.pth"
            path = checkpoints.concept(host, family, name, (f"<c{i}a>", f"<c{i}b>"), seed=200 + i)
            items.append(glue.FusionItem(formats.load_concept(path)))
        loaded = _peak_mb()
        start = time.perf_counter()
        cfg = config.FusionConfig(resolution=resolution, steps=steps, accumulate_fp64=fp64)
        _, _, deltas, report = glue.fuse(model, clip, items, cfg)
        fused_s = time.perf_counter() - start
        start = time.perf_counter()
        kohya.write_diff(deltas["text"], deltas["unet"], os.path.join(host.workdir, "fused.safetensors"),
                         "sdxl" if family == "sdxl" else "sd1")
        write_s = time.perf_counter() - start
    statistics, solve = sum(report.statistics_s.values()), sum(report.solve_s.values())
    return {"features": fused_s - statistics - solve, "statistics": statistics, "solve": solve, "write": write_s,
            "extra_mb": _peak_mb() - loaded, "loaded_mb": loaded, "residual": report.residual}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", default="2,4,8")
    parser.add_argument("--resolution", type=int, default=64, help="feature collection image size (node: 512)")
    parser.add_argument("--steps", type=int, default=2, help="feature collection steps (node: 20)")
    parser.add_argument("--fp64", action="store_true", help="accumulate statistics in float64 (node default: fp32)")
    parser.add_argument("--model", choices=checkpoints.FAMILIES, default="sd15")
    parser.add_argument("--bf16-unet", action="store_true", help="the UNet in bfloat16, as main.py --bf16-unet (on "
                        "this 24 GB CPU machine the full-size SDXL fusion needs it)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(_child(args.child, args.resolution, args.steps, args.fp64, args.model,
                                            args.bf16_unet)))
        return
    rows = {}
    for count in (int(c) for c in args.counts.split(",")):
        cmd = [sys.executable, __file__, "--child", str(count), "--resolution", str(args.resolution),
               "--steps", str(args.steps), "--model", args.model] + (["--fp64"] if args.fp64 else []) + (
                   ["--bf16-unet"] if args.bf16_unet else [])
        out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            print(f"{count} concepts: failed\n{out.stderr[-2000:]}")
            continue
        rows[count] = json.loads(line[len("RESULT "):])
    print(f"\ngradient fusion, {checkpoints.NAMES[args.model]}, closed form, features at {args.resolution}px x "
          f"{args.steps} steps, statistics in {'fp64' if args.fp64 else 'fp32'}"
          + (", UNet in bf16" if args.bf16_unet else ""))
    print(f"{'concepts':>8} {'features s':>11} {'statistics s':>13} {'solve s':>8} {'write s':>8} "
          f"{'stats+solve':>12} {'peak extra MB':>14} {'model loaded MB':>16}")
    for count, r in rows.items():
        total = r["features"] + r["statistics"] + r["solve"] + r["write"]
        share = (r["statistics"] + r["solve"]) / total
        print(f"{count:>8} {r['features']:>11.1f} {r['statistics']:>13.1f} {r['solve']:>8.1f} {r['write']:>8.2f} "
              f"{share:>11.0%} {r['extra_mb']:>14.0f} {r['loaded_mb']:>16.0f}")
    print("worst relative residual per stage (0 = each concept reproduced on its own features):")
    for count, r in rows.items():
        print(f"{count:>8} " + ", ".join(f"{stage} {value:.3e}" for stage, value in r["residual"].items()))


if __name__ == "__main__":
    main()
