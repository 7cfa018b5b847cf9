"""Loss plot drawn with Pillow (no plotting library needed)."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw


def smooth(values: list[float], weight: float = 0.9) -> list[float]:
    """Exponential moving average with bias correction (TensorBoard-style)."""
    out, avg = [], 0.0
    for i, v in enumerate(values):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight ** (i + 1)))
    return out


def loss_plot(losses: list[float], width: int = 640, height: int = 360, title: str = "training loss",
              marks: list[tuple[int, str]] | None = None) -> torch.Tensor:
    """Raw loss (grey) and its moving average (blue) against the step; returns IMAGE [1, H, W, 3] in [0, 1].

    ``marks`` draws labelled vertical lines, e.g. [(120, "embedding frozen")].
    """
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    left, right, top, bottom = 60, width - 20, 30, height - 40
    draw.rectangle([left, top, right, bottom], outline=(0, 0, 0))
    draw.text((left, 8), f"{title}  ({len(losses)} steps)", fill=(0, 0, 0))
    if losses:
        values = np.asarray(losses, dtype=np.float64)
        low, high = float(np.min(values)), float(np.max(values))
        if high - low < 1e-12:
            low, high = low - 0.5, high + 0.5
        span = max(len(values) - 1, 1)

        def xy(i: int, v: float) -> tuple[float, float]:
            return (left + (right - left) * i / span, bottom - (bottom - top) * (v - low) / (high - low))

        for series, colour in ((list(values), (180, 180, 180)), (smooth(list(values)), (30, 90, 200))):
            points = [xy(i, v) for i, v in enumerate(series)]
            if len(points) > 1:
                draw.line(points, fill=colour, width=2)
            else:
                x, y = points[0]
                draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
        for step, label in marks or []:
            x = xy(min(step, span), low)[0]
            draw.line([(x, top), (x, bottom)], fill=(200, 60, 60))
            draw.text((x + 3, top + 3), label, fill=(200, 60, 60))
        draw.text((4, top), f"{high:.4g}", fill=(0, 0, 0))
        draw.text((4, bottom - 10), f"{low:.4g}", fill=(0, 0, 0))
        draw.text((left, bottom + 8), "0", fill=(0, 0, 0))
        draw.text((right - 40, bottom + 8), str(len(values)), fill=(0, 0, 0))
    array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(array.copy()).unsqueeze(0)  # (1, H, W, 3)
