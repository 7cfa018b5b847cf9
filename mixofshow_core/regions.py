"""Regions for regionally controllable sampling (spec §3): the versioned spec, official import, masks.

A region is a box in fractions of the image (``x, y, width, height``, the frontend's BoundingBox
convention) or a mask, with its own prompt, negative prompt and weight. The JSON value (version 1)::

    {"version": 1, "regions": [{"x": 0.05, "y": 0.1, "width": 0.4, "height": 0.85,
                                "prompt": "a <cat1> <cat2>", "negative": "", "weight": 1.0}]}

The same rules are implemented in ``web/js/region_box/value.js``; shared fixtures in
``tests/fixtures/region_spec`` keep both identical (error codes included).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from .errors import RegionSpecError

SPEC_VERSION = 1
EPS = 1e-6
_BOX_KEYS = ("x", "y", "width", "height")
_OPTIONAL = {"prompt": str, "negative": str, "weight": (int, float), "id": (str, int), "strength": (int, float)}


@dataclass
class Region:
    """One region. Box fields are fractions of the image; ``mask`` [H, W] in [0, 1] overrides the box."""

    x: float
    y: float
    width: float
    height: float
    prompt: str = ""
    negative: str = ""
    weight: float = 1.0
    strength: float | None = None  # per-region ControlNet strength (replaces the global one inside)
    mask: torch.Tensor | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "mask" and v is not None}
        return out


def _number(value, name: str, index: int) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RegionSpecError("bad_type", f"region {index}: '{name}' must be a finite number, found {value!r}.")
    return float(value)


def parse_spec(text: str | dict) -> list[Region]:
    """Validate a region value (JSON text or parsed) and return its regions.

    Raises RegionSpecError with ``code`` in: bad_json, bad_shape, unknown_version, missing_key,
    bad_type, unknown_key, zero_size, out_of_range, bad_weight.
    """
    if isinstance(text, str):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise RegionSpecError(
                "bad_json", f"Region value is not valid JSON ({err.msg} at character {err.pos}).") from err
    else:
        data = text
    if not isinstance(data, dict) or not isinstance(data.get("regions"), list):
        raise RegionSpecError("bad_shape", 'Region value must be an object {"version": 1, "regions": [...]}.')
    if data.get("version") != SPEC_VERSION:
        raise RegionSpecError(
            "unknown_version",
            f"Region value has version {data.get('version')!r}; this pack reads version {SPEC_VERSION}. "
            "Update the pack, or redraw the boxes.",
        )
    regions = []
    for i, item in enumerate(data["regions"]):
        if not isinstance(item, dict):
            raise RegionSpecError("bad_shape", f"region {i}: expected an object, found {type(item).__name__}.")
        missing = [k for k in _BOX_KEYS if k not in item]
        if missing:
            raise RegionSpecError("missing_key", f"region {i}: missing {missing}; a box needs x, y, width, height.")
        unknown = sorted(set(item) - set(_BOX_KEYS) - set(_OPTIONAL))
        if unknown:
            raise RegionSpecError("unknown_key", f"region {i}: unknown keys {unknown}; allowed are "
                                                 f"{list(_BOX_KEYS) + sorted(_OPTIONAL)}.")
        x, y, w, h = (_number(item[k], k, i) for k in _BOX_KEYS)
        for key, kind in _OPTIONAL.items():
            if key in item and (isinstance(item[key], bool) or not isinstance(item[key], kind)):
                raise RegionSpecError("bad_type", f"region {i}: '{key}' has the wrong type ({item[key]!r}).")
        if w <= 0 or h <= 0:
            raise RegionSpecError("zero_size", f"region {i}: width and height must be > 0, found {w} x {h}. "
                                               "Draw a larger box or delete it.")
        if x < -EPS or y < -EPS or x + w > 1 + EPS or y + h > 1 + EPS:
            raise RegionSpecError("out_of_range", f"region {i}: box ({x}, {y}, {w}, {h}) leaves the image; x, y, "
                                                  "width, height are fractions with x + width <= 1, y + height <= 1.")
        weight = float(item.get("weight", 1.0))
        if not weight > 0:
            raise RegionSpecError("bad_weight", f"region {i}: weight must be > 0, found {weight}.")
        strength = item.get("strength")
        regions.append(Region(x, y, w, h, item.get("prompt", ""), item.get("negative", ""), weight,
                              None if strength is None else float(strength)))
    return regions


def to_spec(regions: list[Region]) -> str:
    """The JSON value (version 1) of boxes; masks are not serialised."""
    return json.dumps({"version": SPEC_VERSION, "regions": [r.to_dict() for r in regions]})


_OFFICIAL = re.compile(
    r"^\s*\[?(?P<prompt>.*?)\]?\s*-\*-\s*\[?(?P<negative>.*?)\]?\s*-\*-\s*\[(?P<box>[^\]]*)\]\s*$", re.S)


def from_official(prompt_rewrite: str, image_height: int, image_width: int) -> list[Region]:
    """Import the official ``prompt_rewrite``: ``[prompt]-*-[negative]-*-[y1, x1, y2, x2]`` joined by ``|``,
    boxes in pixels of the output image (spec §3.1)."""
    regions = []
    for i, part in enumerate(p for p in prompt_rewrite.split("|") if p.strip()):
        m = _OFFICIAL.match(part)
        if m is None:
            raise RegionSpecError("bad_shape", f"official region {i} is not "
                                               f"'[prompt]-*-[negative]-*-[y1, x1, y2, x2]': {part.strip()[:80]!r}")
        try:
            y1, x1, y2, x2 = (float(v) for v in m["box"].split(","))
        except ValueError as err:
            raise RegionSpecError(
                "bad_type", f"official region {i}: box must be four numbers, found [{m['box']}].") from err
        spec = {"x": x1 / image_width, "y": y1 / image_height, "width": (x2 - x1) / image_width,
                "height": (y2 - y1) / image_height, "prompt": m["prompt"].strip(), "negative": m["negative"].strip()}
        regions.append(parse_spec({"version": SPEC_VERSION, "regions": [spec]})[0])
    return regions


def attention_grid(latent_h: int, latent_w: int, tokens: int) -> tuple[int, int]:
    """(h, w) of an attention layer with ``tokens`` positions for a latent of latent_h x latent_w.

    UNet downsamplers (stride 2, padding 1) give ceil(n / 2) per level, so non-multiples of 64 work.
    """
    h, w = latent_h, latent_w
    for _ in range(8):
        if h * w == tokens:
            return h, w
        h, w = (h + 1) // 2, (w + 1) // 2
    raise RegionSpecError("bad_shape", f"no downsampling level of a {latent_h}x{latent_w} latent has {tokens} tokens.")


def rasterize(region: Region, h: int, w: int) -> tuple[torch.Tensor, bool]:
    """Binary mask [h, w] of a region at one attention resolution, and whether it had to be rescued.

    Boxes shrink inward to whole cells (official ceil/floor); a mask is area-averaged and kept >= 0.5.
    A region that covers no whole cell keeps the cell holding its centre (never silently dropped).
    """
    if region.mask is not None:
        m = region.mask.float()[None, None]  # (1, 1, H, W)
        cells = F.interpolate(m, size=(h, w), mode="area")[0, 0] >= 0.5  # (h, w)
        if not cells.any():
            flat = int(F.interpolate(m, size=(h, w), mode="area")[0, 0].argmax())
            cells = torch.zeros(h, w, dtype=torch.bool)
            cells.view(-1)[flat] = True
            return cells, True
        return cells, False
    top, bottom = math.ceil(region.y * h - EPS), math.floor((region.y + region.height) * h + EPS)
    left, right = math.ceil(region.x * w - EPS), math.floor((region.x + region.width) * w + EPS)
    cells = torch.zeros(h, w, dtype=torch.bool)
    if bottom > top and right > left:
        cells[top:bottom, left:right] = True
        return cells, False
    cy = min(int((region.y + region.height / 2) * h), h - 1)
    cx = min(int((region.x + region.width / 2) * w), w - 1)
    cells[cy, cx] = True
    return cells, True
