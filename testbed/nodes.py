"""The built-in testbed as nodes (category Mix-of-Show/testbed): its checkpoints and ControlNet, its concepts'
photos as a training set."""
from __future__ import annotations

import os

import torch

from ..mixofshow_core.training.dataset import from_tensors
from . import model as testbed
from . import model_sdxl
from .world.concepts import CONCEPTS
from .world.training_set import training_tensors

RANDOM = "tiny-random-sd1"
RANDOM_SDXL = "tiny-random-sdxl"
WORLD = "world-tiny-sd1"
WORLD_WEIGHTS = os.path.join(os.path.dirname(__file__), "weights", "world_tiny_sd1.safetensors")


def variants() -> list[str]:
    """The random testbeds always; the world-trained one when its weights ship with the pack."""
    return [RANDOM, RANDOM_SDXL] + ([WORLD] if os.path.isfile(WORLD_WEIGHTS) else [])


class TestbedCheckpointLoader:
    DESCRIPTION = (
        "Load one of the pack's built-in tiny checkpoints (no download), made of the host's own classes at a small "
        "width. tiny-random-sd1: the SD1.5 layout (16 cross-attention layers), seeded random weights. "
        "tiny-random-sdxl: the SDXL layout (70 cross-attention layers in 11 attention blocks, CLIP-L and CLIP-G), "
        "seeded random weights. world-tiny-sd1: SD1 layout trained on the pack's synthetic world of coloured shapes "
        "(64x64 images)."
    )
    CATEGORY = "Mix-of-Show/testbed"
    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    OUTPUT_TOOLTIPS = ("Tiny SD1- or SDXL-layout UNet.",
                       "Tiny CLIP with the real tokenizers: SD1 (text width 64) or SDXL (CLIP-L 64 + CLIP-G 128).",
                       "Tiny VAE.")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "variant": (variants(), {"tooltip": "Which built-in checkpoint."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1,
                                 "tooltip": "Seed of the random weights (tiny-random-* only)."}),
            }
        }

    def load(self, variant, seed):
        if variant == WORLD:
            return testbed.load_trained(WORLD_WEIGHTS)
        if variant == RANDOM_SDXL:
            return model_sdxl.build_testbed(seed)
        return testbed.build_testbed(seed)


class TestbedControlNet:
    DESCRIPTION = ("A seeded random ControlNet for the tiny testbed's UNet layout (no download): connect it to stock "
                   "Apply ControlNet to try control and per-region control strength on the testbed.")
    CATEGORY = "Mix-of-Show/testbed"
    RETURN_TYPES = ("CONTROL_NET",)
    OUTPUT_TOOLTIPS = ("A ControlNet for the testbed of its layout (random weights).",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1,
                                              "tooltip": "Seed of the random weights."})},
                "optional": {"layout": (["sd1", "sdxl"], {"default": "sd1", "tooltip":
                                        "The testbed it fits: sd1 (tiny-random-sd1, world-tiny-sd1) or sdxl "
                                        "(tiny-random-sdxl)."})}}

    def load(self, seed, layout="sd1"):
        return (model_sdxl.build_controlnet(seed) if layout == "sdxl" else testbed.build_controlnet(seed),)


class TestbedConceptDataset:
    DESCRIPTION = (
        "Training photos of one of the testbed world's novel concepts (e.g. rubo, a red circle with yellow dots), "
        "with captions and subject masks, made in the graph (no files): a dataset for 'ED-LoRA Train' to try "
        "training without photos of your own. world-tiny-sd1 has never seen these concepts."
    )
    CATEGORY = "Mix-of-Show/testbed"
    RETURN_TYPES = ("MOS_DATASET", "IMAGE")
    RETURN_NAMES = ("dataset", "photos")
    OUTPUT_TOOLTIPS = ("Images (64x64), captions with <TOK> and masks for 'ED-LoRA Train'.",
                       "The photos, for a look.")
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "concept": ([c.name for c in CONCEPTS], {"tooltip": "Which concept of the world: " + "; ".join(
                f"{c.name} = {c.look.phrase()[2:].replace('large ', '')}" for c in CONCEPTS) + "."}),
            "photos": ("INT", {"default": 6, "min": 1, "max": 64,
                               "tooltip": "How many photos (sizes, positions and grounds vary)."}),
            # not named "seed": the frontend would add a control that, for a new node, draws new photos each run
            "photo_seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1,
                                   "tooltip": "Seed of the photos' positions, grounds and textures."}),
        }}

    def build(self, concept, photos, photo_seed):
        data = from_tensors(*training_tensors(concept, photos, photo_seed))
        return data, torch.stack([s.image.permute(1, 2, 0) for s in data.samples])  # IMAGE (N, 64, 64, 3)


NODE_CLASS_MAPPINGS = {"TestbedCheckpointLoader": TestbedCheckpointLoader, "TestbedControlNet": TestbedControlNet,
                       "TestbedConceptDataset": TestbedConceptDataset}
NODE_DISPLAY_NAME_MAPPINGS = {"TestbedCheckpointLoader": "Testbed Checkpoint Loader (Mix-of-Show)",
                              "TestbedControlNet": "Testbed ControlNet (Mix-of-Show)",
                              "TestbedConceptDataset": "Testbed Concept Dataset (Mix-of-Show)"}
