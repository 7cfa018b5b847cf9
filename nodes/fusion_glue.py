"""Gradient fusion inside ComfyUI (spec §2): feature streams from the host, solves in the core.

Stage order as in the paper: (1) text-encoder attention layers, features from each concept's own text
encoder on its prompts; (2) UNet cross-attention K/V, inputs from the *fused* encoder (concept tokens
and the first end token, per layer); (3) the other UNet attention layers, features recorded while
sampling each concept with the fused encoder and K/V plus its own spatial LoRA (no CFG).
Features are captured with forward pre-hooks and folded into ``GramStats`` as they stream past.
"""
from __future__ import annotations

import logging
import re
import time
import zlib
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import comfy.model_management
import comfy.sd
import comfy.utils
import torch

from ..mixofshow_core.concept import Concept
from ..mixofshow_core.config import FUSION_SAMPLE_TEMPLATE, FUSION_TEXT_TEMPLATES, FusionConfig
from ..mixofshow_core.errors import ConceptWordError
from ..mixofshow_core.formats import kohya
from ..mixofshow_core.fusion import GramStats, ScaledLoRA, average_deltas, delta_growth, lbfgs_fuse
from . import comfy_glue

logger = logging.getLogger(__name__)
_CLIP_PREFIX = "clip_l.transformer."
_KV = re.compile(r"\.attn2\.to_[kv]$")
GROWTH_WARNING = 2.0  # delta_growth above this: the fused change extrapolates beyond the concepts' own


@dataclass
class FusionItem:
    """One concept to fuse, with the scales of its deltas (official unet_alpha / text_encoder_alpha)."""

    concept: Concept
    unet_alpha: float = 1.0
    text_alpha: float = 1.0


@dataclass
class FusionReport:
    """Per stage: layers solved, feature rows seen, seconds, the worst relative residual of the objective
    over its layers (0 = every concept reproduced exactly on its features), and the largest growth of a
    layer's fused change over the concepts' own (``delta_growth``) with that layer's name."""

    concepts: list[str]
    layers: dict[str, int]
    rows: dict[str, int]
    seconds: dict[str, float]
    residual: dict[str, float] = field(default_factory=dict)
    growth: dict[str, tuple[float, str]] = field(default_factory=dict)
    statistics_s: dict[str, float] = field(default_factory=dict)  # folding features into Gram statistics
    solve_s: dict[str, float] = field(default_factory=dict)  # the per-layer solves

    def text(self) -> str:
        parts = [f"fused {len(self.concepts)} concept(s): {', '.join(self.concepts)}"]
        for stage in self.layers:
            line = (f"{stage}: {self.layers[stage]} layers, {self.rows.get(stage, 0)} feature rows, "
                    f"{self.seconds.get(stage, 0.0):.2f} s")
            if stage in self.residual:
                line += f", max relative residual {self.residual[stage]:.2e}"
            if stage in self.growth:
                line += f", largest change {self.growth[stage][0]:.2f}x the concepts' own ({self.growth[stage][1]})"
            if stage in self.solve_s:
                features = self.seconds.get(stage, 0.0) - self.statistics_s[stage] - self.solve_s[stage]
                line += (f"; time: features {features:.2f} s, statistics {self.statistics_s[stage]:.2f} s, "
                         f"solve {self.solve_s[stage]:.2f} s")
            parts.append(line)
        return "\n".join(parts)


def check_unique_words(items: list[FusionItem]) -> None:
    owner: dict[str, str] = {}
    for item in items:
        for word in item.concept.words:
            if word in owner:
                raise ConceptWordError(
                    f"Concepts '{owner[word]}' and '{item.concept.name}' both use the word {word}; fused words "
                    "must be unique. Give one of them new words with 'ED-LoRA Export' (words input) first."
                )
            owner[word] = item.concept.name


def _groups(modules: dict[str, tuple[int, int]], shared: Callable[[str], str]) -> dict[str, dict[str, int]]:
    """Group module names by the input they read: group -> {module: out_features}."""
    out: dict[str, dict[str, int]] = {}
    for name, (_, features_out) in modules.items():
        out.setdefault(shared(name), {})[name] = features_out
    return out


def _text_group(name: str) -> str:
    return re.sub(r"\.(q|k|v)_proj$", ".qkv", name)


def _unet_group(name: str) -> str:
    return re.sub(r"\.attn1\.to_[qkv]$", ".attn1.qkv", name)


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


