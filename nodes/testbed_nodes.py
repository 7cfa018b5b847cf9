"""The built-in default checkpoint as a loader node (Mix-of-Show/loaders)."""
from __future__ import annotations

from . import testbed

VARIANTS = ["tiny-random-sd1"]


class TestbedCheckpointLoader:
    DESCRIPTION = (
        "Load the pack's built-in tiny SD1-architecture checkpoint (made in code, no download): same layout and "
        "16 cross-attention layers as SD1.5 at a small width. Random weights: for trying workflows and tests, "
        "not for pictures."
    )
    CATEGORY = "Mix-of-Show/loaders"
    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    OUTPUT_TOOLTIPS = ("Tiny SD1-layout UNet.", "Tiny SD1 CLIP (text width 64) with the SD1 tokenizer.", "Tiny VAE.")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "variant": (VARIANTS, {"tooltip": "Which built-in checkpoint."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1,
                                 "tooltip": "Seed of the random weights (same seed, same model)."}),
            }
        }

    def load(self, variant, seed):
        return testbed.build_testbed(seed)


NODE_CLASS_MAPPINGS = {"TestbedCheckpointLoader": TestbedCheckpointLoader}
NODE_DISPLAY_NAME_MAPPINGS = {"TestbedCheckpointLoader": "Testbed Checkpoint Loader (Mix-of-Show)"}
