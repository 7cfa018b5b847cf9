"""Two LoRA characters in one picture, three ways, timed side by side (example workflow sdxl_two_lora_characters).

* fused: both LoRAs through LoRA as Concept and Gradient Fusion, each box with its trigger, Regional KSampler
  (one pass); the fusion itself is timed apart (it runs once, then every image reuses the model);
* stacked: both LoRAs with stock LoraLoader and one prompt naming both, KSampler;
* hooks: ComfyUI's own per-region LoRAs, Create Hook LoRA + Set CLIP Hooks + Cond Pair Set Props Combine on each
  box's mask (Solid Mask + Mask Composite), KSampler (the host samples each hooked group separately).
Plain sampling (the base model, one prompt) is the 1.00 row. Full-size SD1.5- or SDXL-shaped checkpoint with
random weights and two random kohya LoRAs (test_assets.kohya_lora), so the images are noise and only the cost is
real; CFG, one prompt pair per method; median of interleaved repeats after a warm-up run.

    eval "$(bash scripts/host/provision.sh)"; $MOS_PYTHON benchmarks/bench_lora_baselines.py [--model sdxl --size 1024]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))
import checkpoints  # noqa: E402

import comfy_host  # noqa: E402
import test_assets  # noqa: E402
from timing import interleaved_medians  # noqa: E402

TRIGGERS = ("hatsune miku", "kagamine rin")
BOXES = ((0.04, 0.05, 0.34, 0.9), (0.4, 0.05, 0.34, 0.9))  # x, y, width, height: the example workflow's


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=checkpoints.FAMILIES, default="sd15")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--bf16-unet", action="store_true", help="UNet in bfloat16, as main.py --bf16-unet")
    args = parser.parse_args()
    import torch

    host = comfy_host.boot(tempfile.mkdtemp(prefix="mos-bench-lora-baselines-"))
    if args.bf16_unet:
        import comfy.cli_args

        comfy.cli_args.args.bf16_unet = True
    import nodes
    from comfy_extras import nodes_hooks, nodes_mask

    sdxl = args.model == "sdxl"
    names = [f"bench_{t.split()[1]}.safetensors" for t in TRIGGERS]
    for seed, (name, trigger) in enumerate(zip(names, TRIGGERS)):
        test_assets.kohya_lora(os.path.join(host.models("loras"), name), sdxl, trigger, seed=seed)
    fusion_nodes, region_nodes = host.pack("nodes.fusion.nodes"), host.pack("nodes.regions.nodes")
    size = args.size
    with torch.inference_mode():
        model, clip = checkpoints.load(host, args.model)[:2]
        encode = nodes.CLIPTextEncode().encode
        negative_text = "lowres, bad anatomy, worst quality"
        scene = "two girls standing side by side on a concert stage"
        latent = nodes.EmptyLatentImage().generate(size, size, 1)[0]

        # fused: the fusion once (timed apart), then one regional pass per image
        concepts = None
        for name, trigger in zip(names, TRIGGERS):
            concepts = fusion_nodes.LoRAAsConcept().append(name, trigger, 1.0, 1.0, concepts)[0]
        start = time.perf_counter()
        fused_model, fused_clip, report = fusion_nodes.GradientFusion().fuse(model, clip, "closed_form", 1, 64, 0,
                                                                              1e-3, concepts=concepts)
        fusion_s = time.perf_counter() - start
        regions = None
        for (x, y, w, h), trigger in zip(BOXES, TRIGGERS):
            regions = region_nodes.RegionPrompt().add(fused_clip, f"{trigger}, standing", negative_text, x, y, w, h,
                                                      1.0, regions=regions)[0]
        fused_pos, fused_neg = encode(fused_clip, scene)[0], encode(fused_clip, negative_text)[0]

        # stacked: both LoRAs on the model, one prompt naming both
        stacked_model, stacked_clip = model, clip
        for name in names:
            stacked_model, stacked_clip = nodes.LoraLoader().load_lora(stacked_model, stacked_clip, name, 1.0, 1.0)
        stacked_pos = encode(stacked_clip, f"{TRIGGERS[0]} and {TRIGGERS[1]} standing side by side on a stage")[0]
        stacked_neg = encode(stacked_clip, negative_text)[0]

        # hooks: each LoRA as a hook on its box's mask, combined onto the scene prompt
        hook_pos, hook_neg = encode(clip, scene)[0], encode(clip, negative_text)[0]
        empty = nodes_mask.SolidMask().solid(0.0, size, size)[0]
        for name, trigger, (x, y, w, h) in zip(names, TRIGGERS, BOXES):
            hooks = nodes_hooks.CreateHookLora().create_hook(name, 1.0, 1.0)[0]
            hooked_clip = nodes_hooks.SetClipHooks().apply_hooks(clip=clip, schedule_clip=False, apply_to_conds=True,
                                                                 hooks=hooks)[0]
            box = nodes_mask.SolidMask().solid(1.0, round(w * size), round(h * size))[0]
            mask = nodes_mask.MaskComposite().combine(empty, box, round(x * size), round(y * size), "add")[0]
            box_pos, box_neg = encode(hooked_clip, f"{trigger}, standing")[0], encode(hooked_clip, negative_text)[0]
            hook_pos, hook_neg = nodes_hooks.PairConditioningSetPropertiesAndCombine().set_properties(
                hook_pos, hook_neg, box_pos, box_neg, 1.0, "default", mask=mask)
        plain_pos, plain_neg = encode(clip, scene)[0], encode(clip, negative_text)[0]

        def sample(m, pos, neg):
            return lambda: nodes.common_ksampler(m, 0, args.steps, 7.0, "euler", "normal", pos, neg, latent)

        cases = {
            "plain (base model, one prompt)": sample(model, plain_pos, plain_neg),
            "fused + regions (one pass)": lambda: region_nodes.RegionalKSampler().sample(
                fused_model, regions, fused_pos, fused_neg, latent, 0, args.steps, 7.0, "euler", "normal", 1.0),
            "stacked LoraLoaders, one prompt": sample(stacked_model, stacked_pos, stacked_neg),
            "hook LoRAs on box masks": sample(model, hook_pos, hook_neg),
        }
        times = interleaved_medians(cases, args.repeats)
    base = times["plain (base model, one prompt)"]
    print(f"two LoRA characters, {checkpoints.NAMES[args.model]}, {size}x{size}, {args.steps} steps, CFG, median of "
          f"{args.repeats}{', UNet bf16' if args.bf16_unet else ''}; CPU threads {torch.get_num_threads()}")
    for name, med in times.items():
        print(f"  {name:34s} {med:8.2f} s   ratio {med / base:5.2f}x")
    print(f"  gradient fusion of the two LoRAs, once (features 64 px x 1 step): {fusion_s:.1f} s")
    print(report)


if __name__ == "__main__":
    main()
