"""OpenPose-style pose images drawn from region boxes (mixofshow_core.pose_skeleton)."""
import numpy as np
import torch

from mixofshow_core import pose_skeleton as pose
from mixofshow_core.regions import Region

BOXES = [(0.06, 0.05, 0.3, 0.9), (0.38, 0.05, 0.3, 0.9)]


def test_one_standing_figure_in_each_box_on_black():
    image = pose.pose_image(BOXES, 768, 512)
    assert image.shape == (512, 768, 3) and image.dtype == np.uint8
    lit = image.max(axis=2) > 0
    outside = np.ones_like(lit)
    for x, y, w, h in BOXES:
        rows, cols = slice(int(y * 512), int((y + h) * 512)), slice(int(x * 768), int((x + w) * 768))
        assert lit[rows, cols].mean() > 0.02  # a figure, not a dot
        outside[rows, cols] = False
    assert not lit[outside].any()  # black background; the free canvas stays free
    assert not pose.pose_image([], 64, 32).any() and pose.pose_image([], 64, 32).shape == (32, 64, 3)


def test_keypoints_and_limbs_in_openpose_colours():
    image = pose.pose_image(BOXES[:1], 768, 512)
    points = pose.standing_keypoints(BOXES[0], 768, 512)
    assert points.shape == (18, 2)
    for i in (1, 4, 10, 13):  # neck, wrists, ankles: dots in the keypoint's own colour (not covered by limbs)
        x, y = np.round(points[i]).astype(int)
        assert tuple(image[y, x]) == pose.COLOURS[i]
    colours = {tuple(c) for c in image.reshape(-1, 3)}
    for colour in pose.COLOURS[:17]:  # every limb, at OpenPose's 60 % brightness
        assert tuple(int(c * pose.LIMB_BRIGHTNESS) for c in colour) in colours


def test_the_figure_faces_the_viewer_and_fits_its_box():
    x, y, w, h = 0.5, 0.25, 0.25, 0.5
    points = pose.standing_keypoints((x, y, w, h), 400, 400)
    name = {k: points[i] for i, k in enumerate(pose.KEYPOINTS)}
    assert name["right_shoulder"][0] < name["neck"][0] < name["left_shoulder"][0]  # its right on the image left
    assert name["right_eye"][1] < name["nose"][1] < name["neck"][1] < name["right_hip"][1] < name["right_knee"][1] \
        < name["right_ankle"][1]
    assert (points[:, 0] > x * 400).all() and (points[:, 0] < (x + w) * 400).all()
    assert (points[:, 1] > y * 400).all() and (points[:, 1] < (y + h) * 400).all()
    # a wide box: the figure keeps its proportions, centred across, feet near the bottom
    wide = pose.standing_keypoints((0.0, 0.0, 1.0, 0.5), 400, 400)
    assert abs(wide[1, 0] - 200) < 1e-6 and 175 < wide[:, 1].max() < 194  # ankles above the 3 % margin
    assert np.allclose(wide[:, 1].max() - wide[:, 1].min(), points[:, 1].max() - points[:, 1].min())


def test_a_mask_region_uses_the_box_around_its_mask():
    mask = torch.zeros(10, 20)
    mask[2:6, 10:15] = 1.0
    region = Region(0.0, 0.0, 1.0, 1.0, mask=mask)
    assert pose.box_of(region) == (0.5, 0.2, 0.25, 0.4)
    assert pose.box_of(Region(0.1, 0.2, 0.3, 0.4, mask=torch.zeros(4, 4))) == (0.1, 0.2, 0.3, 0.4)
    assert pose.box_of(Region(0.1, 0.2, 0.3, 0.4)) == (0.1, 0.2, 0.3, 0.4)
