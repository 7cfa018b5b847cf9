"""Which inputs should the text-encoder layers be fused on? Both schemes side by side, end to end.

* own (the official code): every layer fitted on the inputs the concept's own encoder gives it, all at once;
* fused: layer by layer in forward order, on the inputs the already-fused earlier layers give, fitted to reproduce
  the concept's own layer on its own inputs (``FusionConfig.text_inputs``).

On the generated full-size SD1.5-shaped checkpoint (random weights) with N random concepts whose changes are large
(each layer's a quarter of its weight, as in bench_fusion_safety.py), the real pipeline fuses with each scheme
at each ridge, and prints
* end to end: per concept, the fused model's cross-attention keys/values at its tokens against its own model's
  (its text-encoder LoRA and words, W₀ + its K/V change), relative, over all 16 layers and both fusion prompts
  (``FusionReport.end_to_end``; worst and mean over concepts);
* held-out: how far the fused model moves 20 prompts without concept words from the base model, ‖fused − base‖ /
  ‖base‖, for the text encoder's contexts and for the K/V outputs of all 16 layers, each divided by the largest
  single concept's own move (≤ 1: ordinary prompts move no more than under the strongest concept alone);
* the text and K/V stages' seconds.
Both knobs are measured: ``text_inputs`` (own / fused) and ``kv_targets`` (official: the concept's K/V change on the
fused contexts; own_model: its own model's keys/values, so K/V also absorb the text encoder's compromise).
Weight averaging is printed for reference. Only the K/V layers of the UNet are fused here (the end-to-end check
reads nothing else), so the UNet attention stage is left out.

    eval "$(bash scripts/host/provision.sh)"; $MOS_PYTHON benchmarks/bench_fusion_text_inputs.py [--concepts 3]
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))
from bench_fusion_safety import HELD_OUT, _big_changes  # noqa: E402

import comfy_host  # noqa: E402
import test_assets  # noqa: E402

RIDGES = (0.0, 1e-4, 1e-3, 1e-2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concepts", type=int, default=3)
    parser.add_argument("--share", type=float, default=0.25, help="each LoRA change's size relative to its weight")
    parser.add_argument("--ridges", default=",".join(map(str, RIDGES)), help="comma separated")
    parser.add_argument("--model", choices=["sd15", "testbed"], default="sd15",
                        help="testbed: the tiny SD1 testbed, to try the script quickly")
    args = parser.parse_args()
    host = comfy_host.boot(tempfile.mkdtemp(prefix="mos-bench-text-inputs-"))
    import nodes

    glue, formats = host.pack("nodes.fusion.pipeline"), host.pack("mixofshow_core.formats")
    config_mod, model_layout = host.pack("mixofshow_core.config"), host.pack("nodes.model_layout")
    with torch.inference_mode():
        if args.model == "testbed":
            model, clip = host.pack("testbed.model").build_testbed(0)[:2]
        else:
            ckpt = test_assets.sd15_checkpoint(os.path.join(REPO, ".cache", "test-assets"))
            os.symlink(ckpt, os.path.join(host.models("checkpoints"), "sd15.safetensors"))
            model, clip = nodes.CheckpointLoaderSimple().load_checkpoint("sd15.safetensors")[:2]
        unet, text_root = model.model.diffusion_model, clip.cond_stage_model
        layout = model_layout.unet_layout(model)
        width = model_layout.clip_encoders(clip)[0][1]
        layers = model_layout.layer_rows(model)

        def weight_of(module):
            if module.startswith("text_model."):
                return text_root.get_submodule(model_layout.clip_module(module)).weight
            return unet.get_submodule(layout.diffusers_to_ldm(module)).weight

        items = []
        for i in range(args.concepts):
            path = os.path.join(host.workdir, f"c{i}.pth")
            channels = int(unet.get_submodule(layout.sites()[0].ldm_prefix).attn2.to_q.weight.shape[0])
            blocks = test_assets.attention_blocks(channels, (1, 2, 2, 2) if args.model == "testbed" else (1, 2, 4, 4))
            test_assets.official_edlora_checkpoint(  # the research branch's targets: text attention and MLP
                path, words=(f"<c{i}a>", f"<c{i}b>"), seed=100 + i, layers=layers, width=width, blocks=blocks,
                research_modules=True, text_layers=len(text_root.clip_l.transformer.text_model.encoder.layers),
                text_mlp=int(text_root.clip_l.transformer.text_model.encoder.layers[0].mlp.fc1.weight.shape[0]))
            concept = formats.load_concept(path)
            concept.unet_lora = {m: p for m, p in concept.unet_lora.items() if re.search(r"attn2\.to_[kv]$", m)}
            _big_changes(concept, weight_of, args.share)
            items.append(glue.FusionItem(concept))
        sites = model_layout.cross_attention_sites(model)
        kv_paths = [f"{site.ldm_prefix}.attn2.{p}" for site in sites for p in ("to_k", "to_v")]
        w0 = {path: unet.get_submodule(path).weight.detach().double().cpu() for path in kv_paths}  # (out, D)

        def held_out(c, kv_change) -> tuple[float, float]:
            """(context move, K/V output move) of the 20 held-out prompts under (CLIP c, K/V changes) from the base."""
            moved, total, kv_moved, kv_total = 0.0, 0.0, 0.0, 0.0
            for text in HELD_OUT:
                length = cglue.prompt_length(clip, text)
                ours = c.encode_from_tokens(c.tokenize(text))[0, :length].double()  # (T, D)
                theirs = clip.encode_from_tokens(clip.tokenize(text))[0, :length].double()
                moved, total = moved + float((ours - theirs).norm()) ** 2, total + float(theirs.norm()) ** 2
                for path in kv_paths:
                    changed = w0[path] + (kv_change[path].double() if path in kv_change else 0)
                    reference = theirs @ w0[path].T
                    kv_moved += float((ours @ changed.T - reference).norm()) ** 2
                    kv_total += float(reference.norm()) ** 2
            return (moved / total) ** 0.5, (kv_moved / kv_total) ** 0.5

        cglue = host.pack("nodes.concepts.layerwise")
        alone = []
        for item in items:
            own_clip = glue._with_lora(model, clip, item.concept, 0.0, 1.0)[1]
            change = {layout.ldm_name(m): p.delta(1.0).flatten(1) for m, p in item.concept.unet_lora.items()}
            alone.append(held_out(own_clip, change))
        worst = [max(a[k] for a in alone) for k in (0, 1)]
        print(f"{args.concepts} random concepts, changes {args.share:.2f} of each weight; "
              f"{'tiny testbed' if args.model == 'testbed' else 'SD1.5 shape'}. Held-out move of each concept alone "
              "(contexts, K/V): " + ", ".join(f"({a:.3f}, {b:.3f})" for a, b in alone))
        print(f"{'text inputs':>11} {'kv targets':>10} {'ridge':>7} {'end-to-end worst':>17} {'mean':>9} "
              f"{'held-out ctx':>13} {'held-out K/V':>13} {'text s':>7} {'K/V s':>6}")
        runs = [("average", "own", "official", 0.0)] + [
            ("closed_form", text, kv, ridge) for ridge in map(float, args.ridges.split(","))
            for text in ("own", "fused") for kv in ("official", "own_model")]
        for mode, text, kv, ridge in runs:
            cfg = config_mod.FusionConfig(mode=mode, ridge=ridge, text_inputs=text, kv_targets=kv, resolution=64,
                                          steps=1)
            _, fused_clip, deltas, report = glue.fuse(model, clip, items, cfg)
            change = {layout.ldm_name(m): d.flatten(1) for m, d in deltas["unet"].items()}
            errors = list(report.end_to_end.values())
            ctx, kv_move = held_out(fused_clip, change)
            label = ("average", "-") if mode == "average" else (text, kv)
            seconds = report.seconds
            print(f"{label[0]:>11} {label[1]:>10} {ridge:>7.0e} {max(errors):>17.3e} {sum(errors) / len(errors):>9.3e} "
                  f"{ctx / worst[0]:>13.3f} {kv_move / worst[1]:>13.3f} "
                  f"{seconds.get('text encoder', 0.0):>7.1f} {seconds.get('cross-attention K/V', 0.0):>6.1f}")
    defaults = config_mod.FusionConfig()
    print(f"node defaults: text_inputs={defaults.text_inputs!r}, kv_targets={defaults.kv_targets!r}, "
          f"ridge {defaults.ridge}")


if __name__ == "__main__":
    main()
