"""Cost of layer-wise prompt encoding against plain CLIPTextEncode, and of the layer patch in sampling.

Full-size SD1.5-shaped checkpoint (random weights, CLIP-L) with an official-layout concept, or (``--model sdxl``)
the full-size SDXL shape with an SDXL concept (both encoders, 11 rows); every measurement is the median of
interleaved repeats in this one run, reported as a ratio.

    eval "$(scripts/host/provision.sh)"; $MOS_PYTHON benchmarks/bench_layerwise_encoding.py [--repeats 7]
    $MOS_PYTHON benchmarks/bench_layerwise_encoding.py --model sdxl --size 1024 --steps 1 --repeats 3
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
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--model", choices=checkpoints.FAMILIES, default="sd15")
    parser.add_argument("--size", type=int, default=256, help="sampling image size")
    args = parser.parse_args()
    import torch

    work = tempfile.mkdtemp(prefix="mos-bench-")
    host = comfy_host.boot(work)
    import nodes

    name = "potter.safetensors" if args.model == "sdxl" else "potter.pth"
    checkpoints.concept(host, args.model, name, ("<potter1>", "<potter2>"), seed=0)
    concept_nodes = host.pack("nodes.concepts.nodes")
    with torch.inference_mode():
        model, clip = checkpoints.load(host, args.model)[:2]
        model, clip = concept_nodes.EDLoRALoader().load(model, clip, name, 1.0, 1.0)
        concept_text = "a photo of a <potter1> <potter2> walking in a forest, best quality"
        plain_text = "a photo of a man walking in a forest, best quality"
        cases = {
            "CLIPTextEncode (plain prompt)": lambda: nodes.CLIPTextEncode().encode(clip, plain_text),
            "EDLoRATextEncode (with concept words)":
                lambda: concept_nodes.EDLoRATextEncode().encode(clip, concept_text),
            "EDLoRATextEncode (no concept words)": lambda: concept_nodes.EDLoRATextEncode().encode(clip, plain_text),
        }
        times = interleaved_medians(cases, args.repeats)
        base = times["CLIPTextEncode (plain prompt)"]
        print(f"layer-wise encoding, {checkpoints.NAMES[args.model]}, median of {args.repeats}, CPU threads "
              f"{torch.get_num_threads()}")
        for name, med in times.items():
            print(f"  {name:40s} {med * 1000:8.1f} ms   ratio {med / base:6.2f}x")

        plain = nodes.CLIPTextEncode().encode(clip, plain_text)[0]
        packed = concept_nodes.EDLoRATextEncode().encode(clip, concept_text)[0]
        packed_neg = concept_nodes.EDLoRATextEncode().encode(clip, "lowres")[0]
        plain_neg = nodes.CLIPTextEncode().encode(clip, "lowres")[0]
        unpatched = model.clone()
        unpatched.model_options["transformer_options"]["patches"]["attn2_patch"] = []
        latent = nodes.EmptyLatentImage().generate(args.size, args.size, 1)[0]

        def sample(m, pos, neg):
            return lambda: nodes.common_ksampler(m, 0, args.steps, 7.0, "euler", "normal", pos, neg, latent,
                                                 disable_noise=False)

        runs = {"plain model, plain conds": sample(unpatched, plain, plain_neg),
                "layer patch, layer-wise conds": sample(model, packed, packed_neg)}
        stimes = interleaved_medians(runs, max(3, args.repeats // 2))
        base = stimes["plain model, plain conds"]
        print(f"sampling {args.steps} steps at {args.size}x{args.size} with CFG (cond+uncond batched)")
        for name, med in stimes.items():
            print(f"  {name:40s} {med:8.2f} s    ratio {med / base:6.2f}x")


if __name__ == "__main__":
    main()
