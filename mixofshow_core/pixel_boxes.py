"""Boxes in pixels, as ComfyUI's BOUNDING_BOX links carry them, turned into region boxes (fractions).

A BOUNDING_BOX value is one box ``{"x", "y", "width", "height"}`` in pixels of the image it was found in
(detectors add ``label`` and ``score``, unused here), a list of boxes, or a list of such lists, one per
image of a batch (frames). Region boxes are fractions of the image (``regions.Region``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import RegionSpecError

ORDERS = ("left to right", "top to bottom", "largest first", "as given")
_KEYS = ("x", "y", "width", "height")


@dataclass(frozen=True)
class PixelBox:
    x: float
    y: float
    width: float
    height: float


def _box(item, index: int) -> PixelBox:
    if not isinstance(item, dict) or any(k not in item for k in _KEYS):
        raise RegionSpecError("bad_box", f"bounding box {index}: expected a dict with x, y, width, height in "
                                         f"pixels, found {item!r:.80}.")
    values = []
    for k in _KEYS:
        v = item[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise RegionSpecError("bad_box", f"bounding box {index}: '{k}' must be a finite number, found {v!r}.")
        values.append(float(v))
    return PixelBox(*values)


def first_frame(value) -> list[PixelBox]:
    """The boxes of a BOUNDING_BOX value; for one list per batch image, the first image's."""
    if isinstance(value, dict):
        items = [value]
    elif isinstance(value, (list, tuple)):
        items = list(value[0]) if value and isinstance(value[0], (list, tuple)) else list(value)
    else:
        raise RegionSpecError("bad_box", f"expected bounding boxes (a box, a list of boxes, or one list per image), "
                                         f"found {type(value).__name__}.")
    return [_box(item, i) for i, item in enumerate(items)]


def ordered(boxes: list[PixelBox], order: str) -> list[PixelBox]:
    """Boxes sorted so that an index means the same box whatever order the detector gave them in."""
    if order == "left to right":
        return sorted(boxes, key=lambda b: (b.x + b.width / 2, b.y + b.height / 2))
    if order == "top to bottom":
        return sorted(boxes, key=lambda b: (b.y + b.height / 2, b.x + b.width / 2))
    if order == "largest first":
        return sorted(boxes, key=lambda b: -b.width * b.height)
    if order == "as given":
        return list(boxes)
    raise RegionSpecError("bad_order", f"order must be one of {list(ORDERS)}, found {order!r}.")


def to_fractions(box: PixelBox, image_width: int, image_height: int) -> dict:
    """``{"x", "y", "width", "height"}`` as fractions of the image, the box clipped to it."""
    if image_width <= 0 or image_height <= 0:
        raise RegionSpecError("bad_box", f"image size must be positive, found {image_width} x {image_height}.")
    left, right = max(box.x, 0.0), min(box.x + box.width, float(image_width))
    top, bottom = max(box.y, 0.0), min(box.y + box.height, float(image_height))
    if right <= left or bottom <= top:
        raise RegionSpecError(
            "out_of_range", f"bounding box ({box.x:g}, {box.y:g}, {box.width:g} x {box.height:g} px) has no area "
                            f"inside the {image_width} x {image_height} image. Give the size of the image the boxes "
                            "were found in (connect it as image, or set image_width and image_height).")
    return {"x": left / image_width, "y": top / image_height,
            "width": (right - left) / image_width, "height": (bottom - top) / image_height}


def pick(value, index: int, order: str, image_width: int, image_height: int) -> dict:
    """Box ``index`` (after ``order``) of a BOUNDING_BOX value, as fractions of the image."""
    boxes = ordered(first_frame(value), order)
    if not boxes:
        raise RegionSpecError("no_boxes", "the bounding boxes are empty: the detector found nothing. Lower its "
                                          "threshold, or draw the region with Region Prompt / Region Boxes.")
    if not 0 <= index < len(boxes):
        raise RegionSpecError("bad_index", f"box index {index} asked, the input holds {len(boxes)} box(es) "
                                           f"(index 0 to {len(boxes) - 1}, {order}).")
    return to_fractions(boxes[index], image_width, image_height)
