"""A pose image made from region boxes (Mix-of-Show/regions): no pose file needed for an openpose ControlNet."""
from __future__ import annotations

import torch

from ...mixofshow_core import pose_skeleton

CATEGORY = "Mix-of-Show/regions"


class RegionPoseSkeleton:
    DESCRIPTION = (
        "A pose image for an openpose ControlNet, made from your boxes: a standing OpenPose figure (COCO-18 "
        "keypoints, the usual limb colours, black background) in each region box, at width x height. Draw a new "
        "box and a new figure appears; use it where a LoadImage pose would go (Apply ControlNet's image)."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("pose",)
    OUTPUT_TOOLTIPS = ("The pose image (one image, width x height): a standing figure in each box.",)
    FUNCTION = "draw"

    @classmethod
    def INPUT_TYPES(cls):
        size = {"min": 16, "max": 16384, "step": 8}
        return {"required": {
            "regions": ("MOS_REGIONS", {"tooltip": "Regions from Region Boxes / Region Prompt; one figure per box "
                                                   "(a mask region: the box around its mask)."}),
            "width": ("INT", {"default": 768, **size, "tooltip": "Width of the pose image in pixels; use the size "
                                                                 "of the image being made (Empty Latent Image)."}),
            "height": ("INT", {"default": 512, **size, "tooltip": "Height of the pose image in pixels; use the size "
                                                                  "of the image being made."}),
        }}

    def draw(self, regions, width, height):
        boxes = [pose_skeleton.box_of(rc.region) for rc in regions]
        pixels = pose_skeleton.pose_image(boxes, width, height)  # (H, W, 3) uint8
        return (torch.from_numpy(pixels.copy()).float().div(255).unsqueeze(0),)  # IMAGE (1, H, W, 3)


NODE_CLASS_MAPPINGS = {"RegionPoseSkeleton": RegionPoseSkeleton}
NODE_DISPLAY_NAME_MAPPINGS = {"RegionPoseSkeleton": "Region Pose Skeleton (Mix-of-Show)"}
