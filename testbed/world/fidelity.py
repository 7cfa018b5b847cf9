"""Fidelity measures on the synthetic world: does an image show a concept, and does each box show its own?

Host-free: works on ``Recognition`` results of the scorer. Used by the demo's report and by
testbed/bench_fidelity.py (the paper's image-alignment and region-binding measures, with a
deterministic recogniser in place of CLIP).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .concepts import NovelConcept
from .recipe import LAYOUTS
from .render import SIZE, Obj, background, moved, render
from .scorer import Recognition

IDENTITY = ("shape", "colour", "pattern", "accent")
__all__ = ["LAYOUTS", "attribute_match", "binding", "box_scene", "colour_binding", "concept_caption", "expected",
           "identify", "identity_score", "markdown_table", "scene_caption"]


def expected(look: Obj) -> dict[str, str]:
    """What the scorer should read for ``look``: its attributes, with no accent on a plain object."""
    return {"shape": look.shape, "colour": look.colour, "pattern": look.pattern,
            "accent": look.accent if look.pattern != "plain" else "", "size": look.size, "position": look.position}


def attribute_match(recognition: Recognition, look: Obj) -> float:
    """Fraction of the identity attributes (shape, colour, pattern, accent) recognised as ``look``'s; 0 when
    no object was found."""
    if not recognition.found:
        return 0.0
    want = expected(look)
    return sum(getattr(recognition, f) == want[f] for f in IDENTITY) / len(IDENTITY)


def identify(recognition: Recognition, candidates: Sequence[NovelConcept], min_match: int = 3) -> str | None:
    """Name of the candidate concept the recognition matches best (at least ``min_match`` of the 4 identity
    attributes, and strictly better than every other candidate), else None."""
    scored = sorted(((attribute_match(recognition, c.look), c.name) for c in candidates), reverse=True)
    if not scored or scored[0][0] * len(IDENTITY) < min_match - 1e-9:
        return None
    if len(scored) > 1 and scored[1][0] == scored[0][0]:
        return None
    return scored[0][1]


def identity_score(recognitions: Sequence[Recognition], concept: NovelConcept) -> dict[str, float]:
    """``exact``: fraction of images showing the concept's exact identity; ``attributes``: mean fraction
    of its identity attributes recognised (the smoother measure, like CLIP image alignment)."""
    if not recognitions:
        raise ValueError("identity_score needs at least one recognised image; got none")
    matches = [attribute_match(r, concept.look) for r in recognitions]
    return {"exact": sum(m == 1.0 for m in matches) / len(matches), "attributes": sum(matches) / len(matches)}


def binding(per_box: Sequence[Sequence[Recognition]], placed: Sequence[NovelConcept],
            candidates: Sequence[NovelConcept]) -> dict[str, float]:
    """Region binding over images: ``per_box[b][i]`` is image i's recognition inside box b, which should
    show ``placed[b]``. ``right``: fraction of boxes whose identified concept is the right one; ``bleed``:
    fraction of boxes showing another concept of the same image; ``empty``: no concept identified."""
    if len(per_box) != len(placed):
        raise ValueError(f"binding needs one recognition list per placed concept; got {len(per_box)} lists for "
                         f"{len(placed)} concepts")
    got = [(identify(r, candidates), concept.name) for rs, concept in zip(per_box, placed) for r in rs]
    return _tally(got, {c.name for c in placed})


def colour_binding(per_box: Sequence[Sequence[Recognition]], colours: Sequence[str]) -> dict[str, float]:
    """Region binding of plain base-world objects, one colour per box (no concept learning involved):
    ``right``: the box's recognised colour is its own; ``bleed``: it is another box's colour."""
    if len(per_box) != len(colours):
        raise ValueError(f"colour_binding needs one recognition list per box colour; got {len(per_box)} lists for "
                         f"{len(colours)} colours")
    return _tally([(r.colour if r.found else None, colour) for rs, colour in zip(per_box, colours) for r in rs],
                  set(colours))


def _tally(got_want: Sequence[tuple[str | None, str]], scene: set[str]) -> dict[str, float]:
    """Shares of boxes: ``right`` (got == want), ``bleed`` (got another label of the scene), ``empty`` (None)."""
    if not got_want:
        raise ValueError("region binding needs at least one recognised box; got none")
    n = len(got_want)
    return {"right": sum(g == w for g, w in got_want) / n,
            "bleed": sum(g is not None and g != w and g in scene for g, w in got_want) / n,
            "empty": sum(g is None for g, _ in got_want) / n, "boxes": float(n)}


def box_scene(concepts: Sequence[NovelConcept], boxes: Sequence[tuple[float, float, float, float]],
              size: str = "small", ground: str = "black", seed: int = 0,
              canvas: tuple[int, int] | None = None) -> np.ndarray:
    """The ideal picture of a region prompt, scored after an autoencoder round trip: the most a sample of
    the model can reach. With no ``canvas``: each concept drawn at its box's centre in one image [64, 64, 3]
    uint8. With ``canvas`` = (width, height) on which every box is 64x64 px (recipe.BOX_CANVAS): each box is
    a 64-px picture of its concept at the centre, like one of its photos; the image is [height, width, 3] uint8."""
    if len(concepts) != len(boxes):
        raise ValueError(f"box_scene needs one box per concept; got {len(boxes)} boxes for {len(concepts)} concepts")
    if canvas is None:
        objects = [moved(c.look, size=size, centre=(x + w / 2, y + h / 2)) for c, (x, y, w, h) in zip(concepts, boxes)]
        return render(objects, ground, seed)[0]
    width, height = canvas
    tiles = (-(-height // SIZE), -(-width // SIZE), 1)
    image = np.tile(background(ground, seed), tiles)[:height, :width].copy()  # [height, width, 3]
    for concept, (x, y, w, h) in zip(concepts, boxes):
        left, top = round(x * width), round(y * height)
        px_w, px_h = round((x + w) * width) - left, round((y + h) * height) - top
        if (px_w, px_h) != (SIZE, SIZE):
            raise ValueError(f"box_scene on a canvas needs every box to be {SIZE}x{SIZE} px; box {(x, y, w, h)} on "
                             f"{width}x{height} is {px_w}x{px_h} px. Use the canvas recipe.BOX_CANVAS gives for "
                             "the layout.")
        image[top: top + SIZE, left: left + SIZE] = render([moved(concept.look, size=size, centre=(0.5, 0.5))],
                                                           ground, seed)[0]
    return image


def concept_caption(concept: NovelConcept, size: str = "large", ground: str = "black") -> str:
    """A prompt in the style of the concept's training captions: '<rubo1> <rubo2>, large, black background'."""
    return f"{' '.join(concept.words)}, {size}, {ground} background"


def scene_caption(concepts: Sequence[NovelConcept], ground: str = "black") -> str:
    """Global prompt naming every concept: '<rubo1> <rubo2> and <zeta1> <zeta2>, black background'."""
    return " and ".join(" ".join(c.words) for c in concepts) + f", {ground} background"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A small Markdown table; floats printed with 2 decimals."""
    def cell(v: object) -> str:
        return f"{v:.2f}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
