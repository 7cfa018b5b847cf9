"""Base-world samples and the novel concepts (a user's 'characters') of the synthetic world.

A novel concept is a shape whose body colour carries a pattern in a *different* hue (the base world
only shows patterns in a darker shade of the body colour), so the base model has never seen it. Each
concept comes with a handful of 'photos' (sizes, positions and grounds vary), captions with the
``<TOK>`` placeholder and subject masks, like a user's training set.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .render import BACKGROUNDS, COLOURS, PATTERNS, POSITIONS, SHADE, SHAPES, SIZES, Obj, caption, moved, render


@dataclass(frozen=True)
class NovelConcept:
    name: str  # e.g. "rubo"
    look: Obj  # shape, colour, pattern, accent (size and position vary per photo)
    class_word: str = "toy"

    @property
    def words(self) -> list[str]:
        return [f"<{self.name}1>", f"<{self.name}2>"]


CONCEPTS = (
    NovelConcept("rubo", Obj("circle", "red", "dotted", "yellow")),
    NovelConcept("zeta", Obj("square", "blue", "striped", "orange")),
    NovelConcept("kiva", Obj("triangle", "green", "dotted", "purple")),
    NovelConcept("mopa", Obj("diamond", "yellow", "striped", "blue")),
    NovelConcept("tuli", Obj("circle", "purple", "striped", "green")),
    NovelConcept("dexo", Obj("square", "orange", "dotted", "blue")),
    NovelConcept("nira", Obj("triangle", "blue", "striped", "yellow")),
    NovelConcept("quen", Obj("diamond", "green", "dotted", "red")),
)


def look_alikes(concept: NovelConcept) -> list[Obj]:
    """Near misses: other accent hues on the same body, and the same colouring on other shapes."""
    look = concept.look
    others = [moved(look, accent=c) for c in COLOURS if c not in (look.colour, look.accent)][:2]
    others.append(moved(look, accent=SHADE))
    others += [moved(look, shape=s) for s in SHAPES if s != look.shape][:2]
    return others


def concept_photos(concept: NovelConcept, count: int = 6, seed: int = 0):
    """``count`` training photos: (images [N, 64, 64, 3] uint8, captions with <TOK>, masks [N, 64, 64])."""
    rng = np.random.default_rng(seed * 1000 + sum(map(ord, concept.name)))
    images, captions, masks = [], [], []
    for i in range(count):
        size = list(SIZES)[i % len(SIZES)]
        position = list(POSITIONS)[int(rng.integers(len(POSITIONS)))]
        ground = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
        obj = moved(concept.look, size=size, position=position)
        image, (mask,) = render([obj], ground, seed=int(rng.integers(1 << 30)))
        where = "" if position == "center" else f", on the {position}"
        images.append(image)
        captions.append(f"<TOK>, {size}{where}, {ground} background")
        masks.append(mask)
    return np.stack(images), captions, np.stack(masks)


def base_sample(rng: np.random.Generator, pair_fraction: float = 0.5) -> tuple[list[Obj], str]:
    """One base-world scene: one object, or two small ones at distinct positions (with probability
    ``pair_fraction``); patterns only in shade."""
    count = 2 if rng.random() < pair_fraction else 1
    places = rng.permutation(list(POSITIONS))[:count] if count > 1 else [list(POSITIONS)[int(rng.integers(5))]]
    objects = [Obj(shape=str(rng.choice(SHAPES)), colour=str(rng.choice(list(COLOURS))),
                   pattern=str(rng.choice(PATTERNS)), accent=SHADE,
                   size="small" if count > 1 else str(rng.choice(list(SIZES))), position=str(p)) for p in places]
    return objects, str(rng.choice(BACKGROUNDS))


def autoencoder_dataset(count: int, seed: int = 0, pair_fraction: float = 0.5) -> np.ndarray:
    """Images [N, 64, 64, 3] uint8 for the autoencoder: base-world scenes where half the patterned objects
    carry a random second hue. An autoencoder (like SD's) must reconstruct any image of the world; only
    the text-to-image part (UNet, text encoder) is kept from ever seeing a two-hue object."""
    rng = np.random.default_rng(seed + 104729)
    images = []
    for i in range(count):
        objects, ground = base_sample(rng, pair_fraction)
        objects = [moved(o, accent=str(rng.choice([c for c in COLOURS if c != o.colour])))
                   if o.pattern != "plain" and rng.random() < 0.5 else o for o in objects]
        images.append(render(objects, ground, seed=seed * 7919 + i)[0])
    return np.stack(images)


def base_dataset(count: int, seed: int = 0, pair_fraction: float = 0.5):
    """(images [N, 64, 64, 3] uint8, captions) of the base world."""
    rng = np.random.default_rng(seed)
    images, captions = [], []
    for i in range(count):
        objects, ground = base_sample(rng, pair_fraction)
        image, _ = render(objects, ground, seed=seed * 7919 + i)
        images.append(image)
        captions.append(caption(objects, ground))
    return np.stack(images), captions
