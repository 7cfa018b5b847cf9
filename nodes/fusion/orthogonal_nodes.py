"""Orthogonal Adaptation merge (Mix-of-Show/fusion): concepts with disjoint orthogonal slots, summed."""
from __future__ import annotations

import logging
import os

from ...mixofshow_core.formats import load_concept
from ...mixofshow_core.training import orthogonal
from ..concepts import model_patches

logger = logging.getLogger(__name__)


class OrthogonalMerge:
    DESCRIPTION = (
        "Merge concepts trained in orthogonal mode by a plain weighted sum (Orthogonal Adaptation, Po et al. 2024): "
        "instant, no data. Each concept's words stay usable. Refuses concepts that share an orthogonal slot and "
        "reports the measured interference."
    )
    CATEGORY = "Mix-of-Show/fusion"
    RETURN_TYPES = ("MODEL", "CLIP", "STRING")
    RETURN_NAMES = ("MODEL", "CLIP", "report")
    OUTPUT_TOOLTIPS = (
        "Base model plus the sum of the concepts' weighted UNet deltas, with the layer-wise context patch.",
        "CLIP with the summed text deltas and every concept's words.",
        "Concepts, slots, weights and measured interference (0 = none).",
    )
    FUNCTION = "merge"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "Base model the concepts were trained on."}),
                "clip": ("CLIP", {"tooltip": "The matching CLIP."}),
                "concepts": ("MOS_CONCEPTS", {"tooltip": "Concepts from chained 'ED-LoRA Concept List' nodes; their "
                                                         "unet/text alphas multiply the weight."}),
                "weight": ("FLOAT", {"default": 0.6, "min": 0.0, "max": 4.0, "step": 0.05, "tooltip":
                           "Weight λ of every concept's delta (the paper merges with 0.6)."}),
            }
        }

    def merge(self, model, clip, concepts, weight):
        loaded = [load_concept(e["path"]) for e in concepts]
        if not loaded:
            raise ValueError("Orthogonal Merge got an empty concept list; chain 'ED-LoRA Concept List' nodes into it.")
        notes = orthogonal.check_slots(loaded)
        weights = [weight * e["unet_alpha"] for e in concepts]
        measured = orthogonal.interference(loaded, weights)
        for entry, concept in zip(concepts, loaded):
            model, clip = model_patches.apply_concept(model, clip, concept, weight * entry["unet_alpha"],
                                                      weight * entry["text_alpha"],
                                                      source=os.path.basename(entry["path"]), path=entry["path"])
        lines = [f"{c.name}: slot {c.orthogonal.get('slot', '-')}, weight {w:.3g}" for c, w in zip(loaded, weights)]
        lines.append(f"down-projection overlap (0 = orthogonal, 1 = same rows): {measured['overlap']:.3g}")
        lines.append(f"crosstalk on each concept's own input subspace (max relative): {measured['crosstalk']:.3g}")
        report = "\n".join(lines + notes)
        logger.info("[Mix-of-Show] orthogonal merge\n%s", report)
        return model, clip, report


NODE_CLASS_MAPPINGS = {"OrthogonalMerge": OrthogonalMerge}
NODE_DISPLAY_NAME_MAPPINGS = {"OrthogonalMerge": "Orthogonal Merge (Mix-of-Show)"}
