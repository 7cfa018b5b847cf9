"""A deterministic recogniser for the synthetic world: shape, colour, pattern, accent, size, position.

Rules, not a learned model, so it needs no training and its errors are inspectable:
* foreground = the largest 8-connected blob of saturated, clearly coloured pixels (every ground is grey or
  black; a generated image's dark ground carries faint colour noise and stray specks, which this drops);
* colour = the palette hue most foreground pixels are nearest to; accent = a second hue covering at
  least 8 % of the object, else "shade" when enough pixels are clearly darker than the body;
* pattern = how accent pixels continue: two steps along the stripe direction they stay accent for
  stripes, not for dots (object edges, blended with the ground, are left out);
* shape = fill of the bounding box (square ≈ 0.8+, circle ≈ 0.7, triangle/diamond ≈ 0.5) and, for the
  last two, where the widest row lies (bottom: triangle, middle: diamond);
* size and position from the bounding box.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .render import COLOURS, POSITIONS, SHADE, SIZE, SIZES, Obj


@dataclass(frozen=True)
class Recognition:
    found: bool
    shape: str = ""
    colour: str = ""
    pattern: str = ""
    accent: str = ""
    size: str = ""
    position: str = ""

    def identity(self) -> tuple[str, str, str, str]:
        return (self.shape, self.colour, self.pattern, self.accent if self.pattern != "plain" else "")


def _hsv(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rgb = image.astype(np.float32) / 255.0
    v = rgb.max(axis=2)
    c = v - rgb.min(axis=2)
    s = np.where(v > 0, c / np.maximum(v, 1e-6), 0)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    h = np.where(v == r, (g - b) / np.maximum(c, 1e-6) % 6, np.where(v == g, (b - r) / np.maximum(c, 1e-6) + 2,
                                                                       (r - g) / np.maximum(c, 1e-6) + 4)) * 60
    return h, s, v


_NAMES = list(COLOURS)
_HUES = np.array([_hsv(np.array([[rgb]], np.uint8))[0][0, 0] for rgb in COLOURS.values()])


def _nearest_hue(h: np.ndarray) -> np.ndarray:
    d = np.abs(h[..., None] - _HUES)
    return np.minimum(d, 360 - d).argmin(axis=-1)


def _eroded(mask: np.ndarray) -> np.ndarray:
    """Pixels whose 4 neighbours are also in ``mask`` (drops edges blended with the ground)."""
    inner = mask.copy()
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    inner[0, :] = inner[-1, :] = inner[:, 0] = inner[:, -1] = False
    return inner


def _largest_blob(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of ``mask`` (bool [H, W])."""
    labels = np.zeros(mask.shape, np.int32)
    best, best_size, current = 0, 0, 0
    height, width = mask.shape
    for y0, x0 in zip(*np.nonzero(mask)):
        if labels[y0, x0]:
            continue
        current += 1
        labels[y0, x0] = current
        stack, size = [(y0, x0)], 0
        while stack:
            y, x = stack.pop()
            size += 1
            for ny in (y - 1, y, y + 1):
                for nx in (x - 1, x, x + 1):
                    if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not labels[ny, nx]:
                        labels[ny, nx] = current
                        stack.append((ny, nx))
        if size > best_size:
            best, best_size = current, size
    return labels == best if best else mask.copy()


def _follows(accent: np.ndarray, dy: int, dx: int) -> float:
    """P(accent at (y+dy, x+dx) | accent at (y, x))."""
    a = accent[max(0, -dy): accent.shape[0] - max(0, dy), max(0, -dx): accent.shape[1] - max(0, dx)]
    b = accent[max(0, dy): accent.shape[0] + min(0, dy), max(0, dx): accent.shape[1] + min(0, dx)]
    return float((a & b).sum()) / max(float(a.sum()), 1.0)


def _pattern(accent: np.ndarray, body_area: int) -> str:
    """Stripes run along x + y = const: an accent pixel's neighbour two steps along the stripe is accent
    too, two steps across it is not. Dots look alike in both directions."""
    if accent.sum() < max(4, 0.06 * body_area):
        return "plain"
    along, across = _follows(accent, -2, 2), _follows(accent, 2, 2)
    return "striped" if along > 0.6 and along > across + 0.25 else "dotted"


def _filled(mask: np.ndarray) -> np.ndarray:
    """Close holes row by row (every shape is convex; blends between two hues can be unsaturated)."""
    out = np.zeros_like(mask)
    for y in np.nonzero(mask.any(axis=1))[0]:
        xs = np.nonzero(mask[y])[0]
        out[y, xs.min(): xs.max() + 1] = True
    return out


def _shape(mask: np.ndarray) -> str:
    mask = _filled(mask)
    ys, xs = np.nonzero(mask)
    h, w = np.ptp(ys) + 1, np.ptp(xs) + 1
    fill = mask.sum() / float(h * w)
    if fill > 0.86:
        return "square"
    if fill > 0.64:
        return "circle"
    widths = mask[ys.min(): ys.max() + 1].sum(axis=1)
    widest = float(np.argmax(widths)) / max(h - 1, 1)
    return "triangle" if widest > 0.7 else "diamond"


def recognise(image: np.ndarray, box: tuple[float, float, float, float] | None = None) -> Recognition:
    """Recognise the dominant object in ``image`` [H, W, 3] (uint8, or float in [0, 1]); ``box`` = (x, y,
    width, height) fractions limits the search to that region."""
    if image.dtype != np.uint8:
        image = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    height, width = image.shape[:2]
    if box is not None:
        x, y, bw, bh = box
        image = image[int(y * height): int(round((y + bh) * height)), int(x * width): int(round((x + bw) * width))]
    h, s, v = _hsv(image)
    chroma = s * v
    fg = _largest_blob((s > 0.4) & (v > 0.14) & (chroma > 0.12))
    if fg.sum() < 12:
        return Recognition(found=False)
    classes = _nearest_hue(h)
    counts = np.bincount(classes[fg], minlength=len(_NAMES))
    body = int(counts.argmax())
    area = int(fg.sum())
    second = int(np.argsort(counts)[-2])
    inner = _eroded(_filled(fg))  # holes from hue blends are closed first
    body_v = float(np.median(v[fg & (classes == body)]))
    if counts[second] >= 0.08 * area:
        accent_name, accent_mask = _NAMES[second], inner & (classes == second)
    else:
        accent_name, accent_mask = SHADE, inner & (classes == body) & (v < 0.72 * body_v)
    pattern = _pattern(accent_mask, area)
    ys, xs = np.nonzero(fg)
    extent = max(np.ptp(ys), np.ptp(xs)) + 1
    size = min(SIZES, key=lambda k: abs(SIZES[k] * SIZE * (height / SIZE) - extent))
    centre = ((xs.min() + xs.max()) / 2 / width, (ys.min() + ys.max()) / 2 / height)
    position = min(POSITIONS, key=lambda k: (POSITIONS[k][0] - centre[0]) ** 2 + (POSITIONS[k][1] - centre[1]) ** 2)
    return Recognition(found=True, shape=_shape(fg), colour=_NAMES[body], pattern=pattern,
                       accent=accent_name if pattern != "plain" else "", size=size, position=position)


def matches(recognition: Recognition, obj: Obj) -> bool:
    """The recognised identity (shape, colour, pattern, accent) is ``obj``'s."""
    want = (obj.shape, obj.colour, obj.pattern, obj.accent if obj.pattern != "plain" else "")
    return recognition.found and recognition.identity() == want
