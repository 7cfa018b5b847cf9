"""Gradient fusion inside ComfyUI (spec §2): the host side of ``mixofshow_core.fusion_stages``.

Stage order as in the paper: (1) text-encoder attention layers (SDXL: both encoders), features from each
concept's own text encoder on its prompts; (2) UNet cross-attention K/V, inputs from the *fused* encoder
(concept tokens and the first end token, each layer with its attention block's row); (3) the other UNet
attention layers, features recorded while sampling each concept with the fused encoder and K/V plus its own
spatial LoRA (no CFG).
Each stage is a feed (forward pre-hooks hand every input to the core as it streams past) and the fused
changes go back as the host's own weight patches (``add_patches``).
"""
from __future__ import annotations

import dataclasses
import re
import time
import zlib
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import comfy.model_management
import comfy.sd
import torch

from ...mixofshow_core.concept import Concept
from ...mixofshow_core.config import FUSION_SAMPLE_TEMPLATE, FUSION_TEXT_TEMPLATES, FusionConfig
from ...mixofshow_core.formats import kohya
from ...mixofshow_core.fusion import average_deltas
from ...mixofshow_core.fusion_stages import FusionItem, FusionReport, Stage, check_unique_words, run_stage, scaled
from .. import model_layout
from ..concepts import layerwise

__all__ = ["FusionItem", "FusionReport", "fuse"]
_KV = re.compile(r"\.attn2\.to_[kv]$")
AVERAGED = "convolutions (weight average)"  # report line of a standard LoRA's wider-kernel convolutions


def _text_group(name: str) -> str:
    return re.sub(r"\.(q|k|v)_proj$", ".qkv", name)


def _unet_group(name: str) -> str:
    return re.sub(r"\.attn1\.to_[qkv]$", ".attn1.qkv", name)


def _kv_group(name: str) -> str:
    return name.rsplit(".", 1)[0]


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """A layer's input with features last: [B, T, C] as it is, a 1x1 conv's [B, C, H, W] as [B, H, W, C]."""
    x = x.detach()
    return x.movedim(1, -1) if x.dim() == 4 else x


@contextmanager
def _capture(root: torch.nn.Module, names: dict[str, str], sink: Callable[[str, torch.Tensor], None]):
    """Forward pre-hooks on ``root``'s modules {module name: group}; one call per group per forward."""
    handles = []
    seen: dict[str, str] = {}
    for module_name, group in names.items():
        if group in seen.values():
            continue
        seen[module_name] = group
        module = root.get_submodule(module_name)
        handles.append(module.register_forward_pre_hook(lambda mod, args, g=group: sink(g, _channels_last(args[0]))))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _lora_part(concept: Concept, text: bool, unet_filter: Callable[[str], bool]) -> Concept:
    return dataclasses.replace(concept, text_lora=concept.text_lora if text else {},
                               unet_lora={m: p for m, p in concept.unet_lora.items() if unet_filter(m)})


def _with_lora(model, clip, concept: Concept, unet_alpha: float, text_alpha: float):
    """(model, clip) clones with the concept's LoRA part at the given strengths (host LoRA path)."""
    return comfy.sd.load_lora_for_models(model, clip, kohya.state_dict(concept), unet_alpha, text_alpha)


def _change_dtype(weight: torch.Tensor) -> torch.dtype:
    """The dtype a fused change is kept in: a 16-bit weight's own (the host adds it in float32 anyway; rounding the
    change to 16 bits costs less than rounding the patched weight), else float32."""
    return weight.dtype if weight.dtype in (torch.float16, torch.bfloat16) else torch.float32


def _weights(root: torch.nn.Module, paths: dict[str, str]) -> Callable[[str], torch.Tensor]:
    """W0 [out, in] of a module as the (patched) host model holds it now: the L-BFGS reference mode's start."""
    return lambda m: root.get_submodule(paths[m]).weight.detach().float().cpu().flatten(1).clone()


