"""OpenPose-style pose images: a standing stick figure drawn inside each box, for an openpose ControlNet.

The drawing follows what OpenPose-trained ControlNets were trained on (the ``draw_bodypose`` convention of
the OpenPose preprocessors): COCO-18 keypoints, 17 limbs drawn as filled ellipses in the standard limb
colours at 60 % brightness, each keypoint a dot in its own colour, on a black background. A figure faces
the viewer, so its right side is on the image's left. Boxes are fractions of the image (``regions.Region``).
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from .regions import Region

# COCO-18 keypoints in OpenPose order.
KEYPOINTS = ("nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
             "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
             "right_eye", "left_eye", "right_ear", "left_ear")
# The 17 drawn limbs (OpenPose's limbSeq, 0-based), each drawn in COLOURS[i].
LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
         (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))
# OpenPose's colours, one per keypoint and per limb (RGB).
COLOURS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
           (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
           (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))
LIMB_BRIGHTNESS = 0.6
# A person standing, facing the viewer, arms slightly away from the body: (x from the body's centre line,
# y from the top of the head), both in figure heights (head top 0, soles 1). Roughly 7.5 heads tall.
STANDING = (
    (0.0, 0.085),  # nose
    (0.0, 0.175),  # neck
    (-0.105, 0.185), (-0.14, 0.335), (-0.16, 0.475),  # right shoulder, elbow, wrist (image left)
    (0.105, 0.185), (0.14, 0.335), (0.16, 0.475),  # left shoulder, elbow, wrist
    (-0.06, 0.50), (-0.065, 0.715), (-0.07, 0.94),  # right hip, knee, ankle
    (0.06, 0.50), (0.065, 0.715), (0.07, 0.94),  # left hip, knee, ankle
    (-0.024, 0.062), (0.024, 0.062),  # right eye, left eye
    (-0.052, 0.072), (0.052, 0.072),  # right ear, left ear
)
HALF_WIDTH = 0.2  # the figure's half width in figure heights, with room for the wrists' dots
MARGIN = 0.03  # free space kept between the figure and its box edges, as a fraction of the box


def box_of(region: Region) -> tuple[float, float, float, float]:
    """A region's box ``(x, y, width, height)`` in fractions of the image; for a mask region, the box around
    the mask (>= 0.5), or its own box when the mask is empty."""
    if region.mask is None:
        return region.x, region.y, region.width, region.height
    mask = np.asarray(region.mask.float().cpu()) >= 0.5  # (H, W)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return region.x, region.y, region.width, region.height
    h, w = mask.shape
    return cols[0] / w, rows[0] / h, (cols[-1] + 1 - cols[0]) / w, (rows[-1] + 1 - rows[0]) / h


def figure_height(box: tuple[float, float, float, float], width: int, height: int) -> float:
    """Height in pixels of the largest standing figure that fits in ``box`` (fractions of the image)."""
    w, h = box[2] * width, box[3] * height
    return min(h * (1 - 2 * MARGIN), w * (1 - 2 * MARGIN) / (2 * HALF_WIDTH))


def standing_keypoints(box: tuple[float, float, float, float], width: int, height: int) -> np.ndarray:
    """Pixel positions [18, 2] (x, y) of a standing figure as large as fits in ``box`` (fractions of a
    ``width`` x ``height`` image), centred across the box, feet on its bottom margin."""
    x, y, w, h = box[0] * width, box[1] * height, box[2] * width, box[3] * height
    size = figure_height(box, width, height)
    centre, top = x + w / 2, y + h * (1 - MARGIN) - size
    template = np.asarray(STANDING, dtype=np.float64)  # (18, 2)
    return np.stack([centre + template[:, 0] * size, top + template[:, 1] * size], axis=1)


def _limb_polygon(a: np.ndarray, b: np.ndarray, half_thickness: float, points: int = 32) -> list[tuple]:
    """A filled ellipse from ``a`` to ``b`` (what OpenPose drawing does with ellipse2Poly)."""
    mid, delta = (a + b) / 2, b - a
    length, angle = float(np.hypot(*delta)) / 2, math.atan2(delta[1], delta[0])
    t = np.linspace(0, 2 * math.pi, points, endpoint=False)
    ex, ey = length * np.cos(t), half_thickness * np.sin(t)
    cos, sin = math.cos(angle), math.sin(angle)
    return [(mid[0] + px * cos - py * sin, mid[1] + px * sin + py * cos) for px, py in zip(ex, ey)]


def draw_figure(draw: ImageDraw.ImageDraw, keypoints: np.ndarray, figure_height: float) -> None:
    """Draw one figure's limbs, then its keypoints, onto ``draw``."""
    stick = max(1.0, figure_height / 110)  # OpenPose's 4 px sticks on a ~450 px tall person
    for (i, j), colour in zip(LIMBS, COLOURS):
        dim = tuple(int(c * LIMB_BRIGHTNESS) for c in colour)
        draw.polygon(_limb_polygon(keypoints[i], keypoints[j], stick), fill=dim)
    for (px, py), colour in zip(keypoints, COLOURS):
        draw.ellipse((px - stick, py - stick, px + stick, py + stick), fill=colour)


def pose_image(boxes: list[tuple[float, float, float, float]], width: int, height: int) -> np.ndarray:
    """An RGB image [height, width, 3] uint8: black, with a standing OpenPose figure in each box."""
    if width < 1 or height < 1:
        raise ValueError(f"pose image size must be positive, found {width} x {height}.")
    image = Image.new("RGB", (width, height), (0, 0, 0))
    draw = ImageDraw.Draw(image)
    for box in boxes:
        draw_figure(draw, standing_keypoints(box, width, height), figure_height(box, width, height))
    return np.asarray(image)
