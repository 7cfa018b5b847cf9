"""Gradient fusion: closed form from Gram statistics vs the paper's L-BFGS vs weight averaging.

Phase 1 (``--capture``, needs the host): run the real fusion pipeline on the generated full-size
SD1.5-shaped checkpoint (random weights) with N official-layout concepts (random LoRA), and record
the features that stream into a few representative layers. Phase 2 (core only): on those identical
features, for 1, 4 and N concepts, solve each layer with the closed form, with L-BFGS (500 iterations
for text-encoder and K/V layers, 50 for the other UNet layers, as in the paper) and by averaging, and
print side by side: solve time and ratio, objective and ratio, state memory, and each concept's
relative output error ‖X(W−W_i)ᵀ‖/‖X W_iᵀ‖ (mean and worst over concepts).

    eval "$(bash scripts/host/provision.sh)"
    $MOS_PYTHON benchmarks/bench_fusion.py [--concepts 14] [--resolution 256] [--steps 4]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch
from safetensors.torch import load_file, save_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))
sys.path.insert(0, REPO)
from mixofshow_core.config import FusionConfig  # noqa: E402
from mixofshow_core.fusion import GramStats, ScaledLoRA, average_deltas, lbfgs_fuse, objective, relative_output_error  # noqa: E402
from mixofshow_core.lora import LoRAPair  # noqa: E402

# representative layers: (stage, fusion group, module, L-BFGS iterations)
LAYERS = [
    ("text encoder", "text_model.encoder.layers.5.self_attn.qkv", "text_model.encoder.layers.5.self_attn.q_proj", 500),
    ("K/V", "mid_block.attentions.0.transformer_blocks.0.attn2",
     "mid_block.attentions.0.transformer_blocks.0.attn2.to_k", 500),
    ("K/V", "down_blocks.0.attentions.0.transformer_blocks.0.attn2",
     "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_v", 500),
    ("UNet attention", "down_blocks.0.attentions.0.transformer_blocks.0.attn1.qkv",
     "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", 50),
    ("UNet attention", "up_blocks.1.attentions.0.transformer_blocks.0.attn1.qkv",
     "up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_v", 50),
    ("UNet attention", "mid_block.attentions.0.transformer_blocks.0.attn2.to_out.0",
     "mid_block.attentions.0.transformer_blocks.0.attn2.to_out.0", 50),
]


TEXT_LAYER = "text_model.encoder.layers.5."
# the same layers on the tiny SD1 testbed (two text-encoder layers: its last is layers.1)
TESTBED_LAYERS = [(stage, group.replace(TEXT_LAYER, "text_model.encoder.layers.1."),
                   module.replace(TEXT_LAYER, "text_model.encoder.layers.1."), iters)
                  for stage, group, module, iters in LAYERS]


def capture(path: str, concepts: int, resolution: int, steps: int, testbed: bool = False) -> None:
    """Run the real fusion on the generated full-size SD1.5 checkpoint (or, ``testbed``, the tiny SD1 testbed with
    concepts in its layout) and save the features streaming into LAYERS (TESTBED_LAYERS), each concept's LoRA
    factors there and W0."""
    import comfy_host
    import test_assets

    host = comfy_host.boot(tempfile.mkdtemp(prefix="mos-bench-fusion-"))
    import nodes

    glue, formats = host.pack("nodes.fusion.pipeline"), host.pack("mixofshow_core.formats")
    model_layout = host.pack("nodes.model_layout")
    config = host.pack("mixofshow_core.config").FusionConfig(resolution=resolution, steps=steps,
                                                               accumulate_fp64=False)
    layers = TESTBED_LAYERS if testbed else LAYERS
    groups = {g for _, g, _, _ in layers}
    store: dict[str, list[list[torch.Tensor]]] = {g: [[] for _ in range(concepts)] for g in groups}

    def sink(group, concept, rows):
        if group in store:
            store[group][concept].append(rows.float().cpu().clone())

    with torch.inference_mode():
        if testbed:
            model, clip = host.pack("testbed.model").build_testbed(0)[:2]
        else:
            ckpt = test_assets.sd15_checkpoint(os.path.join(REPO, ".cache", "test-assets"))
            os.symlink(ckpt, os.path.join(host.models("checkpoints"), "sd15.safetensors"))
            model, clip = nodes.CheckpointLoaderSimple().load_checkpoint("sd15.safetensors")[:2]
        unet, encoder = model.model.diffusion_model, clip.cond_stage_model.clip_l.transformer
        layout = model_layout.unet_layout(model)
        shape = {}  # the testbed's concepts: its rows, width, attention blocks and text layers
        if testbed:
            channels = int(unet.get_submodule(layout.sites()[0].ldm_prefix).attn2.to_q.weight.shape[0])
            shape = dict(layers=model_layout.layer_rows(model), width=model_layout.clip_encoders(clip)[0][1],
                         blocks=test_assets.attention_blocks(channels, (1, 2, 2, 2)),
                         text_layers=len(encoder.text_model.encoder.layers))
        items = []
        for i in range(concepts):
            name = os.path.join(host.workdir, f"c{i}.pth")
            test_assets.official_edlora_checkpoint(name, words=(f"<c{i}a>", f"<c{i}b>"), seed=100 + i, **shape)
            items.append(glue.FusionItem(formats.load_concept(name)))
        start = time.time()
        glue.fuse(model, clip, items, config, feature_sink=sink)
        print(f"captured features of {concepts} concepts in {time.time() - start:.0f} s "
              f"({resolution}px, {steps} steps)")
        tensors = {}
        for stage, group, module, _ in layers:
            for i in range(concepts):
                tensors[f"x.{group}.{i}"] = torch.cat(store[group][i])
                pair = items[i].concept.text_lora.get(module) or items[i].concept.unet_lora[module]
                tensors[f"down.{module}.{i}"], tensors[f"up.{module}.{i}"] = pair.down, pair.up
            weight = (encoder.get_submodule(module) if stage == "text encoder"
                      else unet.get_submodule(layout.diffusers_to_ldm(module))).weight
            tensors[f"w0.{module}"] = weight.float().cpu().clone()
    save_file({k: v.contiguous() for k, v in tensors.items()}, path, {"concepts": str(concepts)})


def compare(path: str, counts: list[int]) -> None:
    data = load_file(path)
    total = max(int(k.rsplit(".", 1)[1]) for k in data if k.startswith("x.")) + 1
    counts = [n for n in counts if n <= total]
    print(f"\nper-layer fusion on identical captured features (CPU threads {torch.get_num_threads()})")
    header = (f"{'stage':15s} {'module':58s} {'N':>3s} {'rows':>7s} | {'closed s':>8s} {'L-BFGS s':>9s} "
              f"{'speedup':>8s} | {'rel obj C':>9s} {'C0':>9s} {'L':>9s} | {'state MB C':>10s} {'L':>8s} | "
              f"{'rel err C':>9s} {'L':>9s} {'avg':>9s} {'C/avg':>6s}")
    print(header)
    print("-" * len(header))
    summary = {}
    for stage, group, module, iters in LAYERS:
        w0 = data[f"w0.{module}"].double()
        for n in counts:
            feats = [data[f"x.{group}.{i}"].double() for i in range(n)]
            deltas = [ScaledLoRA(LoRAPair(data[f"down.{module}.{i}"].double(), data[f"up.{module}.{i}"].double()), 1.0)
                      for i in range(n)]
            start = time.perf_counter()
            stats = GramStats(w0.shape[1], {"w": w0.shape[0]})
            for x, d in zip(feats, deltas):
                stats.add(x, {"w": d})
            default = stats.solve(ridge=FusionConfig().ridge, out_dtype=torch.float64)["w"]  # what the node runs
            t_closed = time.perf_counter() - start
            closed = stats.solve(ridge=0.0, out_dtype=torch.float64)["w"]  # exact optimum
            state_closed = sum(t.numel() * t.element_size() for t in (stats.gram, *stats.cross.values()))
            start = time.perf_counter()
            lbfgs = lbfgs_fuse(w0.float(), [f.float() for f in feats], deltas, iters).double() - w0
            t_lbfgs = time.perf_counter() - start
            state_lbfgs = 2 * sum(f.numel() * 4 for f in feats) + sum(f.shape[0] * w0.shape[0] * 4 for f in feats)
            averaged = average_deltas(deltas, *w0.shape).double()
            energy = objective(torch.zeros_like(w0), feats, deltas)  # objective of keeping W0
            obj_c, obj_l = objective(closed, feats, deltas) / energy, objective(lbfgs, feats, deltas) / energy
            obj_d = objective(default, feats, deltas) / energy
            errs = {name: [relative_output_error(w0, d, x, own) for x, own in zip(feats, deltas)]
                    for name, d in (("C", default), ("L", lbfgs), ("avg", averaged))}
            mean = {k: statistics.mean(v) for k, v in errs.items()}
            ratio = mean["C"] / mean["avg"] if mean["avg"] > 1e-6 else float("nan")  # N=1: averaging is exact
            rows = sum(f.shape[0] for f in feats)
            print(f"{stage:15s} {module:58s} {n:3d} {rows:7d} | {t_closed:8.3f} {t_lbfgs:9.2f} "
                  f"{t_lbfgs / t_closed:7.0f}x | {obj_d:9.2e} {obj_c:9.2e} {obj_l:9.2e} | "
                  f"{state_closed / 2**20:10.1f} {state_lbfgs / 2**20:8.1f} | "
                  f"{mean['C']:9.2e} {mean['L']:9.2e} {mean['avg']:9.2e} {ratio:6.3f}")
            summary.setdefault(n, []).append(
                (t_lbfgs / t_closed, obj_c <= obj_l * (1 + 1e-9), ratio, t_closed, t_lbfgs))
    print("\nC = closed form as the node runs it (ridge 1e-4, timed: Gram accumulation + solve); C0 = exact "
          "optimum (ridge 0); L = L-BFGS")
    print("rel obj = objective / objective of keeping W0 (0 = every concept reproduced on its features)")
    print("summary per N over the layers above: total solve time, closed form objective <= L-BFGS's, "
          "median fused error / averaging error")
    for n, rows in summary.items():
        closed, lbfgs = sum(r[3] for r in rows), sum(r[4] for r in rows)
        print(f"  N={n:2d}: closed {closed:7.2f} s   L-BFGS {lbfgs:8.1f} s   speedup {lbfgs / closed:6.0f}x   "
              f"objective <= L-BFGS on {sum(r[1] for r in rows)}/{len(rows)} layers   "
              f"error ratio {statistics.median(r[2] for r in rows if r[2] == r[2]) if n > 1 else float('nan'):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concepts", type=int, default=14)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--features", default=os.path.join(REPO, ".cache", "bench", "fusion_features.safetensors"))
    parser.add_argument("--recapture", action="store_true")
    args = parser.parse_args()
    if args.recapture or not os.path.exists(args.features):
        os.makedirs(os.path.dirname(args.features), exist_ok=True)
        capture(args.features, args.concepts, args.resolution, args.steps)
    compare(args.features, sorted({1, 4, args.concepts}))


if __name__ == "__main__":
    main()