class _Solver:
    """Per-group accumulators (closed form) or stored features (L-BFGS), and the final solve."""

    def __init__(self, groups: dict[str, dict[str, int]], in_features: dict[str, int], cfg: FusionConfig,
                 iters: int, sink: Callable[[str, int, torch.Tensor], None] | None = None, ridge: float | None = None):
        self.cfg, self.iters, self.sink, self.concept = cfg, iters, sink, -1
        self.ridge = cfg.ridge if ridge is None else ridge
        self.token_limit: int | None = None  # keep only the first positions of [B, T, in] inputs
        dtype = torch.float64 if cfg.accumulate_fp64 else torch.float32
        device = comfy.model_management.get_torch_device()
        self.stats = {g: GramStats(in_features[g], outs, dtype=dtype, device=device) for g, outs in groups.items()}
        self.features: dict[str, list[list[torch.Tensor]]] = {g: [] for g in groups}
        self.current: dict[str, dict[str, Any]] = {}
        self.statistics_s = self.solve_s = 0.0

    def begin(self, deltas: dict[str, Any]) -> None:
        self.current = deltas
        self.concept += 1
        for g in self.features:
            self.features[g].append([])

    def add(self, group: str, x: torch.Tensor) -> None:
        if self.token_limit is not None and x.dim() == 3:
            x = x[:, :self.token_limit]  # (B, T', in): the prompt's own tokens, no padding
        x = x.reshape(-1, x.shape[-1])  # (rows, in)
        if self.sink is not None:
            self.sink(group, self.concept, x)
        start = time.perf_counter()
        if self.cfg.mode == "lbfgs":
            self.features[group][-1].append(x.float().cpu())
        self.stats[group].add(x, {m: self.current.get(m) for m in self.stats[group].cross})
        self.statistics_s += time.perf_counter() - start

    def rows(self) -> int:
        return sum(s.rows for s in self.stats.values())

    def solve(self, weights: Callable[[str], torch.Tensor], per_concept: list[dict[str, Any]],
              tick: Callable[[], None]) -> dict[str, torch.Tensor]:
        start = time.perf_counter()
        out: dict[str, torch.Tensor] = {}
        self.residual, self.growth = 0.0, (0.0, "")
        interrupt = comfy.model_management.throw_exception_if_processing_interrupted
        for group, stats in self.stats.items():
            closed = self.cfg.mode == "closed_form"
            if closed:
                anchor = None
                if self.cfg.anchor == "average":
                    anchor = {m: average_deltas([d.get(m) for d in per_concept], o, stats.in_features)
                              for m, o in stats.out_features.items()}
                out.update(stats.solve(ridge=self.ridge, anchor=anchor))
            else:
                feats = [torch.cat(f) for f in self.features[group]]
            for module in stats.cross:
                deltas = [d.get(module) for d in per_concept]
                if not closed:
                    w0 = weights(module).float().cpu()
                    out[module] = lbfgs_fuse(w0, feats, deltas, self.iters, on_eval=interrupt) - w0
                self.residual = max(self.residual, stats.relative_residual(module, out[module]))
                self.growth = max(self.growth, (delta_growth(out[module], deltas), module))
            tick()
        self.solve_s = time.perf_counter() - start
        return out


def _scaled(loras: dict, alpha: float) -> dict[str, ScaledLoRA]:
    return {m: ScaledLoRA(p, alpha) for m, p in loras.items()}


def _lora_part(concept: Concept, text: bool, unet_filter: Callable[[str], bool]) -> Concept:
    return Concept(words=concept.words, embeddings=concept.embeddings, alpha=concept.alpha, name=concept.name,
                   text_lora=concept.text_lora if text else {}, word_groups=concept.word_groups,
                   unet_lora={m: p for m, p in concept.unet_lora.items() if unet_filter(m)})


def _with_lora(model, clip, concept: Concept, unet_alpha: float, text_alpha: float):
    """(model, clip) clones with the concept's LoRA part at the given strengths (host LoRA path)."""
    return comfy.sd.load_lora_for_models(model, clip, kohya.state_dict(concept), unet_alpha, text_alpha)


class _Stage:
    """Progress of one stage: concepts processed, then layers solved."""

    def __init__(self, name: str, total: int, report: Callable[[str, int, int], None]):
        self.name, self.total, self.done, self.report = name, total, 0, report

    def tick(self, amount: int = 1) -> None:
        self.done += amount
        self.report(self.name, self.done, self.total)


