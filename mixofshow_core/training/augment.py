"""Image and mask preparation for training (spec §1.8, HumanResizeCropFinalV3 generalised).

Every function takes an image [3, H, W] in [0, 1] and a subject mask [1, H, W] (or None) and
returns (image [3, R, R] in [-1, 1], subject mask [1, R, R] or None, valid-area mask [1, R, R]).
The valid-area mask is 1 where the picture lies on the canvas and 0 on the black padding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear (antialiased) resize of [C, H, W]."""
    return F.interpolate(x.unsqueeze(0), size=(height, width), mode="bilinear", antialias=True,
                         align_corners=False).squeeze(0)


def _short_side_to(x: torch.Tensor, side: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    scale = side / min(h, w)
    return _resize(x, max(side, round(h * scale)), max(side, round(w * scale)))


def _randint(low: int, high: int, generator: torch.Generator) -> int:
    """Uniform integer in [low, high] inclusive."""
    return low + int(torch.randint(high - low + 1, (1,), generator=generator)) if high > low else low


def paper_crop(image, mask, size: int, generator: torch.Generator, crop_p: float = 0.5):
    """Resize the short side to ``size``; with probability ``crop_p`` crop (portraits from the top,
    keeping the head; others a random square); fit the long side to ``size`` and paste at a random
    offset into a black square canvas."""
    joined = image if mask is None else torch.cat([image, mask], dim=0)  # (3 or 4, H, W)
    joined = _short_side_to(joined, size)
    h, w = joined.shape[-2:]
    if float(torch.rand((), generator=generator)) < crop_p:
        if h > w:  # portrait: keep full width, crop height from the top
            joined = joined[:, : w + _randint(0, h - w, generator)]
        else:
            top, left = _randint(0, h - size, generator), _randint(0, w - size, generator)
            joined = joined[:, top: top + size, left: left + size]
    h, w = joined.shape[-2:]
    scale = size / max(h, w)
    nh, nw = min(size, max(1, round(h * scale))), min(size, max(1, round(w * scale)))
    joined = _resize(joined, nh, nw)
    top, left = _randint(0, size - nh, generator), _randint(0, size - nw, generator)
    return _paste(joined, size, top, left, mask is not None)


def center_crop(image, mask, size: int, generator: torch.Generator | None = None):
    """Resize the short side to ``size`` and cut the central square (no padding)."""
    joined = image if mask is None else torch.cat([image, mask], dim=0)
    joined = _short_side_to(joined, size)
    h, w = joined.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return _paste(joined[:, top: top + size, left: left + size], size, 0, 0, mask is not None)


def pad_fit(image, mask, size: int, generator: torch.Generator | None = None):
    """Fit the whole image inside the square (long side = ``size``), centred on a black canvas."""
    joined = image if mask is None else torch.cat([image, mask], dim=0)
    h, w = joined.shape[-2:]
    scale = size / max(h, w)
    nh, nw = min(size, max(1, round(h * scale))), min(size, max(1, round(w * scale)))
    return _paste(_resize(joined, nh, nw), size, (size - nh) // 2, (size - nw) // 2, mask is not None)


def _paste(joined: torch.Tensor, size: int, top: int, left: int, has_mask: bool):
    channels, h, w = joined.shape
    canvas = torch.zeros(channels, size, size)  # (C, R, R)
    canvas[:, top: top + h, left: left + w] = joined
    valid = torch.zeros(1, size, size)  # (1, R, R)
    valid[:, top: top + h, left: left + w] = 1.0
    image = canvas[:3] * 2.0 - 1.0  # padding becomes -1 (black) like the official zero canvas after Normalize
    image[:, valid[0] == 0] = -1.0
    subject = canvas[3:4].clamp(0, 1) if has_mask else None
    return image, subject, valid


CROPS = {"paper": paper_crop, "center": center_crop, "pad": pad_fit}


def to_latent_grid(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Downsample masks [B, 1, R, R] to the latent grid with bilinear filtering (the official code's
    effective behaviour; edge values lie between 0 and 1)."""
    return F.interpolate(mask, size=(height, width), mode="bilinear", align_corners=False)
