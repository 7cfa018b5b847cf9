"""Regionally controllable sampling nodes (Mix-of-Show/regions)."""
from __future__ import annotations

import comfy.samplers
import torch

from ...mixofshow_core import pixel_boxes
from ...mixofshow_core.errors import RegionSpecError
from ...mixofshow_core.regions import Region, parse_spec
from ..concepts import layerwise
from . import attention_patch

CATEGORY = "Mix-of-Show/regions"
# Inputs the region nodes share.
REGIONS_INPUT = ("MOS_REGIONS", {"tooltip": "Regions so far (chain RegionPrompt / RegionBoxes nodes)."})
CLIP_INPUT = ("CLIP", {"tooltip": "CLIP (after ED-LoRA Loaders or Gradient Fusion) to encode the prompts."})
PROMPT_INPUT = ("STRING", {"multiline": True, "tooltip": "What is inside the region, e.g. 'a <cat1> <cat2>'."})
NEGATIVE_INPUT = ("STRING", {"multiline": True, "default": "", "tooltip": "Negative prompt for this region."})
WEIGHT_INPUT = ("FLOAT", {"default": 1.0, "min": 0.01, "max": 10.0, "step": 0.05,
                          "tooltip": "Weight where regions overlap (overlaps are averaged with weights)."})
CONTROL_STRENGTH_INPUT = ("FLOAT", {"default": -1.0, "min": -1.0, "max": 10.0, "step": 0.05, "tooltip":
                                    "ControlNet strength inside this region (replaces the global one); -1 keeps it."})


def _encode(clip, text: str) -> torch.Tensor:
    return layerwise.encode_layerwise(clip, text)[0][0]  # (1, T*L, D) or (1, T, D)


def _condition(clip, region: Region) -> attention_patch.RegionCondition:
    return attention_patch.RegionCondition(region, _encode(clip, region.prompt), _encode(clip, region.negative))


class _AddsOneRegion:
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MOS_REGIONS",)
    RETURN_NAMES = ("regions",)
    OUTPUT_TOOLTIPS = ("The region list with this region appended.",)
    FUNCTION = "add"


class RegionPrompt(_AddsOneRegion):
    DESCRIPTION = (
        "One region: a box (fractions of the image) or a MASK, with its own prompt and negative prompt, which may "
        "name ED-LoRA concepts. Chain several into a region list for Regional KSampler or Apply Regions."
    )

    @classmethod
    def INPUT_TYPES(cls):
        box = {"min": 0.0, "max": 1.0, "step": 0.01}
        return {
            "required": {
                "clip": CLIP_INPUT,
                "prompt": PROMPT_INPUT,
                "negative": NEGATIVE_INPUT,
                "x": ("FLOAT", {"default": 0.0, **box, "tooltip": "Left edge, fraction of the image width."}),
                "y": ("FLOAT", {"default": 0.0, **box, "tooltip": "Top edge, fraction of the image height."}),
                "width": ("FLOAT", {"default": 0.5, **box, "tooltip": "Width, fraction of the image width."}),
                "height": ("FLOAT", {"default": 1.0, **box, "tooltip": "Height, fraction of the image height."}),
                "weight": WEIGHT_INPUT,
            },
            "optional": {
                "regions": REGIONS_INPUT,
                "mask": ("MASK", {"tooltip": "If connected, the region is this mask (>= 0.5) instead of the box."}),
                "control_strength": CONTROL_STRENGTH_INPUT,
            },
        }

    def add(self, clip, prompt, negative, x, y, width, height, weight, regions=None, mask=None, control_strength=-1.0):
        item = {"x": x, "y": y, "width": width, "height": height, "prompt": prompt, "negative": negative,
                "weight": weight}
        if control_strength >= 0:
            item["strength"] = control_strength
        region = parse_spec({"version": 1, "regions": [item]})[0]
        if mask is not None:
            region.mask = mask[0].float()  # (H, W)
        return (list(regions or []) + [_condition(clip, region)],)


