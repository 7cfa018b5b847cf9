"""Caption handling of the training data pipeline (spec §1.8): placeholder, shuffle, templates."""
from __future__ import annotations

import re

import torch

PLACEHOLDER = "<TOK>"

# Official 'human' set (EnhanceText, used by every main config, anime included).
HUMAN_TEMPLATES = (
    "a photo of a {}", "a photo of one {}", "a photo of the {}", "the photo of a {}", "a rendering of a {}",
    "a rendition of the {}", "a rendition of a {}", "a cropped photo of the {}", "a cropped photo of a {}",
    "a bad photo of the {}", "a bad photo of a {}", "a photo of a weird {}", "a weird photo of a {}",
    "a bright photo of the {}", "a bright photo of the {}", "a good photo of the {}", "a good photo of a {}",
    "a photo of a nice {}", "a photo of a cool {}",
)
# The textual-inversion object and style prompts the official 'object' / 'style' sets follow.
OBJECT_TEMPLATES = (
    "a photo of a {}", "a rendering of a {}", "a cropped photo of the {}", "the photo of a {}",
    "a photo of a clean {}", "a photo of a dirty {}", "a dark photo of the {}", "a photo of my {}",
    "a photo of the cool {}", "a close-up photo of a {}", "a bright photo of the {}", "a cropped photo of a {}",
    "a photo of the {}", "a good photo of the {}", "a photo of one {}", "a close-up photo of the {}",
    "a rendition of the {}", "a photo of the clean {}", "a rendition of a {}", "a photo of a nice {}",
    "a good photo of a {}", "a photo of the nice {}", "a photo of the small {}", "a photo of the weird {}",
    "a photo of the large {}", "a photo of a cool {}", "a photo of a small {}",
)
STYLE_TEMPLATES = tuple(
    f"{lead} in the style of {{}}" for lead in (
        "a painting", "a rendering", "a cropped painting", "the painting", "a clean painting", "a dirty painting",
        "a dark painting", "a picture", "a cool painting", "a close-up painting", "a bright painting",
        "a cropped painting", "a good painting", "a close-up painting", "a rendition", "a nice painting",
        "a small painting", "a weird painting", "a large painting",
    )
)
TEMPLATES = {"human": HUMAN_TEMPLATES, "object": OBJECT_TEMPLATES, "style": STYLE_TEMPLATES, "none": ("{}",)}
_SPACES = re.compile(r"\s+")


def bind_placeholder(caption: str, words: list[str], placeholder: str = PLACEHOLDER) -> str:
    """Replace the placeholder by the concept words ("<TOK>" -> "<potter1> <potter2>"); collapse spaces."""
    return _SPACES.sub(" ", caption.replace(placeholder, " ".join(words))).strip()


def shuffle_caption(caption: str, generator: torch.Generator, keep: int = 1) -> str:
    """Shuffle the comma-separated parts after the first ``keep`` (official ShuffleCaption)."""
    parts = [p.strip() for p in caption.split(",")]
    head, tail = parts[:keep], parts[keep:]
    order = torch.randperm(len(tail), generator=generator).tolist() if tail else []
    return ", ".join(head + [tail[i] for i in order])


def apply_template(caption: str, template_set: str, generator: torch.Generator) -> str:
    """Wrap the whole caption in a random template of the set (official EnhanceText)."""
    templates = TEMPLATES[template_set]
    pick = int(torch.randint(len(templates), (1,), generator=generator))
    return templates[pick].format(caption)


def all_variants(caption: str, template_set: str) -> list[str]:
    """Every template applied to ``caption`` (used to check token collisions up front)."""
    return [t.format(caption) for t in TEMPLATES[template_set]]
