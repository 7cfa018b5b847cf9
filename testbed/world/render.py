"""A synthetic visual world for the testbed: coloured shapes with patterns on plain or textured ground.

Everything is a deterministic function of its arguments (texture noise from a seeded generator), so a
caption always names exactly what was drawn and the scorer can be checked on ground truth.

An object is (shape, colour, pattern, accent, size, position). Base-world objects use ``accent =
"shade"`` (the pattern in a darker shade of the body colour) or no pattern; *novel concepts* pair a body
colour with a different accent hue (e.g. a red circle with yellow dots), which the base world never
shows.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64
SUPER = 4  # supersampling factor for anti-aliased edges
SHAPES = ("circle", "square", "triangle", "diamond")
COLOURS = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (50, 80, 225),
    "yellow": (235, 205, 30), "purple": (150, 55, 195), "orange": (240, 130, 25),
}
PATTERNS = ("plain", "striped", "dotted")
SIZES = {"small": 0.30, "large": 0.52}  # object extent as a fraction of the image side
POSITIONS = {"left": (0.27, 0.5), "right": (0.73, 0.5), "top": (0.5, 0.27), "bottom": (0.5, 0.73),
             "center": (0.5, 0.5)}
BACKGROUNDS = ("black", "grey", "texture")
SHADE = "shade"


@dataclass(frozen=True)
class Obj:
    shape: str
    colour: str
    pattern: str = "plain"
    accent: str = SHADE  # "shade" or a colour name (novel concepts)
    size: str = "large"
    position: str = "center"
    centre: tuple[float, float] | None = None  # (x, y) fractions; overrides ``position`` when drawing

    def phrase(self) -> str:
        """Caption words: 'a large red striped circle' (novel accents: 'with yellow stripes')."""
        if self.pattern == "plain":
            body = f"{self.colour} {self.shape}"
        elif self.accent == SHADE:
            body = f"{self.colour} {self.pattern} {self.shape}"
        else:
            body = f"{self.colour} {self.shape} with {self.accent} {'stripes' if self.pattern == 'striped' else 'dots'}"
        return f"a {self.size} {body}"


def accent_rgb(obj: Obj) -> tuple[int, int, int]:
    if obj.accent == SHADE:
        return tuple(int(c * 0.45) for c in COLOURS[obj.colour])
    return COLOURS[obj.accent]


def _shape_mask(obj: Obj, side: int) -> Image.Image:
    """Binary mask (mode 'L') of the object's silhouette at ``side`` pixels."""
    mask = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(mask)
    cx, cy = (v * side for v in (obj.centre or POSITIONS[obj.position]))
    r = SIZES[obj.size] * side / 2
    if obj.shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif obj.shape == "square":
        k = r * 0.9
        draw.rectangle([cx - k, cy - k, cx + k, cy + k], fill=255)
    elif obj.shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=255)
    elif obj.shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=255)
    else:
        raise ValueError(f"unknown shape {obj.shape!r}; known: {SHAPES}")
    return mask


def _pattern_mask(obj: Obj, side: int) -> np.ndarray:
    """Where the accent colour goes (bool [side, side])."""
    y, x = np.mgrid[0:side, 0:side] / side
    if obj.pattern == "striped":
        return ((x + y) * 5) % 1.0 < 0.4  # diagonal bands, 5 periods across; the body keeps most of the area
    if obj.pattern == "dotted":  # 4.5 periods across: coarse enough for an autoencoder with an 8x8 latent
        u, v = (x * 4.5) % 1.0 - 0.5, (y * 4.5) % 1.0 - 0.5
        return u * u + v * v < 0.3 ** 2
    return np.zeros((side, side), dtype=bool)


def background(kind: str, seed: int) -> np.ndarray:
    """Ground [SIZE, SIZE, 3] uint8: black, flat grey, or grey noise texture (all unsaturated)."""
    if kind == "black":
        return np.full((SIZE, SIZE, 3), 12, np.uint8)
    if kind == "grey":
        return np.full((SIZE, SIZE, 3), 105, np.uint8)
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(50, 150, size=(SIZE // 8, SIZE // 8))
    tex = np.asarray(Image.fromarray(coarse.astype(np.uint8)).resize((SIZE, SIZE), Image.BILINEAR), np.float32)
    tex = tex + rng.normal(0, 6, size=(SIZE, SIZE))
    return np.repeat(np.clip(tex, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def render(objects: list[Obj], ground: str = "black", seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    """Image [SIZE, SIZE, 3] uint8 and one soft mask [SIZE, SIZE] float32 in [0, 1] per object."""
    side = SIZE * SUPER
    canvas = np.asarray(Image.fromarray(background(ground, seed)).resize((side, side), Image.NEAREST),
                        np.float32)
    masks = []
    for obj in objects:
        silhouette = np.asarray(_shape_mask(obj, side), np.float32) / 255.0  # (S, S)
        colour = np.where(_pattern_mask(obj, side)[..., None], accent_rgb(obj), COLOURS[obj.colour])
        canvas = canvas * (1 - silhouette[..., None]) + colour * silhouette[..., None]
        masks.append(silhouette)
    image = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8)).resize((SIZE, SIZE), Image.BOX)
    small = [np.asarray(Image.fromarray((m * 255).astype(np.uint8)).resize((SIZE, SIZE), Image.BOX),
                        np.float32) / 255.0 for m in masks]
    return np.asarray(image), small


def caption(objects: list[Obj], ground: str, with_position: bool = True) -> str:
    parts = [o.phrase() + (f" on the {o.position}" if with_position and o.position != "center" else "")
             for o in objects]
    return " and ".join(parts) + f", {ground} background"


def moved(obj: Obj, **changes) -> Obj:
    return replace(obj, **changes)
