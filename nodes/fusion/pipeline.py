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
from ...mixofshow_core.config import (
    FUSION_HELD_OUT_PROMPTS,
    FUSION_SAMPLE_TEMPLATE,
    FUSION_TEXT_TEMPLATES,
    FusionConfig,
)
from ...mixofshow_core.formats import kohya
from ...mixofshow_core.fusion import average_deltas, dense
from ...mixofshow_core.fusion_stages import (
    FusionItem,
    FusionReport,
    Stage,
    check_unique_words,
    run_paired_stage,
    run_stage,
    scaled,
)
from .. import model_layout
from ..concepts import layerwise

__all__ = ["FusionItem", "FusionReport", "fuse"]
_KV = re.compile(r"\.attn2\.to_[kv]$")
AVERAGED = "convolutions (weight average)"  # report line of a standard LoRA's wider-kernel convolutions
OTHER = "biases and norms (weight average)"  # report line of a standard LoRA's bias and norm changes
_UNET_KEY = "diffusion_model."  # host parameter keys of the UNet; the others are the text encoders'


def _text_group(name: str) -> str:
    return re.sub(r"\.(q|k|v)_proj$", ".qkv", name)


def _unet_group(name: str) -> str:
    return re.sub(r"\.attn1\.to_[qkv]$", ".attn1.qkv", name)


def _forward_position(group: str) -> tuple[int, int]:
    """(layer, step) of a text-encoder group in forward order: q/k/v, out_proj, fc1, fc2 of each layer."""
    layer = int(re.search(r"\.layers\.(\d+)\.", group).group(1))
    step = {"qkv": 0, "out_proj": 1, "fc1": 2, "fc2": 3}.get(group.rsplit(".", 1)[1], 4)
    return layer, step


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


def _lora_part(concept: Concept, text: bool, unet_filter: Callable[[str], bool], unet_other: bool = True) -> Concept:
    """The concept's text part (or none), the UNet modules ``unet_filter`` keeps, and its UNet biases and norms
    with ``unet_other`` (its text encoders' go with ``text``)."""
    other = {k: d for k, d in concept.other_changes.items() if (unet_other if k.startswith(_UNET_KEY) else text)}
    return dataclasses.replace(concept, text_lora=concept.text_lora if text else {}, other_changes=other,
                               unet_lora={m: p for m, p in concept.unet_lora.items() if unet_filter(m)})


def _other_patches(other: dict[str, torch.Tensor], unet: bool) -> dict[str, tuple]:
    """Host "diff" patches of bias/norm changes (host parameter key -> change): the UNet's, or the text encoders'."""
    return {k: (d,) for k, d in other.items() if k.startswith(_UNET_KEY) == unet}


def _add_other(model, clip, other: dict[str, torch.Tensor], unet_alpha: float, text_alpha: float):
    """(model, clip) clones with bias/norm changes added at the given strengths."""
    model, clip = model.clone(), clip.clone()
    model.add_patches(_other_patches(other, True), unet_alpha)
    clip.add_patches(_other_patches(other, False), text_alpha)
    return model, clip