class RegionFromBoundingBox(_AddsOneRegion):
    DESCRIPTION = (
        "One region from a BOUNDING_BOX link (ComfyUI's detection nodes such as RT-DETR, the Bounding Box "
        "primitive, Create Bounding Boxes): pick a box, give it a prompt and negative prompt. Boxes are in pixels "
        "of the image they were found in; connect that image, or set its size."
    )

    @classmethod
    def INPUT_TYPES(cls):
        size = {"default": 512, "min": 1, "max": 16384, "step": 1}
        return {
            "required": {
                "clip": CLIP_INPUT,
                "bboxes": ("BOUNDING_BOX", {"forceInput": True, "tooltip":
                           "Boxes in pixels: one box, a list, or one list per image (the first image's are used)."}),
                "index": ("INT", {"default": 0, "min": 0, "max": 999,
                                  "tooltip": "Which box, counted in the chosen order from 0."}),
                "order": (list(pixel_boxes.ORDERS), {"tooltip":
                          "How boxes are counted: by their centres left to right or top to bottom, by area, or "
                          "as the input lists them (detectors list the most confident first)."}),
                "prompt": PROMPT_INPUT,
                "negative": NEGATIVE_INPUT,
                "image_width": ("INT", {**size, "tooltip":
                                "Width in pixels of the image the boxes are in (ignored when image is connected)."}),
                "image_height": ("INT", {**size, "tooltip":
                                 "Height in pixels of the image the boxes are in (ignored when image is connected)."}),
                "weight": WEIGHT_INPUT,
            },
            "optional": {
                "regions": REGIONS_INPUT,
                "image": ("IMAGE", {"tooltip": "The image the boxes were found in; its size is used."}),
                "control_strength": CONTROL_STRENGTH_INPUT,
            },
        }

    def add(self, clip, bboxes, index, order, prompt, negative, image_width, image_height, weight, regions=None,
            image=None, control_strength=-1.0):
        if image is not None:
            image_height, image_width = image.shape[1], image.shape[2]  # IMAGE is (B, H, W, C)
        try:
            box = pixel_boxes.pick(bboxes, index, order, image_width, image_height)
        except RegionSpecError as err:
            raise RegionSpecError(err.code, f"Region From Bounding Box: {err}") from err
        return RegionPrompt().add(clip, prompt, negative, box["x"], box["y"], box["width"], box["height"], weight,
                                  regions=regions, control_strength=control_strength)


class RegionBoxes:
    DESCRIPTION = (
        "Draw region boxes on the node (over an optional image such as a pose): each box has its own prompt and "
        "negative prompt. Drag to draw, drag a box to move it, its corner to resize; Delete removes the selection."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MOS_REGIONS",)
    RETURN_NAMES = ("regions",)
    OUTPUT_TOOLTIPS = ("The boxes as a region list.",)
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "clip": CLIP_INPUT,
                "regions_json": ("STRING", {"default": '{"version": 1, "regions": []}', "multiline": True,
                                            "dynamicPrompts": False,
                                            "tooltip": "The boxes (version-1 JSON), edited by the box widget."}),
            },
            "optional": {
                "image": ("IMAGE", {"tooltip": "Shown behind the boxes in the editor (e.g. the pose image)."}),
                "regions": REGIONS_INPUT,
                "image_width": ("INT", {"default": 512, "min": 1, "max": 16384, "step": 1, "tooltip":
                                "Width in pixels of the image being made; shapes the box editor only, as boxes are "
                                "fractions (ignored when a connected image is shown)."}),
                "image_height": ("INT", {"default": 512, "min": 1, "max": 16384, "step": 1, "tooltip":
                                 "Height in pixels of the image being made; shapes the box editor only (ignored when "
                                 "a connected image is shown)."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, regions_json):
        try:
            parse_spec(regions_json)
        except RegionSpecError as err:
            return f"RegionBoxes: {err}"
        return True

    def build(self, clip, regions_json, image=None, regions=None, image_width=512, image_height=512):
        return (list(regions or []) + [_condition(clip, r) for r in parse_spec(regions_json)],)


class ApplyRegions:
    DESCRIPTION = (
        "Make a MODEL honour region prompts in cross-attention, so any sampler (KSampler, KSamplerAdvanced, "
        "SamplerCustom) samples all regions in one pass. Adds list patches: other attention patches still apply."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The model with regional cross-attention.",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The model to sample with (after ED-LoRA Loaders or Gradient Fusion)."}),
            "regions": ("MOS_REGIONS", {"tooltip": "Regions from RegionPrompt / RegionBoxes."}),
        }}

    def apply(self, model, regions):
        return (attention_patch.with_regions(model, regions),)


