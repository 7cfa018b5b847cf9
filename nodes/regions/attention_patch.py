"""Regional cross-attention in ComfyUI through list patches (spec §3.3).

An ``attn2_patch`` stashes each cross-attention layer's input and (layer-selected) global context;
an ``attn2_output_patch`` then recomputes the queries, attends to every region's context on the rows
its mask covers, and adds ``mean_r(A_r) − A_global`` (through to_out's linear part) to the layer's
output. Other attention patches (IPAdapter, the layer-wise ED-LoRA patch) keep working: nothing is
replaced. Cond rows use each region's prompt, uncond rows its negative prompt.

The patch holds no module: the UNet it projects with is the one the host runs at call time, handed over
by a model wrapper (comfy_version.add_call_options). So nodes after ApplyRegions that clone and patch the
model (LoRA, FreeU, model sampling, more concepts) act inside the boxes too, and a clone copies no weights.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from comfy.ldm.modules.attention import optimized_attention

from ...mixofshow_core import layer_context
from ...mixofshow_core.regional_attention import regional_output
from ...mixofshow_core.regions import Region, attention_grid, rasterize
from ...mixofshow_core.unet_layout import row_count
from .. import comfy_version, model_layout

logger = logging.getLogger(__name__)
UNET_OPTION = "mixofshow_unet"  # transformer_options key: the running UNet, set per model call


@dataclass
class RegionCondition:
    """A region with its encoded prompt and negative prompt (conditioning tensors [1, T, D])."""

    region: Region
    positive: torch.Tensor
    negative: torch.Tensor


def _lcm_repeat(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Repeat contexts end to end to one common length (attention-neutral, as ComfyUI pads)."""
    length = 1
    for t in tensors:
        length = length * t.shape[1] // math.gcd(length, t.shape[1])
    return [t.repeat(1, length // t.shape[1], 1) for t in tensors]


class RegionalAttentionPatch:
    mixofshow_regions = True

    def __init__(self, regions: list[RegionCondition], sites):
        self.regions = regions
        self.layers = row_count(sites)
        self.table = {(s.block[0], s.block[1], s.depth): s for s in sites}
        self.stash: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self.mask_cache: dict[tuple[int, int], torch.Tensor] = {}
        self.warned: set[tuple[int, tuple[int, int]]] = set()

    def _key(self, extra) -> tuple | None:
        block = extra.get("block")
        return None if block is None else (block[0], block[1], extra.get("block_index", 0))

    def before(self, n, context, value, extra):
        key = self._key(extra)
        if key in self.table and context is not None:
            self.stash[key] = (n, context)
        return n, context, value

    def masks(self, h: int, w: int) -> torch.Tensor:
        if (h, w) not in self.mask_cache:
            rows = []
            for i, rc in enumerate(self.regions):
                cells, rescued = rasterize(rc.region, h, w)
                if rescued and (i, (h, w)) not in self.warned:
                    self.warned.add((i, (h, w)))
                    logger.warning("[Mix-of-Show] region %d covers no whole cell of the %dx%d attention grid; "
                                   "it uses the cell at its centre there. Draw it larger for finer control.", i, h, w)
                rows.append(cells.reshape(-1))
            self.mask_cache[(h, w)] = torch.stack(rows)  # (R, h*w)
        return self.mask_cache[(h, w)]

    def _contexts(self, layer: int, kinds: list[int], per_chunk: int, device, dtype) -> list[torch.Tensor]:
        out = []
        for rc in self.regions:
            pos = layer_context.select_layer(rc.positive.to(device, dtype), layer, self.layers)
            neg = layer_context.select_layer(rc.negative.to(device, dtype), layer, self.layers)
            pos, neg = _lcm_repeat([pos, neg])
            rows = [neg if kind == 1 else pos for kind in kinds for _ in range(per_chunk)]
            out.append(torch.cat(rows))  # (B, T, D)
        return out

    def after(self, out, extra):
        key = self._key(extra)
        if key not in self.stash:
            return out
        n, context = self.stash.pop(key)
        site = self.table[key]
        unet = extra.get(UNET_OPTION)
        if unet is None:
            raise RuntimeError("[Mix-of-Show] regional attention ran without its model wrapper; a node after "
                               "ApplyRegions removed the model's wrappers. Apply regions after that node.")
        attn = unet.get_submodule(site.ldm_prefix).attn2
        shape = extra["original_shape"]
        h, w = attention_grid(shape[2], shape[3], n.shape[1])
        masks = self.masks(h, w).to(n.device)
        kinds = list(extra.get("cond_or_uncond", [0]))
        per_chunk = n.shape[0] // max(len(kinds), 1)
        heads = extra["n_heads"]
        q = attn.to_q(n)  # (B, N, C)
        contexts = _lcm_repeat(self._contexts(site.row, kinds, per_chunk, n.device, n.dtype))
        stacked = torch.cat(contexts)  # (R*B, T, D): one projection call for all regions
        region_kv = list(zip(attn.to_k(stacked).split(n.shape[0]), attn.to_v(stacked).split(n.shape[0])))
        global_kv = (attn.to_k(context), attn.to_v(context))
        weight = attn.to_out[0].weight

        def attend(qq, k, v):
            return optimized_attention(qq, k, v, heads)

        def project(a):
            return F.linear(a, weight.to(a.dtype))

        return regional_output(q, out, region_kv, masks, [rc.region.weight for rc in self.regions], attend,
                               project, global_kv)


def with_regions(model: Any, regions: list[RegionCondition]) -> Any:
    """Clone of ``model`` whose cross-attention honours ``regions`` (any sampler node works with it)."""
    model = model.clone()
    if not regions:
        return model
    sites = model_layout.cross_attention_sites(model)
    patch = RegionalAttentionPatch(regions, sites)
    model.set_model_attn2_patch(patch.before)
    model.set_model_attn2_output_patch(patch.after)
    comfy_version.add_call_options(model, "mixofshow_regions", _running_unet)
    return model


def _running_unet(base_model) -> dict:
    return {UNET_OPTION: base_model.diffusion_model}


class RegionScaledControl:
    """Wraps a ControlNet/T2I-Adapter so that inside each region its strength is the region's own.

    Delegates everything to the wrapped control; only ``get_control`` multiplies each residual map
    [B, C, h, w] by ``strength_r / global strength`` inside region r (overlaps averaged), 1 outside.
    Host internal (ComfyUI has no spatial ControlNet strength): relies on ``get_control(x_noisy, t, cond,
    batched_number[, transformer_options])`` returning {"input"|"middle"|"output": [tensor | None]} and on
    ``copy()``; checked on 2024-03, 0.3.75, 0.8.0 and 0.26.0.
    """

    def __init__(self, inner: Any, regions: list[Region]):
        self.inner = inner
        self.regions = [r for r in regions if r.strength is not None]

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def copy(self):
        return RegionScaledControl(self.inner.copy(), self.regions)

    def scale_map(self, h: int, w: int, device, dtype) -> torch.Tensor:
        total = torch.zeros(h, w)
        count = torch.zeros(h, w)
        base = float(getattr(self.inner, "strength", 1.0)) or 1.0
        for region in self.regions:
            cells = rasterize(region, h, w)[0].float()
            total += cells * (region.strength / base)
            count += cells
        scale = torch.where(count > 0, total / count.clamp(min=1), torch.ones(h, w))
        return scale.to(device=device, dtype=dtype)  # (h, w)

    def get_control(self, *args, **kwargs):  # (x_noisy, t, cond, batched_number[, transformer_options])
        out = self.inner.get_control(*args, **kwargs)
        if out is None or not self.regions:
            return out
        for key, tensors in out.items():
            out[key] = [None if c is None else c * self.scale_map(c.shape[-2], c.shape[-1], c.device, c.dtype)
                        for c in tensors]
        return out


def with_region_control(conditioning: list, regions: list[Region]) -> list:
    """Conditioning whose attached controls use the regions' own strengths inside their boxes."""
    if not any(r.strength is not None for r in regions):
        return conditioning
    out = []
    for cond, extras in conditioning:
        extras = dict(extras)
        control = extras.get("control")
        if control is not None:  # already scaled (Region Control Strength before Regional KSampler): rescale once
            inner = control.inner if isinstance(control, RegionScaledControl) else control
            extras["control"] = RegionScaledControl(inner, regions)
        out.append([cond, extras])
    return out
