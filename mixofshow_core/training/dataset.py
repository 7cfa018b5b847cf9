"""A concept's training images with captions and optional subject masks (spec §1.8).

Randomness is a pure function of (seed, step): ``step_generator`` gives every step its own
generator, and the image order of each pass is a seeded permutation. A run resumed at step s
therefore draws exactly what an uninterrupted run draws at step s.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import MixOfShowError
from . import augment, captions

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class DatasetError(MixOfShowError):
    """Training images, captions or masks are missing or inconsistent."""


@dataclass
class Sample:
    image: torch.Tensor  # (3, H, W) in [0, 1]
    caption: str  # with the placeholder, e.g. "<TOK>, smiling"
    mask: torch.Tensor | None  # (1, H, W) in [0, 1], subject = 1


@dataclass
class Batch:
    images: torch.Tensor  # (B, 3, R, R) in [-1, 1]
    loss_masks: torch.Tensor  # (B, 1, R, R): subject mask where present (and wanted), else valid area
    prompts: list[str]  # captions with the concept words bound and templates applied


def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    """Generator for one step's draws; ``stream`` separates independent uses within a step."""
    digest = hashlib.sha256(f"mixofshow-train:{seed}:{step}:{stream}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


class ConceptDataset:
    def __init__(self, samples: list[Sample], placeholder: str = captions.PLACEHOLDER):
        if not samples:
            raise DatasetError("The training set is empty; give at least one image (5-20 is typical).")
        self.samples = samples
        self.placeholder = placeholder
        missing = [i for i, s in enumerate(samples) if placeholder not in s.caption]
        if missing:
            raise DatasetError(
                f"Caption(s) of image(s) {missing} do not contain the placeholder {placeholder!r}, e.g. "
                f"{samples[missing[0]].caption!r}. Every caption must name the concept, e.g. '{placeholder}, smiling'."
            )

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def has_masks(self) -> bool:
        return any(s.mask is not None for s in self.samples)

    def fingerprint(self) -> str:
        """sha256 over images, masks and captions: a resumed run must see the same data."""
        h = hashlib.sha256()
        for s in self.samples:
            h.update(s.caption.encode())
            h.update(s.image.float().contiguous().numpy().tobytes())
            if s.mask is not None:
                h.update(s.mask.float().contiguous().numpy().tobytes())
        return h.hexdigest()[:32]

    def indices(self, step: int, batch_size: int, seed: int) -> list[int]:
        """Images of ``step``: consecutive positions in seeded per-pass permutations."""
        n, out = len(self.samples), []
        for position in range(step * batch_size, (step + 1) * batch_size):
            epoch, offset = divmod(position, n)
            perm = torch.randperm(n, generator=step_generator(seed, epoch, stream=7))
            out.append(int(perm[offset]))
        return out

    def batch(self, step: int, config, words: list[str]) -> Batch:
        """The augmented batch of ``step`` (config: a TrainConfig)."""
        images, masks, prompts = [], [], []
        for j, index in enumerate(self.indices(step, config.batch_size, config.seed)):
            g = step_generator(config.seed, step, stream=100 + j)
            sample = self.samples[index]
            image, subject, valid = augment.CROPS[config.crop](sample.image, sample.mask, config.resolution, g)
            images.append(image)
            masks.append(subject if (config.mask_loss and subject is not None) else valid)
            text = captions.shuffle_caption(sample.caption, g) if config.shuffle_captions else sample.caption
            text = captions.bind_placeholder(text, words, self.placeholder)
            text = captions.apply_template(text, config.templates, g)
            prompts.append(text)
        return Batch(images=torch.stack(images), loss_masks=torch.stack(masks), prompts=prompts)

    def possible_prompts(self, words: list[str], template_set: str) -> list[str]:
        """Every caption in every template (shuffling keeps the words): for token checks before training."""
        bound = [captions.bind_placeholder(s.caption, words, self.placeholder) for s in self.samples]
        return [v for caption in bound for v in captions.all_variants(caption, template_set)]


def from_tensors(images: torch.Tensor, caption_lines: list[str], masks: torch.Tensor | None = None,
                 placeholder: str = captions.PLACEHOLDER) -> ConceptDataset:
    """Build from a ComfyUI IMAGE batch [N, H, W, 3], one caption per image and MASK [N, H, W] or None.

    One caption is repeated for every image; an empty caption list means the bare placeholder.
    """
    count = images.shape[0]
    lines = [c.strip() for c in caption_lines if c.strip()] or [placeholder]
    if len(lines) == 1:
        lines = lines * count
    if len(lines) != count:
        raise DatasetError(
            f"Got {count} images but {len(lines)} caption lines; give one caption per line in image order, or one "
            "caption for all."
        )
    if masks is not None:
        if masks.dim() == 2:
            masks = masks.unsqueeze(0)
        if masks.shape[0] == 1 and count > 1:
            masks = masks.expand(count, -1, -1)
        if masks.shape[0] != count or tuple(masks.shape[1:]) != tuple(images.shape[1:3]):
            raise DatasetError(
                f"Masks have shape {list(masks.shape)} but the images are {list(images.shape[:3])} (N, H, W); give one "
                "mask per image at the image size."
            )
    samples = [
        Sample(image=images[i].permute(2, 0, 1).float().clamp(0, 1).clone(),  # (3, H, W)
               caption=lines[i],
               mask=None if masks is None else masks[i].unsqueeze(0).float().clamp(0, 1).clone())  # (1, H, W)
        for i in range(count)
    ]
    return ConceptDataset(samples, placeholder)


def _read_image(path: Path, mode: str) -> torch.Tensor:
    try:
        with Image.open(path) as im:
            array = np.asarray(im.convert(mode), dtype=np.float32) / 255.0
    except OSError as err:
        raise DatasetError(f"Cannot read image {path}: {err}. Remove or replace the file.") from err
    tensor = torch.from_numpy(array.copy())
    return tensor.permute(2, 0, 1) if tensor.dim() == 3 else tensor.unsqueeze(0)  # (C, H, W)


def from_folder(folder: str | Path, default_caption: str = captions.PLACEHOLDER,
                placeholder: str = captions.PLACEHOLDER) -> ConceptDataset:
    """Images in ``folder``; caption = first line of ``name.txt`` (beside the image or in ``captions/``),
    else ``default_caption``; subject mask = ``masks/name.png`` (grayscale, white = subject) if present."""
    root = Path(folder)
    if not root.is_dir():
        raise DatasetError(f"Training folder {root} does not exist; put the images there or fix the path.")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DatasetError(f"No images ({', '.join(IMAGE_SUFFIXES)}) in {root}.")
    samples = []
    for path in files:
        caption = default_caption
        for text in (root / f"{path.stem}.txt", root / "captions" / f"{path.stem}.txt"):
            if text.is_file():
                first = text.read_text(encoding="utf-8").splitlines()
                caption = first[0].strip() if first and first[0].strip() else default_caption
                break
        image = _read_image(path, "RGB")
        mask_path = root / "masks" / f"{path.stem}.png"
        mask = _read_image(mask_path, "L") if mask_path.is_file() else None
        if mask is not None and mask.shape[1:] != image.shape[1:]:
            raise DatasetError(
                f"Mask {mask_path.name} is {list(mask.shape[1:])} but its image is {list(image.shape[1:])}; masks must "
                "have the image's size."
            )
        samples.append(Sample(image=image, caption=caption, mask=mask))
    return ConceptDataset(samples, placeholder)