def _finish(name: str, solver: "_Solver", w0: dict[str, torch.Tensor], per_concept: list[dict[str, Any]],
            stage: _Stage, report: "FusionReport") -> dict[str, torch.Tensor]:
    """Solve a stage's layers and record its rows and worst residual."""
    report.rows[name] = solver.rows()
    deltas = solver.solve(lambda m: w0[m], per_concept, stage.tick)
    report.residual[name] = solver.residual
    report.growth[name] = solver.growth
    report.statistics_s[name], report.solve_s[name] = solver.statistics_s, solver.solve_s
    if solver.growth[0] > GROWTH_WARNING:
        logger.warning("[Mix-of-Show] gradient fusion, %s: the fused change of %s is %.1fx the concepts' own; the "
                       "solution extrapolates where the features barely reach, which can break images with regions "
                       "or unseen prompts. Raise the ridge (spatial_ridge for UNet attention) if it does.", name,
                       solver.growth[1], solver.growth[0])
    return deltas


def _snapshot(root: torch.nn.Module, names: dict[str, str]) -> dict[str, torch.Tensor]:
    """Copies of the current (patched) weights, for the L-BFGS reference mode's W0."""
    return {m: root.get_submodule(path).weight.detach().float().cpu().flatten(1).clone() for m, path in names.items()}


