"""How faithfully a trained testbed model draws captions, measured with the world scorer.

Samples one image per caption (single objects of the base world: every shape × colour, random pattern,
size, position and ground), with stock ComfyUI nodes (CLIPTextEncode, KSampler euler/normal, VAEDecode),
recognises each image and prints per-attribute accuracy next to chance. ``--json`` also writes the
numbers to a file.

    $MOS_PYTHON testbed/scripts/eval_world_model.py testbed/weights/world_tiny_sd1.safetensors
"""
from __future__ import annotations

import argparse
import json
import os
import runpy
import sys
import tempfile
import time

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [os.path.join(REPO, "scripts")]
FIELDS = ("shape", "colour", "pattern", "size", "position")
SAMPLE = runpy.run_path(os.path.join(REPO, "testbed", "world", "recipe.py"))["SAMPLE"]  # plain data


def prompts(render, seed: int, repeats: int):
    """(object, ground) pairs: every shape × colour ``repeats`` times with random other attributes."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(repeats):
        for shape in render.SHAPES:
            for colour in render.COLOURS:
                obj = render.Obj(shape, colour, str(rng.choice(render.PATTERNS)), render.SHADE,
                                 str(rng.choice(list(render.SIZES))), str(rng.choice(list(render.POSITIONS))))
                out.append((obj, str(rng.choice(render.BACKGROUNDS))))
    return out


def evaluate(path: str, steps: int = SAMPLE["steps"], cfg: float = SAMPLE["cfg"], repeats: int = 2,
             seed: int = 0) -> dict:
    import comfy_host

    host = comfy_host.boot(tempfile.mkdtemp(prefix="mos-world-eval-"))
    import nodes as cn

    render, scorer = host.pack("testbed.world.render"), host.pack("testbed.world.scorer")

    chance = {"shape": 1 / len(render.SHAPES), "colour": 1 / len(render.COLOURS),
              "pattern": 1 / len(render.PATTERNS), "size": 1 / len(render.SIZES), "position": 1 / len(render.POSITIONS)}
    right = dict.fromkeys(FIELDS, 0)
    found, total, started = 0, 0, time.monotonic()
    with torch.inference_mode():
        model, clip, vae = host.pack("testbed.model").load_trained(path)
        negative = cn.CLIPTextEncode().encode(clip, "")[0]
        latent = cn.EmptyLatentImage().generate(64, 64, 1)[0]
        for i, (obj, ground) in enumerate(prompts(render, seed, repeats)):
            positive = cn.CLIPTextEncode().encode(clip, render.caption([obj], ground))[0]
            samples = cn.KSampler().sample(model, seed + i, steps, cfg, "euler", "normal", positive, negative,
                                           latent)[0]
            image = cn.VAEDecode().decode(vae, samples)[0][0].numpy()
            got = scorer.recognise(image)
            found += got.found
            for f in FIELDS:
                right[f] += got.found and getattr(got, f) == getattr(obj, f)
            total += 1
    return {"images": total, "object_found": found / total, "seconds": round(time.monotonic() - started, 1),
            "sampler": f"euler/normal, {steps} steps, cfg {cfg}",
            "accuracy": {f: right[f] / total for f in FIELDS}, "chance": chance}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--steps", type=int, default=SAMPLE["steps"])
    parser.add_argument("--cfg", type=float, default=SAMPLE["cfg"], help="guidance (default: the world recipe's)")
    parser.add_argument("--repeats", type=int, default=2, help="passes over every shape × colour")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()
    result = evaluate(args.checkpoint, args.steps, args.cfg, args.repeats)
    print(f"{result['images']} captions, object found in {result['object_found']:.0%} ({result['sampler']})")
    print(f"{'attribute':<10}{'accuracy':>10}{'chance':>10}")
    for f in FIELDS:
        print(f"{f:<10}{result['accuracy'][f]:>10.0%}{result['chance'][f]:>10.0%}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
