"""Cross-attention layer order and the diffusers <-> ComfyUI (LDM) module names of a UNet.

The official order (spec §0.1) walks diffusers ``down_blocks``, then ``mid_block``, then ``up_blocks``; in
LDM/ComfyUI naming ``input_blocks``, ``middle_block``, ``output_blocks``. Layer-wise embeddings have one row
per *attention block* (a SpatialTransformer, diffusers ``attentions.<j>``) in that order: SD1.x has 16, each
with one transformer; SDXL has 11 holding 70 transformers (depth 2 or 10), which share their block's row
(docs/design.md gives the reasons). Nothing here is family-specific: the layout is described by which
input/output blocks are downsamplers and which hold transformers, as discovered from the model by the caller.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import KeyMappingError, first_of

_LDM_TRANSFORMER = re.compile(
    r"^(?:(?P<section>input_blocks|output_blocks)\.(?P<block>\d+)|middle_block)\.(?P<child>\d+)"
    r"\.transformer_blocks\.(?P<depth>\d+)$"
)
_DIFFUSERS_ATTENTION = re.compile(
    r"^(?:(?P<section>down_blocks|up_blocks)\.(?P<level>\d+)\.attentions\.(?P<j>\d+)"
    r"|mid_block\.attentions\.0)\.(?P<rest>.+)$"
)
_LDM_ROOTS = ("input_blocks.", "middle_block.", "output_blocks.", "time_embed.", "label_emb.", "out.")
_SECTION_ORDER = {"input_blocks": 0, "middle_block": 1, "output_blocks": 2}
_BLOCK_NAME = {"input_blocks": "input", "middle_block": "middle", "output_blocks": "output"}


@dataclass(frozen=True)
class CrossAttnSite:
    """One cross-attention layer.

    Attributes:
        index: transformer index in the official order (down -> mid -> up).
        row: its attention block's index in that order: the layer-wise embedding row it reads.
        block: ComfyUI block id as seen by attention patches, e.g. ("input", 1).
        depth: transformer index inside that block's SpatialTransformer (``block_index`` in ComfyUI).
        ldm_prefix: e.g. "input_blocks.1.1.transformer_blocks.0".
        diffusers_prefix: e.g. "down_blocks.0.attentions.0.transformer_blocks.0".
    """

    index: int
    row: int
    block: tuple[str, int]
    depth: int
    ldm_prefix: str
    diffusers_prefix: str


@dataclass(frozen=True)
class UNetLayout:
    """Where a UNet keeps its transformers.

    Attributes:
        res_blocks_per_level: resnet count per resolution level of the encoder (diffusers
            ``layers_per_block`` per down block), e.g. [2, 2, 2, 2] for SD1.5.
        transformer_modules: LDM module paths of every transformer block
            (``input_blocks.<n>.<child>.transformer_blocks.<k>``, ``middle_block.<child>...``), any order.
    """

    res_blocks_per_level: tuple[int, ...]
    transformer_modules: tuple[str, ...]

    def input_block_level(self, block: int) -> tuple[int, int]:
        """Map LDM input block n (n >= 1) to (level, resnet index j)."""
        n = 1
        for level, count in enumerate(self.res_blocks_per_level):
            if block < n + count:
                return level, block - n
            n += count + 1  # + the downsampler closing this level
        raise KeyMappingError(f"input_blocks.{block} is past the last level of {self.res_blocks_per_level}.")

    def output_block_level(self, block: int) -> tuple[int, int]:
        """Map LDM output block n to (diffusers up level, attention index j)."""
        per_level = [c + 1 for c in reversed(self.res_blocks_per_level)]
        n = 0
        for up_level, count in enumerate(per_level):
            if block < n + count:
                return up_level, block - n
            n += count
        raise KeyMappingError(f"output_blocks.{block} is past the last level of {self.res_blocks_per_level}.")

    def sites(self) -> list[CrossAttnSite]:
        """Every cross-attention layer in the official order, with both names."""
        parsed = []
        for path in self.transformer_modules:
            m = _LDM_TRANSFORMER.match(path)
            if m is None:
                raise KeyMappingError(
                    f"Transformer module path {path!r} is not of the form "
                    "'<input_blocks|output_blocks>.<n>.<child>.transformer_blocks.<k>' or "
                    "'middle_block.<child>.transformer_blocks.<k>'."
                )
            section = m["section"] or "middle_block"
            block = int(m["block"]) if m["block"] is not None else 0
            parsed.append((_SECTION_ORDER[section], block, int(m["depth"]), section, path))
        parsed.sort(key=lambda p: p[:3])
        rows: dict[str, int] = {}  # attention block (LDM container path) -> its row
        sites = []
        for index, (_, block, depth, section, path) in enumerate(parsed):
            row = rows.setdefault(path.rsplit(".transformer_blocks.", 1)[0], len(rows))
            if section == "input_blocks":
                level, j = self.input_block_level(block)
                prefix = f"down_blocks.{level}.attentions.{j}"
            elif section == "middle_block":
                prefix = "mid_block.attentions.0"
            else:
                level, j = self.output_block_level(block)
                prefix = f"up_blocks.{level}.attentions.{j}"
            sites.append(
                CrossAttnSite(
                    index=index,
                    row=row,
                    block=(_BLOCK_NAME[section], block),
                    depth=depth,
                    ldm_prefix=path,
                    diffusers_prefix=f"{prefix}.transformer_blocks.{depth}",
                )
            )
        return sites

    def ldm_name(self, module: str) -> str:
        """The LDM name of a UNet module named either way (standard-LoRA concepts keep LDM names, ED-LoRA
        concepts diffusers names)."""
        return module if is_ldm_name(module) else self.diffusers_to_ldm(module)

    def diffusers_to_ldm(self, module: str) -> str:
        """Map a diffusers UNet module inside an attention block to its LDM/ComfyUI name.

        ``down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k`` ->
        ``input_blocks.1.1.transformer_blocks.0.attn2.to_k``. Raises KeyMappingError for modules
        outside attention blocks (resnets, samplers) or blocks this UNet does not have.
        """
        m = _DIFFUSERS_ATTENTION.match(module)
        if m is None:
            raise KeyMappingError(f"{module!r} is not inside a diffusers attention block")
        containers = {site.ldm_prefix.rsplit(".transformer_blocks.", 1)[0] for site in self.sites()}
        if m["section"] is None:
            container = next((c for c in containers if c.startswith("middle_block.")), None)
        else:
            level, j = int(m["level"]), int(m["j"])
            if m["section"] == "down_blocks":
                block = 1 + sum(c + 1 for c in self.res_blocks_per_level[:level]) + j
                candidates = [c for c in containers if c.startswith(f"input_blocks.{block}.")]
            else:
                per_level = [c + 1 for c in reversed(self.res_blocks_per_level)]
                block = sum(per_level[:level]) + j
                candidates = [c for c in containers if c.startswith(f"output_blocks.{block}.")]
            container = candidates[0] if candidates else None
        if container is None:
            raise KeyMappingError(f"{module!r} names an attention block this UNet does not have")
        return f"{container}.{m['rest']}"


def is_ldm_name(module: str) -> bool:
    """True for an LDM/ComfyUI UNet module name (``input_blocks.1.1.proj_in``), False for a diffusers one."""
    return module.startswith(_LDM_ROOTS)


def row_count(sites: list[CrossAttnSite]) -> int:
    """L, the number of layer-wise embedding rows (attention blocks) of a UNet with these sites."""
    return 1 + max((s.row for s in sites), default=-1)


def map_unet_modules(layout: UNetLayout, modules: list[str]) -> dict[str, str]:
    """Map many diffusers UNet module names to LDM names; fail listing every one that does not map."""
    mapped: dict[str, str] = {}
    unmapped: list[str] = []
    for module in modules:
        try:
            mapped[module] = layout.diffusers_to_ldm(module)
        except KeyMappingError:
            unmapped.append(module)
    if unmapped:
        shown = first_of(unmapped, 12)
        raise KeyMappingError(
            f"{len(unmapped)} UNet LoRA module(s) have no counterpart in this model: {shown}. Supported: layers "
            "inside its attention blocks (attn1/attn2 projections, ff layers, proj_in/proj_out). Otherwise the "
            "concept was trained on a different UNet architecture; load it on its own base family."
        )
    return mapped


def sdxl_layout() -> UNetLayout:
    """The SDXL UNet's layout (base and its fine-tunes: 2 resnets per level, transformer depths 2 and 10)."""
    containers = [("input_blocks.4.1", 2), ("input_blocks.5.1", 2), ("input_blocks.7.1", 10), ("input_blocks.8.1", 10),
                  ("middle_block.1", 10)] + [(f"output_blocks.{b}.1", 10 if b < 3 else 2) for b in range(6)]
    return UNetLayout(res_blocks_per_level=(2, 2, 2),
                      transformer_modules=tuple(f"{c}.transformer_blocks.{k}" for c, depth in containers
                                                for k in range(depth)))
