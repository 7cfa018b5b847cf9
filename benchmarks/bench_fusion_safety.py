"""Gradient fusion off its prompts: own-prompt fit against held-out-prompt safety, across regularisations.

On the generated full-size SD1.5-shaped checkpoint (random weights) with N random concepts whose LoRA changes
are large (each layer's change a quarter of its weight, Frobenius), the real fusion pipeline records the
features that stream into the text-encoder, cross-attention K/V and other UNet attention layers (the latter
recorded while sampling, at ``--resolution`` / ``--steps``). On those identical features each layer is solved
again for every (anchor, ridge) in the sweep:

    W* − W₀ = A + (C − A G)(G + λI)⁺,   λ = ridge · tr(G)/in,   A = 0 (anchor "base") or the weight average

and measured by
* own: each concept's relative output error ‖X_i(W* − W_i)ᵀ‖ / ‖X_i W_iᵀ‖ on its own prompts' features
  (worst over concepts and layers; target ≤ 1e-3);
* held-out: on 20 prompts without concept words (text encoder: the base encoder reading them; K/V: the fused
  encoder's contexts; UNet attention: the base model sampling them, one step at 64 px), ‖X Δᵀ‖ / ‖X W₀ᵀ‖ of the
  fused change, divided by the largest single concept's own ‖X ΔW_iᵀ‖ / ‖X W₀ᵀ‖ on the same features (worst
  over layers; target ≤ 1: the fused model moves ordinary prompts no more than the strongest concept alone).
Rows for plain averaging and each concept alone are printed beside them, and the default the node uses.

    eval "$(bash scripts/host/provision.sh)"; $MOS_PYTHON benchmarks/bench_fusion_safety.py [--concepts 3] [--fp32]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))
import comfy_host  # noqa: E402
import test_assets  # noqa: E402

HELD_OUT = (
    "a photo of a dog running on the beach", "a red car parked in front of a house", "portrait of an old man, studio",
    "a bowl of fruit on a wooden table", "mountains at sunset, landscape painting", "a city street at night, rain",
    "a cat sleeping on a sofa", "an astronaut riding a horse", "a cup of coffee and a book", "a forest in autumn",
    "two children playing football", "a castle on a hill, fantasy art", "a plate of pasta, food photography",
    "a woman reading in a library", "a sailing boat on the sea", "a snowy village in winter",
    "a robot in a factory, digital art", "flowers in a glass vase", "a bridge over a river, watercolor",
    "a man in a suit walking in the city",
)
RIDGES = (0.0, 1e-8, 1e-6, 1e-4, 1e-3, 1e-2, 1e-1, 0.3)  # 0.3: the world recipe's ridge


def _big_changes(concept, weight_of, share: float):
    """Scale each LoRA's up factor so that its change is ``share`` of the layer's weight (Frobenius)."""
    for loras in (concept.text_lora, concept.unet_lora):
        for module, pair in list(loras.items()):
            w = weight_of(module)
            if w is None:
                continue
            scale = share * float(w.float().norm()) / max(float(pair.delta(1.0).norm()), 1e-12)
            loras[module] = type(pair)(down=pair.down, up=pair.up * scale)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concepts", type=int, default=3)
    parser.add_argument("--share", type=float, default=0.25, help="each LoRA change's size relative to its weight")
    parser.add_argument("--resolution", type=int, default=64, help="feature collection (the node's default: 512)")
    parser.add_argument("--steps", type=int, default=1, help="feature collection steps (the node's default: 20)")
    parser.add_argument("--model", choices=["sd15", "world"], default="sd15",
                        help="sd15: the full-size random SD1.5 shape with random concepts; world: the world testbed "
                             "with concepts trained by the world recipe (ED-LoRA Train), world captions held out")
    parser.add_argument("--fp32", action="store_true",
                        help="also solve from statistics accumulated in float32 (FusionConfig.accumulate_fp64=False)")
    args = parser.parse_args()
    if args.model == "world":
        args.concepts = min(args.concepts, 8)
    host = comfy_host.boot(tempfile.mkdtemp(prefix="mos-bench-safety-"))
    import nodes

    glue, formats = host.pack("nodes.fusion.pipeline"), host.pack("mixofshow_core.formats")
    fusion, cglue = host.pack("mixofshow_core.fusion"), host.pack("nodes.concepts.layerwise")
    config_mod = host.pack("mixofshow_core.config")
    ckpt = test_assets.sd15_checkpoint(os.path.join(REPO, ".cache", "test-assets"))
    os.symlink(ckpt, os.path.join(host.models("checkpoints"), "sd15.safetensors"))
    store: dict[str, list[list[torch.Tensor]]] = {}

    def sink(group, concept, rows):
        store.setdefault(group, [[] for _ in range(args.concepts)])[concept].append(rows.double().cpu().clone())

    held_out = HELD_OUT if args.model == "sd15" else _world_captions(host)
    world = _world(host) if args.model == "world" else None
    trained = [world.train(c) for c in host.pack("testbed.world.concepts").CONCEPTS[: args.concepts]] if world else []
    with torch.inference_mode():
        if world is None:
            model, clip = nodes.CheckpointLoaderSimple().load_checkpoint("sd15.safetensors")[:2]
        else:
            model, clip = world.model, world.clip
        unet, text_root = model.model.diffusion_model, clip.cond_stage_model
        model_layout = host.pack("nodes.model_layout")
        layout = model_layout.unet_layout(model)

        def weight_of(module):
            if module.startswith("text_model."):
                return text_root.get_submodule(model_layout.clip_module(module)).weight
            return unet.get_submodule(layout.diffusers_to_ldm(module)).weight

        items = []
        for i in range(args.concepts):
            if world is not None:  # trained concepts as they are
                items.append(glue.FusionItem(formats.load_concept(os.path.join(host.models("edloras"), trained[i]))))
                continue
            path = os.path.join(host.workdir, f"c{i}.pth")
            test_assets.official_edlora_checkpoint(path, words=(f"<c{i}a>", f"<c{i}b>"), seed=100 + i)
            concept = formats.load_concept(path)
            _big_changes(concept, weight_of, args.share)
            items.append(glue.FusionItem(concept))
        cfg = config_mod.FusionConfig(resolution=args.resolution, steps=args.steps)
        start = time.time()
        _, fused_clip, _, _ = glue.fuse(model, clip, items, cfg, feature_sink=sink)
        print(f"captured features of {args.concepts} concepts in {time.time() - start:.0f} s")

        # held-out features: K/V inputs are the fused encoder's per-layer contexts of ordinary prompts (all tokens
        # up to the end token); text-encoder inputs are recorded with hooks while the base encoder reads them
        sites = model_layout.cross_attention_sites(model)
        held: dict[str, list[torch.Tensor]] = {}
        for text in held_out:
            contexts = cglue.layer_contexts(fused_clip, text)[0]  # (L, T, D)
            length = cglue.prompt_length(fused_clip, text)
            for s in sites:
                held.setdefault(f"{s.diffusers_prefix}.attn2", []).append(contexts[s.index, :length].double())
        spatial = [g for g in store if not g.startswith("text_model.") and not g.endswith(".attn2")]
        ldm_of = {g: layout.diffusers_to_ldm(g.replace(".qkv", ".to_q")) for g in spatial}
        with glue._capture(unet, {ldm_of[g]: g for g in spatial}, lambda g, x: held.setdefault(g, []).append(
                x.reshape(-1, x.shape[-1]).double().cpu())):
            latent = nodes.EmptyLatentImage().generate(64, 64, 1)[0]
            for seed, text in enumerate(held_out):  # the base model sampling ordinary prompts, one step each
                cond = nodes.CLIPTextEncode().encode(clip, text)[0]
                nodes.common_ksampler(model, seed, 1, 1.0, "dpmpp_2m", "normal", cond, cond, latent)
        text_groups = [g for g in store if g.startswith("text_model.")]
        hooks = {model_layout.clip_module(g.replace(".qkv", ".q_proj")): g for g in text_groups}
        length = [0]
        with glue._capture(text_root, hooks, lambda g, x: held.setdefault(g, []).append(
                x.reshape(-1, x.shape[-1])[:length[0]].double().cpu())):
            for text in held_out:
                length[0] = cglue.prompt_length(fused_clip, text)  # the prompt's tokens up to its end token
                clip.encode_from_tokens(clip.tokenize(text))

    kinds = {"text encoder": [g for g in store if g.startswith("text_model.")],
             "cross-attention K/V": [g for g in store if g.endswith(".attn2")],
             "UNet attention": spatial}
    per_concept = [{**{m: fusion.ScaledLoRA(p, 1.0) for m, p in it.concept.text_lora.items()},
                    **{m: fusion.ScaledLoRA(p, 1.0) for m, p in it.concept.unet_lora.items()}} for it in items]
    default = config_mod.FusionConfig()
    dtypes = (torch.float64, torch.float32) if args.fp32 else (torch.float64,)
    default_tag = _tag(torch.float64 if default.accumulate_fp64 else torch.float32)
    changes = f"LoRA change {args.share} of each weight" if world is None else "trained by the world recipe"
    print(f"\n{args.model}: N={args.concepts} concepts, {changes}; {len(held_out)} held-out prompts; "
          f"default: anchor {default.anchor}, ridge {default.ridge}, spatial_ridge {default.spatial_ridge}; "
          f"statistics in float64{' and float32 (rows marked fp32)' if args.fp32 else ''}")
    header = (f"{'stage':20s} {'solver':28s} | {'own err (worst)':>15s} | {'held-out / largest':>20s} "
              f"{'held-out moved':>13s}")
    print(header)
    print("-" * len(header))
    for stage, groups in kinds.items():
        results: dict[str, list[tuple[float, float]]] = {}
        for group in groups:
            feats = [torch.cat(rows) for rows in store[group]]
            x_held = torch.cat(held[group])
            modules = sorted({m for d in per_concept for m in d if _group_of(m) == group})
            w0 = {m: weight_of(m).double().cpu() for m in modules}
            averages = {m: fusion.average_deltas([d.get(m) for d in per_concept], *w0[m].shape).double()
                        for m in modules}
            candidates = {"average": averages}
            for dtype in dtypes:
                stats = fusion.GramStats(feats[0].shape[1], {m: w0[m].shape[0] for m in modules}, dtype=dtype)
                for x, d in zip(feats, per_concept):
                    stats.add(x, {m: d.get(m) for m in modules})
                for anchor in ("base", "average"):
                    for ridge in RIDGES:
                        solved = stats.solve(ridge=ridge, anchor=averages if anchor == "average" else None,
                                             out_dtype=torch.float64)
                        candidates[f"{anchor:7s} ridge {ridge:g}{_tag(dtype)}"] = solved
            for i in range(len(items)):
                candidates[f"concept {i} alone"] = {m: fusion.dense(per_concept[i][m]).double() for m in modules}
            for name, deltas in candidates.items():
                own = max(fusion.relative_output_error(w0[m], deltas[m], x, per_concept[i].get(m))
                          for m in modules for i, x in enumerate(feats) if not name.startswith("concept"))\
                    if not name.startswith("concept") else float("nan")
                moved = [_moved(x_held, w0[m], deltas[m]) for m in modules]
                largest = [max(_moved(x_held, w0[m], fusion.dense(d[m]).double()) for d in per_concept)
                           for m in modules]
                ratios = [a / b for a, b in zip(moved, largest) if b > 0]  # b = 0: no concept changes the layer
                results.setdefault(name, []).append((own, max(ratios, default=float("nan")), max(moved)))
        for name, values in results.items():
            own, ratio, moved = (max(v[k] for v in values) for k in range(3))
            ridge = default.spatial_ridge if stage == "UNet attention" else default.ridge
            default_name = f"{default.anchor:7s} ridge {ridge:g}{default_tag}"
            mark = "  <- default" if name.strip() == default_name.strip() else ""
            print(f"{stage:20s} {name:28s} | {own:15.2e} | {ratio:20.3f} {moved:13.3f}{mark}")
        print()


def _world(host):
    """The world testbed pipeline (its trained model and recipe), from testbed/scripts."""
    sys.path.insert(0, os.path.join(REPO, "testbed", "scripts"))
    import world_pipeline

    return world_pipeline.WorldPipeline.load(host)


def _world_captions(host, count: int = 20) -> list[str]:
    """``count`` captions of the base world (plain objects, no concept word), varied and deterministic."""
    render = host.pack("testbed.world.render")
    combos = [(s, c, size, pos, g) for s in render.SHAPES for c in render.COLOURS for size in render.SIZES
              for pos in render.POSITIONS for g in render.BACKGROUNDS]
    step = max(1, len(combos) // count)
    return [render.caption([render.Obj(s, c, size=size, position=pos)], g) for s, c, size, pos, g in combos[::step]][
        :count]


def _tag(dtype: torch.dtype) -> str:
    return " fp32" if dtype == torch.float32 else ""


def _group_of(module: str) -> str:
    import re

    if module.startswith("text_model."):
        return re.sub(r"\.(q|k|v)_proj$", ".qkv", module)
    if ".attn2.to_k" in module or ".attn2.to_v" in module:
        return re.sub(r"\.to_[kv]$", "", module)
    return re.sub(r"\.attn1\.to_[qkv]$", ".attn1.qkv", module)


def _moved(x: torch.Tensor, w0: torch.Tensor, delta: torch.Tensor) -> float:
    """‖X Δᵀ‖ / ‖X W₀ᵀ‖."""
    return float(torch.linalg.norm(x @ delta.T) / torch.linalg.norm(x @ w0.T))


if __name__ == "__main__":
    main()