class RegionControlStrength:
    DESCRIPTION = ("Give ControlNets/T2I-Adapters attached to these conditionings each region's own strength inside "
                   "its box (RegionPrompt control_strength), as in Mix-of-Show; the global strength stays outside.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    OUTPUT_TOOLTIPS = ("Positive with regional control strength.", "Negative with regional control strength.")
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "positive": ("CONDITIONING", {"tooltip": "After ControlNetApplyAdvanced."}),
            "negative": ("CONDITIONING", {"tooltip": "After ControlNetApplyAdvanced."}),
            "regions": ("MOS_REGIONS", {"tooltip": "Regions whose control_strength to use."}),
        }}

    def apply(self, positive, negative, regions):
        boxes = [rc.region for rc in regions]
        scaled = attention_patch.with_region_control
        return scaled(positive, boxes), scaled(negative, boxes)


class RegionalKSampler:
    DESCRIPTION = ("KSampler with regions: the global prompt for the scene, each region's prompt inside its box, in "
                   "one sampling pass. Per-region ControlNet strengths apply when the conditionings carry a "
                   "ControlNet.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The denoised latent.",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The model (after ED-LoRA Loaders or Gradient Fusion)."}),
            "regions": ("MOS_REGIONS", {"tooltip": "Regions from RegionPrompt / RegionBoxes."}),
            "positive": ("CONDITIONING", {"tooltip": "Global prompt (the whole scene)."}),
            "negative": ("CONDITIONING", {"tooltip": "Global negative prompt."}),
            "latent_image": ("LATENT", {"tooltip": "The latent to denoise (e.g. Empty Latent Image)."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff, "tooltip": "Noise seed."}),
            "steps": ("INT", {"default": 20, "min": 1, "max": 10000, "tooltip": "Sampling steps."}),
            "cfg": ("FLOAT", {"default": 7.5, "min": 0.0, "max": 100.0, "step": 0.1, "tooltip": "Guidance scale."}),
            "sampler_name": (comfy.samplers.KSampler.SAMPLERS, {"tooltip": "Sampler."}),
            "scheduler": (comfy.samplers.KSampler.SCHEDULERS, {"tooltip": "Noise schedule."}),
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "Denoise amount."}),
        }}

    def sample(self, model, regions, positive, negative, latent_image, seed, steps, cfg, sampler_name, scheduler,
               denoise):
        import nodes

        boxes = [rc.region for rc in regions]
        positive = attention_patch.with_region_control(positive, boxes)
        negative = attention_patch.with_region_control(negative, boxes)
        return nodes.common_ksampler(attention_patch.with_regions(model, regions), seed, steps, cfg, sampler_name,
                                     scheduler, positive, negative, latent_image, denoise=denoise)


NODE_CLASS_MAPPINGS = {
    "RegionPrompt": RegionPrompt,
    "RegionFromBoundingBox": RegionFromBoundingBox,
    "RegionBoxes": RegionBoxes,
    "ApplyRegions": ApplyRegions,
    "RegionControlStrength": RegionControlStrength,
    "RegionalKSampler": RegionalKSampler,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "RegionPrompt": "Region Prompt (Mix-of-Show)",
    "RegionFromBoundingBox": "Region From Bounding Box (Mix-of-Show)",
    "RegionBoxes": "Region Boxes (Mix-of-Show)",
    "ApplyRegions": "Apply Regions (Mix-of-Show)",
    "RegionControlStrength": "Region Control Strength (Mix-of-Show)",
    "RegionalKSampler": "Regional KSampler (Mix-of-Show)",
}
