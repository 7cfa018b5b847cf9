"""Regional sampling cost: 0, 2, 4, 8 regions against plain sampling on the same model, same run.

Full-size SD1.5- or SDXL-shaped checkpoint (random weights), CFG with cond and uncond batched; boxes tile the
image side by side. Median of interleaved repeats; ratios to plain sampling.

    eval "$(bash scripts/host/provision.sh)"; $MOS_PYTHON benchmarks/bench_regional.py [--size 256 --steps 3]
    $MOS_PYTHON benchmarks/bench_regional.py --model sdxl --size 1024 --counts 2,4 --repeats 1
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))
import checkpoints  # noqa: E402

import comfy_host  # noqa: E402
from timing import interleaved_medians  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", choices=checkpoints.FAMILIES, default="sd15")
    parser.add_argument("--counts", default="2,4,8", help="region counts, comma separated")
    args = parser.parse_args()
    import torch

    host = comfy_host.boot(tempfile.mkdtemp(prefix="mos-bench-regional-"))
    import nodes

    region_nodes = host.pack("nodes.regions.nodes")
    with torch.inference_mode():
        model, clip = checkpoints.load(host, args.model)[:2]
        positive = nodes.CLIPTextEncode().encode(clip, "a street at night, people walking")[0]
        negative = nodes.CLIPTextEncode().encode(clip, "lowres")[0]
        latent = nodes.EmptyLatentImage().generate(args.size, args.size, 1)[0]
        models = {"plain": model}
        for count in map(int, args.counts.split(",")):
            regions = None
            for i in range(count):
                regions = region_nodes.RegionPrompt().add(clip, f"person number {i}", "blurry", i / count, 0.0,
                                                          1.0 / count, 1.0, 1.0, regions=regions)[0]
            models[f"{count} regions"] = region_nodes.ApplyRegions().apply(model, regions)[0]

        def run(m):
            return lambda: nodes.common_ksampler(m, 0, args.steps, 7.0, "euler", "normal", positive, negative, latent)

        times = interleaved_medians({name: run(m) for name, m in models.items()}, args.repeats)
    base = times["plain"]
    print(f"regional sampling, {checkpoints.NAMES[args.model]}, {args.size}x{args.size}, {args.steps} steps, CFG, "
          f"median of {args.repeats}, CPU threads {torch.get_num_threads()}")
    for name, med in times.items():
        print(f"  {name:12s} {med:7.2f} s   ratio {med / base:5.2f}x")


if __name__ == "__main__":
    main()