def fuse(model: Any, clip: Any, items: list[FusionItem], cfg: FusionConfig,
         progress: Callable[[str, int, int], None] | None = None,
         feature_sink: Callable[[str, int, torch.Tensor], None] | None = None) -> tuple[Any, Any, dict, FusionReport]:
    """Fuse ``items`` into clones of the base (model, clip).

    ``feature_sink(group, concept_index, rows)`` sees every feature batch (benchmarks record them).
    Returns (fused MODEL, fused CLIP with every concept word, fused deltas by diffusers name
    {"text": {...}, "unet": {...}}, report).
    """
    import nodes

    check_unique_words(items)
    tick_log = progress or (lambda stage, done, total: None)
    sites = comfy_glue.cross_attention_sites(model)
    width = comfy_glue.clip_text_width(clip)
    for item in items:
        comfy_glue.check_concept_fits(item.concept, len(sites), width, item.concept.name)
    unet = model.model.diffusion_model
    text_root = clip.cond_stage_model
    layout = comfy_glue.unet_layout(model)
    report = FusionReport([i.concept.name for i in items], {}, {}, {})

    def add_words(target_clip):
        target_clip = target_clip.clone()
        for item in items:
            comfy_glue.register_words(target_clip, item.concept, len(sites), item.concept.name)
        return target_clip

    def words_of(item):
        return " ".join(item.concept.words)

    # ---- stage 1: text encoder
    start = time.time()
    text_modules = sorted({m for i in items for m in i.concept.text_lora})
    text_in = {m: text_root.get_submodule(_CLIP_PREFIX + m).weight.shape for m in text_modules}
    text_groups = _groups({m: (s[1], s[0]) for m, s in text_in.items()}, _text_group)
    per_text = [_scaled(i.concept.text_lora, i.text_alpha * i.concept.alpha) for i in items]
    stage = _Stage("text encoder", len(items) + len(text_groups), tick_log)
    text_w0: dict[str, torch.Tensor] = {}
    if cfg.mode == "lbfgs":
        clip.load_model()
        text_w0 = _snapshot(text_root, {m: _CLIP_PREFIX + m for m in text_modules})
    if cfg.mode == "average":
        text_delta = {m: average_deltas([d.get(m) for d in per_text], text_in[m][0], text_in[m][1])
                      for m in text_modules}
    else:
        inputs = {g: text_in[next(iter(o))][1] for g, o in text_groups.items()}
        solver = _Solver(text_groups, inputs, cfg, cfg.text_iters, feature_sink)
        hooks = {_CLIP_PREFIX + m: _text_group(m) for m in text_modules}
        for item, deltas in zip(items, per_text):
            _, own_clip = _with_lora(model, clip, _lora_part(item.concept, True, lambda m: False), 0.0, item.text_alpha)
            own_clip = own_clip.clone()
            comfy_glue.register_words(own_clip, item.concept, len(sites), item.concept.name)
            solver.begin(deltas)
            with _capture(text_root, hooks, solver.add):
                for template in FUSION_TEXT_TEMPLATES:
                    text = template.format(words_of(item))
                    solver.token_limit = comfy_glue.prompt_length(own_clip, text)
                    comfy_glue.layer_contexts(own_clip, text)
            stage.tick()
        text_delta = _finish("text encoder", solver, text_w0, per_text, stage, report)
        del solver
    fused_clip = clip.clone()
    fused_clip.add_patches({f"{_CLIP_PREFIX}{m}.weight": (d,) for m, d in text_delta.items()}, 1.0)
    fused_clip = add_words(fused_clip)
    report.layers["text encoder"], report.seconds["text encoder"] = len(text_delta), time.time() - start

    # ---- stage 2: cross-attention K/V
    start = time.time()
    by_prefix = {s.diffusers_prefix: s for s in sites}
    unet_modules = sorted({m for i in items for m in i.concept.unet_lora})
    kv_modules = [m for m in unet_modules if _KV.search(m)]
    ldm = {m: layout.diffusers_to_ldm(m) for m in unet_modules}
    weight_shapes = {m: unet.get_submodule(ldm[m]).weight.shape for m in unet_modules}  # 1x1 convs: [out, in, 1, 1]
    shapes = {m: s[:2] for m, s in weight_shapes.items()}  # (out, in): a 1x1 conv is fused as the linear map it is
    per_unet = [_scaled(i.concept.unet_lora, i.unet_alpha * i.concept.alpha) for i in items]
    kv_groups = _groups({m: (shapes[m][1], shapes[m][0]) for m in kv_modules}, lambda m: m.rsplit(".", 1)[0])
    stage = _Stage("cross-attention K/V", len(items) + len(kv_groups), tick_log)
    unet_w0: dict[str, torch.Tensor] = {}
    if cfg.mode == "lbfgs":
        comfy.model_management.load_models_gpu([model])
        unet_w0 = _snapshot(unet, ldm)
    if cfg.mode == "average":
        kv_delta = {m: average_deltas([d.get(m) for d in per_unet], *shapes[m]) for m in kv_modules}
    else:
        inputs = {g: shapes[next(iter(o))][1] for g, o in kv_groups.items()}
        solver = _Solver(kv_groups, inputs, cfg, cfg.kv_iters, feature_sink)
        for item, deltas in zip(items, per_unet):
            solver.begin(deltas)
            for template in FUSION_TEXT_TEMPLATES:
                contexts, _, positions = comfy_glue.layer_contexts(fused_clip, template.format(words_of(item)))
                for group in kv_groups:
                    site = by_prefix[group.rsplit(".attn2", 1)[0]]
                    solver.add(group, contexts[site.index, positions])  # (rows, D)
            stage.tick()
        kv_delta = _finish("cross-attention K/V", solver, unet_w0, per_unet, stage, report)
        del solver
    kv_model = comfy_glue.with_layer_patch(model)
    kv_model.add_patches({f"diffusion_model.{ldm[m]}.weight": (d.reshape(weight_shapes[m]),)
                          for m, d in kv_delta.items()}, 1.0)
    report.layers["cross-attention K/V"], report.seconds["cross-attention K/V"] = len(kv_delta), time.time() - start

    # ---- stage 3: the other UNet attention layers
    start = time.time()
    spatial = [m for m in unet_modules if not _KV.search(m)]
    sp_groups = _groups({m: (shapes[m][1], shapes[m][0]) for m in spatial}, _unet_group)
    stage = _Stage("UNet attention", len(items) * cfg.steps + len(sp_groups), tick_log)
    if cfg.mode == "average":
        sp_delta = {m: average_deltas([d.get(m) for d in per_unet], *shapes[m]) for m in spatial}
    else:
        inputs = {g: shapes[next(iter(o))][1] for g, o in sp_groups.items()}
        solver = _Solver(sp_groups, inputs, cfg, cfg.spatial_iters, feature_sink, ridge=cfg.spatial_ridge)
        hooks = {ldm[m]: _unet_group(m) for m in spatial}
        latent = nodes.EmptyLatentImage().generate(cfg.resolution, cfg.resolution, 1)[0]
        for item, deltas in zip(items, per_unet):
            own, _ = _with_lora(kv_model, clip, _lora_part(item.concept, False, lambda m: not _KV.search(m)),
                                item.unet_alpha, 0.0)
            cond = comfy_glue.encode_layerwise(fused_clip, FUSION_SAMPLE_TEMPLATE.format(words_of(item)))
            solver.begin(deltas)
            with _capture(unet, hooks, solver.add):
                seed = cfg.seed + zlib.crc32(words_of(item).encode())  # per concept, independent of order
                nodes.common_ksampler(own, seed, cfg.steps, 1.0, "dpmpp_2m", "normal", cond, cond, latent)
            stage.tick(cfg.steps)
        sp_delta = _finish("UNet attention", solver, unet_w0, per_unet, stage, report)
        del solver
    fused_model = kv_model.clone()
    fused_model.add_patches({f"diffusion_model.{ldm[m]}.weight": (d.reshape(weight_shapes[m]),)
                             for m, d in sp_delta.items()}, 1.0)
    report.layers["UNet attention"], report.seconds["UNet attention"] = len(sp_delta), time.time() - start
    comfy.model_management.soft_empty_cache()
    unet_delta = {m: d.reshape(weight_shapes[m]) for m, d in {**kv_delta, **sp_delta}.items()}
    return fused_model, fused_clip, {"text": text_delta, "unet": unet_delta}, report
