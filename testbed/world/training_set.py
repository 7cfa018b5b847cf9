"""A novel concept's photos, captions and masks as training tensors, made in memory (no files).

The values are exactly what ``mixofshow_core.training.dataset.from_folder`` reads back from the photos written
as PNG files (8-bit images and masks), so ``from_tensors`` of these or that folder give the same training set.
"""
from __future__ import annotations

import numpy as np
import torch

from .concepts import CONCEPTS, NovelConcept, concept_photos


def by_name(name: str) -> NovelConcept:
    for concept in CONCEPTS:
        if concept.name == name:
            return concept
    raise ValueError(f"no world concept named {name!r}; the world's concepts are {[c.name for c in CONCEPTS]}.")


def training_tensors(name: str, count: int = 6, seed: int = 0) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """``count`` photos of the concept ``name``: pixels (N, 64, 64, 3) in [0, 1], captions with the <TOK>
    placeholder, subject masks (N, 64, 64) in [0, 1]."""
    images, captions, masks = concept_photos(by_name(name), count, seed)
    pixels = torch.from_numpy(images.astype(np.float32) / 255.0)  # (N, 64, 64, 3), as read from a PNG
    eight_bit = (masks * 255).round().astype(np.uint8)  # masks as PNG files hold them
    return pixels, captions, torch.from_numpy(eight_bit.astype(np.float32) / 255.0)