def _with_lora(model, clip, concept: Concept, unet_alpha: float, text_alpha: float):
    """(model, clip) clones with the concept's LoRA part at the given strengths (host LoRA path)."""
    model, clip = comfy.sd.load_lora_for_models(model, clip, kohya.state_dict(concept), unet_alpha, text_alpha)
    if concept.other_changes:
        model, clip = _add_other(model, clip, concept.other_changes, unet_alpha, text_alpha)
    return model, clip


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
        self.other = self._other_average()
        self._own_clips: dict[int, Any] = {}  # id(item) -> its own CLIP, built once (stages and report reuse it)
        self.options = dict(device=comfy.model_management.get_torch_device(), progress=progress, sink=sink,
                            interrupt=comfy.model_management.throw_exception_if_processing_interrupted)

    def _other_average(self) -> dict[str, torch.Tensor]:
        """Standard LoRAs' bias and norm changes, each Σ_i strength_i · change_i / n (missing = 0): per channel
        they shift every token and pixel alike, so there is no per-concept input to fit them on."""
        start = time.perf_counter()
        keys = sorted({k for i in self.items for k in i.concept.other_changes})
        out = {}
        for key in keys:
            unet = key.startswith(_UNET_KEY)
            out[key] = sum(((i.unet_alpha if unet else i.text_alpha) * i.concept.alpha)
                           * i.concept.other_changes[key].float() for i in self.items
                           if key in i.concept.other_changes) / len(self.items)  # (channels,)
        if out:
            self.report.layers[OTHER], self.report.seconds[OTHER] = len(out), time.perf_counter() - start
        return out

    def words(self, item: FusionItem) -> str:
        return item.concept.prompt_text

    def with_words(self, clip: Any) -> Any:
        clip = clip.clone()
        for item in self.items:
            layerwise.register_words(clip, item.concept, self.rows, item.concept.name)
        return clip

    def stage(self, stage: Stage, per_concept: list[dict], feed, weight=None) -> dict[str, torch.Tensor]:
        return run_stage(stage, per_concept, feed, self.cfg, self.report, weight=weight, **self.options)

    # ---- stage 1: text encoder, on each concept's own encoder (or, text_inputs="fused", layer by layer)
    def text_encoder(self) -> tuple[dict[str, torch.Tensor], Any]:
        root = self.clip.cond_stage_model
        modules = sorted({m for i in self.items for m in i.concept.text_lora})
        shapes = {m: tuple(root.get_submodule(model_layout.clip_module(m)).weight.shape[:2]) for m in modules}
        hooks = {model_layout.clip_module(m): _text_group(m) for m in modules}
        per_text = [scaled(i.concept.text_lora, i.text_alpha * i.concept.alpha) for i in self.items]
        stage = Stage("text encoder", shapes, _text_group, self.cfg.ridge, self.cfg.text_iters)
        if self.cfg.text_inputs == "fused" and self.cfg.mode == "closed_form":
            delta = self._text_encoder_layer_by_layer(stage, modules, hooks, per_text)
        else:
            delta = self.stage(stage, per_text, lambda i, add: self._own_text_features(i, hooks, add),
                               self._clip_weights(modules) if self.cfg.mode == "lbfgs" else None)
        return delta, self.with_words(self._patched_clip(delta))

    def _own_clip(self, item: FusionItem) -> Any:
        """The base CLIP with this concept's text-encoder LoRA and its words (built on first use)."""
        if id(item) not in self._own_clips:
            text_only = _lora_part(item.concept, True, lambda m: False, unet_other=False)
            own_clip = _with_lora(self.model, self.clip, text_only, 0.0, item.text_alpha)[1].clone()
            layerwise.register_words(own_clip, item.concept, self.rows, item.concept.name)
            self._own_clips[id(item)] = own_clip
        return self._own_clips[id(item)]

    def _text_passes(self, clip: Any, item: FusionItem, hooks: dict[str, str], add) -> None:
        """Encode each fusion prompt of ``item`` on ``clip``; ``add(template, group, x)`` hears the prompt's own
        tokens (no padding) of every hooked layer's input."""
        root = clip.cond_stage_model
        for t, template in enumerate(FUSION_TEXT_TEMPLATES):
            text = template.format(self.words(item))
            length = layerwise.prompt_length(clip, text)  # the prompt's own tokens, no padding
            with _capture(root, hooks, lambda g, x, t=t: add(t, g, x[:, :length] if x.dim() == 3 else x)):
                layerwise.layer_contexts(clip, text, self.rows)

    def _own_text_features(self, i: int, hooks: dict[str, str], add) -> None:
        self._text_passes(self._own_clip(self.items[i]), self.items[i], hooks, lambda t, g, x: add(g, x))

    def _clip_weights(self, modules: list[str]) -> Callable[[str], torch.Tensor]:
        self.clip.load_model()  # W0 as the base CLIP (with any LoRA loaded before the fusion) holds it
        return _weights(self.clip.cond_stage_model, {m: model_layout.clip_module(m) for m in modules})

    def _patched_clip(self, delta: dict[str, torch.Tensor]) -> Any:
        """The base CLIP with fused weight changes and the averaged text-encoder biases and norms."""
        clip = self.clip.clone()
        clip.add_patches({f"{model_layout.clip_module(m)}.weight": (d,) for m, d in delta.items()}, 1.0)
        clip.add_patches(_other_patches(self.other, False), 1.0)
        return clip

    def _text_encoder_layer_by_layer(self, stage: Stage, modules: list[str], hooks: dict[str, str],
                                     per_text: list[dict]) -> dict[str, torch.Tensor]:
        """text_inputs="fused": rounds in forward order (q/k/v, out_proj, fc1, fc2 of layer 0, then layer 1, ...;
        both SDXL encoders' layer n in one round), each fitted on what the fused earlier rounds compute."""
        own: list[dict[tuple[int, str], torch.Tensor]] = []  # per concept: (template, group) -> its own inputs
        for item in self.items:
            seen: dict[tuple[int, str], torch.Tensor] = {}
            self._text_passes(self._own_clip(item), item, hooks,
                              lambda t, g, x, seen=seen: seen.__setitem__((t, g), x.float().cpu().clone()))
            own.append(seen)
        rounds: dict[tuple[int, int], list[str]] = {}
        for group in sorted(set(hooks.values())):
            rounds.setdefault(_forward_position(group), []).append(group)
        ordered = [rounds[k] for k in sorted(rounds)]
        state = {"delta": {}, "clip": self.with_words(self.clip.clone())}
        round_hooks = [{path: g for path, g in hooks.items() if g in names} for names in ordered]

        def feed(r: int, i: int, add) -> None:
            self._text_passes(state["clip"], self.items[i], round_hooks[r],
                              lambda t, g, x: add(g, x, own[i][(t, g)]))

        def base(module: str) -> torch.Tensor:
            self.clip.load_model()
            return self.clip.cond_stage_model.get_submodule(model_layout.clip_module(module)).weight.detach() \
                .float().cpu().clone()

        def apply(delta: dict[str, torch.Tensor]) -> None:
            state["delta"].update(delta)
            state["clip"] = self.with_words(self._patched_clip(state["delta"]))

        return run_paired_stage(stage, ordered, per_text, feed, base, apply, self.cfg, self.report,
                                **self.options)

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

        kv_stage = Stage("cross-attention K/V", kv, _kv_group, self.cfg.ridge, self.cfg.kv_iters)
        if self.cfg.kv_targets == "own_model" and self.cfg.mode == "closed_form":
            kv_delta = self._kv_own_model(kv_stage, kv_sites, per_unet, fused_clip, unet, ldm)
        else:
            kv_delta = self.stage(kv_stage, per_unet, kv_feed, weight)
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
        fused = patched(kv_model, sp_delta)
        fused.add_patches(_other_patches(self.other, True), 1.0)
        return unet_delta, fused


    def _token_contexts(self, clip: Any, item: FusionItem) -> list[torch.Tensor]:
        """Per fusion prompt: ``clip``'s contexts at the concept's tokens and the first end token, [L, p, D]."""
        out = []
        for template in FUSION_TEXT_TEMPLATES:
            text = template.format(self.words(item))
            contexts, _, positions = layerwise.layer_contexts(clip, text, self.rows, item.concept.triggers)
            out.append(contexts[:, positions].float().cpu())  # (L, p, D)
        return out

    def _kv_own_model(self, stage: Stage, sites: dict, per_unet: list[dict], fused_clip: Any, unet: torch.nn.Module,
                      ldm: dict[str, str]) -> dict[str, torch.Tensor]:
        """kv_targets="own_model": K/V read the fused encoder's contexts and are fitted to give each concept's own
        model's keys/values (its own contexts through W₀ + its change), one layer per round from cached contexts."""
        fused = [self._token_contexts(fused_clip, item) for item in self.items]
        own = [self._token_contexts(self._own_clip(item), item) for item in self.items]
        comfy.model_management.load_models_gpu([self.model])  # W0 as the base model holds it
        rounds = [[g] for g in sorted(sites)]

        def feed(r: int, i: int, add) -> None:
            group = rounds[r][0]
            for x, x_own in zip(fused[i], own[i]):
                add(group, x[sites[group].row], x_own[sites[group].row])  # (p, D) each

        def base(module: str) -> torch.Tensor:
            return unet.get_submodule(ldm[module]).weight.detach().float().cpu().flatten(1)

        return run_paired_stage(stage, rounds, per_unet, feed, base, lambda delta: None, self.cfg, self.report,
                                **self.options)

    # ---- the report's end-to-end check
    def end_to_end(self, fused_clip: Any, kv_delta: dict[str, torch.Tensor]) -> None:
        """Per concept, over every cross-attention layer and both fusion prompts: the fused model's keys and values
        at the concept's tokens against its own model's (its text-encoder LoRA and words, then W₀ + its K/V
        change), ‖fused − own‖ / ‖own‖, into ``report.end_to_end``."""
        fused_by_path = {self.layout.ldm_name(m): d for m, d in kv_delta.items()}
        contexts = [list(zip(self._token_contexts(self._own_clip(item), item), self._token_contexts(fused_clip, item)))
                    for item in self.items]  # per concept and prompt: (own, fused) [L, p, D]
        comfy.model_management.load_models_gpu([self.model])  # W0 as the base model holds it
        unet = self.model.model.diffusion_model
        own_kv = [{self.layout.ldm_name(m): d for m, d in
                   scaled(i.concept.unet_lora, i.unet_alpha * i.concept.alpha).items() if _KV.search(m)}
                  for i in self.items]
        error = [0.0] * len(self.items)
        norm = [0.0] * len(self.items)
        for site in self.sites:
            for proj in ("to_k", "to_v"):
                path = f"{site.ldm_prefix}.attn2.{proj}"
                w0 = unet.get_submodule(path).weight.detach().double().cpu()  # (out, D)
                fused_w = w0 + (fused_by_path[path].double().flatten(1) if path in fused_by_path else 0)
                for i, pairs in enumerate(contexts):
                    own_w = w0 + (dense(own_kv[i][path]).double() if path in own_kv[i] else 0)
                    for own, fused in pairs:
                        target = own[site.row].double() @ own_w.T  # (p, out)
                        error[i] += float(((fused[site.row].double() @ fused_w.T - target) ** 2).sum())
                        norm[i] += float((target ** 2).sum())
        self.report.end_to_end = {item.concept.name: (e / n) ** 0.5 if n > 0 else 0.0
                                  for item, e, n in zip(self.items, error, norm)}
        self.report.held_out = self._held_out(fused_clip, fused_by_path, own_kv, unet)

    def _held_out(self, fused_clip: Any, fused_by_path: dict, own_kv: list[dict], unet: torch.nn.Module) -> float:
        """How far the fused model moves the keys/values of prompts without concept words from the base model's,
        over the strongest single concept's own move (≤ 1: no further than that concept alone)."""
        def contexts(clip: Any) -> list[torch.Tensor]:
            return [clip.encode_from_tokens(clip.tokenize(t))[0, :layerwise.prompt_length(clip, t)].double().cpu()
                    for t in FUSION_HELD_OUT_PROMPTS]  # (T, D) each

        base, fused = contexts(self.clip), contexts(fused_clip)
        own = [contexts(self._own_clip(item)) for item in self.items]
        comfy.model_management.load_models_gpu([self.model])
        moved, moved_own, total = 0.0, [0.0] * len(self.items), 0.0
        for path in sorted({f"{s.ldm_prefix}.attn2.{p}" for s in self.sites for p in ("to_k", "to_v")}):
            w0 = unet.get_submodule(path).weight.detach().double().cpu()  # (out, D)
            fused_w = w0 + (fused_by_path[path].double().flatten(1) if path in fused_by_path else 0)
            for k, x in enumerate(base):
                reference = x @ w0.T  # (T, out)
                total += float((reference ** 2).sum())
                moved += float(((fused[k] @ fused_w.T - reference) ** 2).sum())
                for i in range(len(self.items)):
                    own_w = w0 + (dense(own_kv[i][path]).double() if path in own_kv[i] else 0)
                    moved_own[i] += float(((own[i][k] @ own_w.T - reference) ** 2).sum())
        strongest = max(moved_own, default=0.0)
        return (moved / strongest) ** 0.5 if strongest > 0 else 0.0


def fuse(model: Any, clip: Any, items: list[FusionItem], cfg: FusionConfig,
         progress: Callable[[str, int, int], None] | None = None,
         feature_sink: Callable[[str, int, torch.Tensor], None] | None = None) -> tuple[Any, Any, dict, FusionReport]:
    """Fuse ``items`` into clones of the base (model, clip).

    ``feature_sink(group, concept_index, rows)`` sees every feature batch (benchmarks record them).
    Returns (fused MODEL, fused CLIP with every concept word, fused deltas by diffusers name
    {"text": {...}, "unet": {...}} and averaged biases/norms by host parameter key {"other": {...}}, report).
    """
    fusion = _Fusion(model, clip, items, cfg, progress, feature_sink)
    text_delta, fused_clip = fusion.text_encoder()
    unet_delta, fused_model = fusion.unet_stages(fused_clip)
    fusion.end_to_end(fused_clip, unet_delta)
    comfy.model_management.soft_empty_cache()
    return fused_model, fused_clip, {"text": text_delta, "unet": unet_delta, "other": fusion.other}, fusion.report