class _Fusion:
    """The base (model, clip), the items, and what every stage needs to know about them."""

    def __init__(self, model: Any, clip: Any, items: list[FusionItem], cfg: FusionConfig,
                 progress: Callable[[str, int, int], None] | None, sink: Callable | None):
        check_unique_words(items)
        self.model, self.clip, self.items, self.cfg = model, clip, items, cfg
        self.family, self.rows, encoders = model_layout.model_and_clip(model, clip, "gradient fusion")
        self.sites = model_layout.cross_attention_sites(model)
        for item in items:
            model_layout.check_concept_fits(item.concept, self.rows, encoders, self.family, item.concept.name)
        self.layout = model_layout.unet_layout(model)
        self.report = FusionReport([i.concept.name for i in items])
        self.options = dict(device=comfy.model_management.get_torch_device(), progress=progress, sink=sink,
                            interrupt=comfy.model_management.throw_exception_if_processing_interrupted)

    def words(self, item: FusionItem) -> str:
        return item.concept.prompt_text

    def with_words(self, clip: Any) -> Any:
        clip = clip.clone()
        for item in self.items:
            layerwise.register_words(clip, item.concept, self.rows, item.concept.name)
        return clip

    def stage(self, stage: Stage, per_concept: list[dict], feed, weight=None) -> dict[str, torch.Tensor]:
        return run_stage(stage, per_concept, feed, self.cfg, self.report, weight=weight, **self.options)

    # ---- stage 1: text encoder, on each concept's own encoder
    def text_encoder(self) -> tuple[dict[str, torch.Tensor], Any]:
        root = self.clip.cond_stage_model
        modules = sorted({m for i in self.items for m in i.concept.text_lora})
        shapes = {m: tuple(root.get_submodule(model_layout.clip_module(m)).weight.shape[:2]) for m in modules}
        hooks = {model_layout.clip_module(m): _text_group(m) for m in modules}

        def feed(i: int, add) -> None:
            item = self.items[i]
            text_only = _lora_part(item.concept, True, lambda m: False)
            own_clip = _with_lora(self.model, self.clip, text_only, 0.0, item.text_alpha)[1].clone()
            layerwise.register_words(own_clip, item.concept, self.rows, item.concept.name)
            for template in FUSION_TEXT_TEMPLATES:
                text = template.format(self.words(item))
                length = layerwise.prompt_length(own_clip, text)  # the prompt's own tokens, no padding
                with _capture(root, hooks, lambda g, x: add(g, x[:, :length] if x.dim() == 3 else x)):
                    layerwise.layer_contexts(own_clip, text, self.rows)

        weight = None
        if self.cfg.mode == "lbfgs":
            self.clip.load_model()
            weight = _weights(root, {m: model_layout.clip_module(m) for m in modules})
        per_text = [scaled(i.concept.text_lora, i.text_alpha * i.concept.alpha) for i in self.items]
        stage = Stage("text encoder", shapes, _text_group, self.cfg.ridge, self.cfg.text_iters)
        delta = self.stage(stage, per_text, feed, weight)
        fused_clip = self.clip.clone()
        fused_clip.add_patches({f"{model_layout.clip_module(m)}.weight": (d,) for m, d in delta.items()}, 1.0)
        return delta, self.with_words(fused_clip)

    # ---- stages 2 and 3: the UNet
    def unet_stages(self, fused_clip: Any) -> tuple[dict[str, torch.Tensor], Any]:
        import nodes  # ComfyUI's built-in nodes (EmptyLatentImage, common_ksampler)

        unet = self.model.model.diffusion_model
        # one name per layer: ED-LoRA concepts name UNet modules the diffusers way, standard LoRAs the LDM way
        canon: dict[str, str] = {}  # LDM name -> the fused module's name (the first concept's spelling)
        for item in self.items:
            for m in item.concept.unet_lora:
                canon.setdefault(self.layout.ldm_name(m), m)
        modules = sorted(canon.values())
        ldm = {m: path for path, m in canon.items()}
        weight_shapes = {m: unet.get_submodule(ldm[m]).weight.shape for m in modules}  # 1x1 convs: [out, in, 1, 1]
        # fused changes are kept in a 16-bit model's own weight dtype (SDXL: 3.5 GB of dense changes in float32)
        dtypes = {m: _change_dtype(unet.get_submodule(ldm[m]).weight) for m in modules}
        shapes = {m: (s[0], s[1:].numel()) for m, s in weight_shapes.items()}  # a 1x1 conv is the linear map it is
        per_unet = [{canon[self.layout.ldm_name(m)]: d for m, d in
                     scaled(i.concept.unet_lora, i.unet_alpha * i.concept.alpha).items()} for i in self.items]
        weight = None
        if self.cfg.mode == "lbfgs":
            comfy.model_management.load_models_gpu([self.model])
            weight = _weights(unet, ldm)

        def patched(model: Any, delta: dict[str, torch.Tensor]) -> Any:
            model = model.clone()
            model.add_patches({f"diffusion_model.{ldm[m]}.weight": (d.reshape(weight_shapes[m]),)
                               for m, d in delta.items()}, 1.0)
            return model

        # K/V read the fused encoder's contexts at the concept tokens and the first end token, per layer (its row)
        kv = {m: s for m, s in shapes.items() if _KV.search(m)}
        kv_sites = {g: next(s for s in self.sites if g in (f"{s.diffusers_prefix}.attn2", f"{s.ldm_prefix}.attn2"))
                    for g in map(_kv_group, kv)}

        def kv_feed(i: int, add) -> None:
            for template in FUSION_TEXT_TEMPLATES:
                text = template.format(self.words(self.items[i]))
                contexts, _, positions = layerwise.layer_contexts(fused_clip, text, self.rows,
                                                                  self.items[i].concept.triggers)  # (L, T, D)
                for group, site in sorted(kv_sites.items()):
                    add(group, contexts[site.row, positions])  # (tokens, D)

        kv_delta = self.stage(Stage("cross-attention K/V", kv, _kv_group, self.cfg.ridge, self.cfg.kv_iters),
                              per_unet, kv_feed, weight)
        kv_delta = {m: d.to(dtypes[m]) for m, d in kv_delta.items()}
        kv_model = patched(layerwise.with_layer_patch(self.model), kv_delta)

        # wider kernels (a standard LoRA's 3x3 convolutions) mix neighbouring pixels: weight-averaged, not fused
        start = time.perf_counter()
        kernels = {m for m, s in weight_shapes.items() if s[2:].numel() > 1}
        averaged = {m: average_deltas([d.get(m) for d in per_unet], *shapes[m]).to(dtypes[m]) for m in sorted(kernels)}
        if averaged:
            self.report.layers[AVERAGED], self.report.seconds[AVERAGED] = len(averaged), time.perf_counter() - start

        # the other layers read what sampling each concept (its own spatial LoRA) streams past
        spatial = {m: s for m, s in shapes.items() if not _KV.search(m) and m not in kernels}
        hooks = {ldm[m]: _unet_group(m) for m in spatial}
        latent = nodes.EmptyLatentImage().generate(self.cfg.resolution, self.cfg.resolution, 1)[0]

        def spatial_feed(i: int, add) -> None:
            item = self.items[i]
            spatial_only = _lora_part(item.concept, False, lambda m: not _KV.search(m))
            own = _with_lora(kv_model, self.clip, spatial_only, item.unet_alpha, 0.0)[0]
            cond = layerwise.encode_layerwise(fused_clip, FUSION_SAMPLE_TEMPLATE.format(self.words(item)))
            seed = self.cfg.seed + zlib.crc32(self.words(item).encode())  # per concept, independent of order
            with _capture(unet, hooks, add):
                nodes.common_ksampler(own, seed, self.cfg.steps, 1.0, "dpmpp_2m", "normal", cond, cond, latent)

        stage = Stage("UNet attention", spatial, _unet_group, self.cfg.spatial_ridge, self.cfg.spatial_iters,
                      ticks_per_concept=self.cfg.steps)
        sp_delta = {m: d.to(dtypes[m]) for m, d in self.stage(stage, per_unet, spatial_feed, weight).items()}
        sp_delta.update(averaged)
        unet_delta = {m: d.reshape(weight_shapes[m]) for m, d in {**kv_delta, **sp_delta}.items()}
        return unet_delta, patched(kv_model, sp_delta)


def fuse(model: Any, clip: Any, items: list[FusionItem], cfg: FusionConfig,
         progress: Callable[[str, int, int], None] | None = None,
         feature_sink: Callable[[str, int, torch.Tensor], None] | None = None) -> tuple[Any, Any, dict, FusionReport]:
    """Fuse ``items`` into clones of the base (model, clip).

    ``feature_sink(group, concept_index, rows)`` sees every feature batch (benchmarks record them).
    Returns (fused MODEL, fused CLIP with every concept word, fused deltas by diffusers name
    {"text": {...}, "unet": {...}}, report).
    """
    fusion = _Fusion(model, clip, items, cfg, progress, feature_sink)
    text_delta, fused_clip = fusion.text_encoder()
    unet_delta, fused_model = fusion.unet_stages(fused_clip)
    comfy.model_management.soft_empty_cache()
    return fused_model, fused_clip, {"text": text_delta, "unet": unet_delta}, fusion.report
