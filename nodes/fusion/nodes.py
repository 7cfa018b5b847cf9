"""Gradient fusion nodes (Mix-of-Show/fusion): many ED-LoRA concepts into one model."""
from __future__ import annotations

import logging
import os
import time

import comfy.model_management
import comfy.utils
import folder_paths

from ...mixofshow_core.concept import Concept
from ...mixofshow_core.config import FUSION_ANCHORS, FUSION_KV_TARGETS, FUSION_MODES, FUSION_TEXT_INPUTS, FusionConfig
from ...mixofshow_core.formats import WRITERS, kohya, load_concept, lora_metadata
from .. import model_folders, model_layout
from ..concepts import layerwise, model_patches, standard_lora
from . import pipeline

logger = logging.getLogger(__name__)
CATEGORY = "Mix-of-Show/fusion"
DEFAULTS = FusionConfig()


class EDLoRAConceptList:
    DESCRIPTION = "Add a concept file to a list for Gradient Fusion (an alternative to chaining ED-LoRA Loaders)."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MOS_CONCEPTS",)
    RETURN_NAMES = ("concepts",)
    OUTPUT_TOOLTIPS = ("The list so far, with this concept appended.",)
    FUNCTION = "append"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "concept_name": (model_folders.concept_files(), {"tooltip": "Concept file in models/edloras."}),
                "unet_alpha": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 4.0, "step": 0.05,
                                         "tooltip": "Scale of this concept's UNet delta in the fusion targets "
                                                    "(official unet_alpha)."}),
                "text_alpha": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 4.0, "step": 0.05,
                                         "tooltip": "Scale of its text-encoder delta (official text_encoder_alpha)."}),
            },
            "optional": {"concepts": ("MOS_CONCEPTS", {"tooltip": "A list to extend (chain these nodes)."})},
        }

    def append(self, concept_name, unet_alpha, text_alpha, concepts=None):
        entry = {"name": concept_name, "path": model_folders.concept_path(concept_name), "unet_alpha": unet_alpha,
                 "text_alpha": text_alpha}
        return (list(concepts or []) + [entry],)


class LoRAAsConcept:
    DESCRIPTION = (
        "Add a standard LoRA from models/loras (kohya, diffusers/PEFT, LyCORIS LoCon/LoHa/LoKr: whatever LoraLoader "
        "applies) to a list for Gradient Fusion, as a concept named by its trigger words. Fused with the others, "
        "each LoRA answers to its own trigger instead of all of them bleeding into every subject."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MOS_CONCEPTS", "STRING")
    RETURN_NAMES = ("concepts", "found")
    OUTPUT_TOOLTIPS = (
        "The list so far, with this LoRA appended.",
        "The trigger used and what the file's metadata offers (caption tags with their counts).",
    )
    FUNCTION = "append"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "lora_name": (folder_paths.get_filename_list("loras"), {"tooltip": "LoRA file in models/loras."}),
                "trigger_words": ("STRING", {"default": "", "tooltip":
                                  "The phrase(s) the LoRA was trained on, comma separated (e.g. 'hatsune miku'); "
                                  "prompts name the concept with them. Empty: read from the file's metadata "
                                  "(modelspec trigger, kohya dataset folder, or its most frequent caption tag)."}),
                "strength_model": ("FLOAT", {"default": 1.0, "min": -4.0, "max": 4.0, "step": 0.05,
                                             "tooltip": "Strength of its UNet change, as in LoraLoader."}),
                "strength_clip": ("FLOAT", {"default": 1.0, "min": -4.0, "max": 4.0, "step": 0.05,
                                            "tooltip": "Strength of its text-encoder change, as in LoraLoader."}),
            },
            "optional": {"concepts": ("MOS_CONCEPTS", {"tooltip": "A list to extend (chain these nodes, or an "
                                                                  "'ED-LoRA Concept List')."})},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, lora_name):
        return True if folder_paths.get_full_path("loras", lora_name) else \
            f"LoRA '{lora_name}' is not in models/loras; copy it there and refresh the page."

    def append(self, lora_name, trigger_words, strength_model, strength_clip, concepts=None):
        path = folder_paths.get_full_path("loras", lora_name)
        info = lora_metadata.describe_lora(lora_metadata.read_metadata(path))
        triggers = lora_metadata.split_phrases(trigger_words)
        if triggers:
            info.triggers, info.source = triggers, "trigger_words input"
        if not info.triggers:
            raise ValueError(f"LoRA '{lora_name}': {info.summary()}. Type the phrase it was trained on into "
                             "trigger_words.")
        found = info.summary()
        logger.info("[Mix-of-Show] %s: %s", lora_name, found)
        entry = {"kind": "lora", "name": lora_name, "path": path, "triggers": info.triggers,
                 "unet_alpha": strength_model, "text_alpha": strength_clip}
        return (list(concepts or []) + [entry], found)


class GradientFusion:
    DESCRIPTION = (
        "Fuse many ED-LoRA concepts into one MODEL and CLIP that keep every identity (Mix-of-Show gradient "
        "fusion). Connect a MODEL/CLIP that went through ED-LoRA Loaders, and/or a concept list with the base "
        "MODEL/CLIP. Solved exactly per layer from streamed Gram statistics: seconds to minutes, and memory that "
        "does not grow with the number of concepts."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MODEL", "CLIP", "STRING")
    RETURN_NAMES = ("MODEL", "CLIP", "report")
    OUTPUT_TOOLTIPS = (
        "The fused model (base + fused deltas), with the layer-wise context patch.",
        "The fused CLIP with every concept's words; save them with 'ED-LoRA Save Bundle'.",
        "What was fused, per stage: layers, feature rows, seconds, worst relative residual, and how far the largest "
        "fused change outgrows the concepts' own (above 2x: raise ridge).",
    )
    FUNCTION = "fuse"

    @classmethod
    def INPUT_TYPES(cls):
        d = DEFAULTS
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "Base model, or the end of an ED-LoRA Loader chain (their LoRA "
                                               "patches are taken off and fused instead)."}),
                "clip": ("CLIP", {"tooltip": "The matching CLIP (base, or from the same ED-LoRA Loader chain)."}),
                "mode": (list(FUSION_MODES), {"default": d.mode, "tooltip":
                         "closed_form: exact per-layer optimum (fast). lbfgs: the paper's solver, for reference "
                         "(stores features; slow). average: weight averaging baseline."}),
                "steps": ("INT", {"default": d.steps, "min": 1, "max": 200, "tooltip":
                          "Sampling steps whose UNet features are collected per concept (paper: 20)."}),
                "resolution": ("INT", {"default": d.resolution, "min": 64, "max": 2048, "step": 8, "tooltip":
                               "Image size for feature collection (paper: 512). Lower is faster."}),
                "seed": ("INT", {"default": d.seed, "min": 0, "max": 2**31 - 1, "tooltip":
                         "Seed of the feature-collection noise; same seed, same fused model."}),
                "ridge": ("FLOAT", {"default": d.ridge, "min": 0.0, "max": 10.0, "step": 0.0001, "tooltip":
                          "Text-encoder and cross-attention K/V layers: pull toward the anchor (fraction of the mean "
                          "feature energy); 0 = exact. Raise if the report warns that a fused change outgrows the "
                          "concepts' own, or fused concepts look washed out or noisy with regions (small models)."}),
            },
            "optional": {
                "concepts": ("MOS_CONCEPTS", {"tooltip": "Concepts from 'ED-LoRA Concept List', fused with any "
                                                         "from the loader chain."}),
                "text_iters": ("INT", {"default": d.text_iters, "min": 1, "max": 5000,
                                       "tooltip": "L-BFGS iterations, text encoder (lbfgs mode only; paper: 500)."}),
                "kv_iters": ("INT", {"default": d.kv_iters, "min": 1, "max": 5000,
                                     "tooltip": "L-BFGS iterations, cross-attention K/V (lbfgs mode only; 500)."}),
                "spatial_iters": ("INT", {"default": d.spatial_iters, "min": 1, "max": 5000,
                                          "tooltip": "L-BFGS iterations, other UNet layers (lbfgs mode only; 50)."}),
                "accumulate_fp64": ("BOOLEAN", {"default": d.accumulate_fp64, "tooltip":
                                    "Accumulate statistics in float64. Off (default): float32, half the memory and "
                                    "time, the same fused layers at ridges >= 1e-4 (smaller ridges always use "
                                    "float64)."}),
                "lora_filename": ("STRING", {"default": "", "tooltip":
                                  "If set, also save the fused change as one LoRA file (exact .diff keys) in "
                                  "models/loras under this name."}),
                "anchor": (list(FUSION_ANCHORS), {"default": d.anchor, "tooltip":
                           "What the ridges pull toward where the concepts' features say little: base = no change "
                           "(default; measured safest on prompts without concept words), average = the weight "
                           "average of the concepts' changes."}),
                "spatial_ridge": ("FLOAT", {"default": d.spatial_ridge, "min": 0.0, "max": 10.0, "step": 0.001,
                                  "tooltip": "Ridge of the UNet attention layers other than K/V, whose features come "
                                             "from sampling: keeps prompts without concept words as the base model "
                                             "draws them (lower it for a closer fit on the concepts' own prompts)."}),
                "text_inputs": (list(FUSION_TEXT_INPUTS), {"default": d.text_inputs, "tooltip":
                                "Inputs the text-encoder layers are fitted on: own = each concept's own encoder (the "
                                "paper's code), fused = layer by layer on what the already-fused layers give, to "
                                "reproduce each concept's own layers (closed_form only)."}),
                "kv_targets": (list(FUSION_KV_TARGETS), {"default": d.kv_targets, "tooltip":
                               "What the cross-attention K/V layers reproduce at each concept's tokens: own_model "
                               "(default) = its own model's keys/values, which also absorbs the text encoder's "
                               "compromise (measured 5000x closer end to end on SD1.5), official = its K/V change on "
                               "the fused contexts, as the paper's code does (closed_form only)."}),
            },
        }

    def fuse(self, model, clip, mode, steps, resolution, seed, ridge, concepts=None, text_iters=DEFAULTS.text_iters,
             kv_iters=DEFAULTS.kv_iters, spatial_iters=DEFAULTS.spatial_iters,
             accumulate_fp64=DEFAULTS.accumulate_fp64, lora_filename="", anchor=DEFAULTS.anchor,
             spatial_ridge=DEFAULTS.spatial_ridge, text_inputs=DEFAULTS.text_inputs, kv_targets=DEFAULTS.kv_targets):
        cfg = FusionConfig(mode=mode, steps=steps, resolution=resolution, seed=seed, ridge=ridge, anchor=anchor,
                           spatial_ridge=spatial_ridge, text_inputs=text_inputs, kv_targets=kv_targets,
                           text_iters=text_iters, kv_iters=kv_iters, spatial_iters=spatial_iters,
                           accumulate_fp64=accumulate_fp64)
        items = [pipeline.FusionItem(load_concept(e["path"]), e["strength_model"], e["strength_clip"])
                 for e in model_patches.loaded_concepts(model)]
        chained = [item.concept for item in items]
        if not items and not concepts:
            raise ValueError("GradientFusion got no concepts: chain ED-LoRA Loaders before it, or connect an "
                             "'ED-LoRA Concept List' or 'LoRA as Concept' to its concepts input.")
        base_model, base_clip = model_patches.without_loaded_concepts(model, clip, chained)
        for e in concepts or []:
            if e.get("kind") == "lora":  # its strengths are part of the concept: its changes are read at them
                concept = standard_lora.concept_from_lora(base_model, base_clip, e["path"], e["triggers"],
                                                          e["unet_alpha"], e["text_alpha"], e["name"])
                items.append(pipeline.FusionItem(concept))
            else:
                items.append(pipeline.FusionItem(load_concept(e["path"]), e["unet_alpha"], e["text_alpha"]))
        bars: dict[str, comfy.utils.ProgressBar] = {}

        def progress(stage, done, total):
            comfy.model_management.throw_exception_if_processing_interrupted()
            if stage not in bars:
                bars[stage] = comfy.utils.ProgressBar(total)
                logger.info("[Mix-of-Show] fusion stage: %s", stage)
            bars[stage].update_absolute(done, total)

        fused_model, fused_clip, deltas, report = pipeline.fuse(base_model, base_clip, items, cfg, progress)
        text = report.text()
        if lora_filename.strip():
            start = time.perf_counter()
            target = model_folders.output_file("loras", lora_filename, "fused")
            kohya.write_diff(deltas["text"], deltas["unet"], target, model_layout.concept_family(model),
                             deltas["other"])
            text += f"\nwrote {target} in {time.perf_counter() - start:.2f} s"
        logger.info("[Mix-of-Show] %s", text)
        return fused_model, fused_clip, text


class EDLoRASaveBundle:
    DESCRIPTION = (
        "Save every concept word loaded on a CLIP (e.g. after Gradient Fusion) as one embedding bundle in "
        "models/edloras. Reload a saved fused checkpoint with an ED-LoRA Loader of this bundle to use the words."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("path",)
    OUTPUT_TOOLTIPS = ("Where the bundle was written.",)
    FUNCTION = "save"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "clip": ("CLIP", {
                    "tooltip": "A CLIP carrying concept words (from Gradient Fusion or ED-LoRA Loaders)."}),
                "filename": ("STRING", {"default": "fused_concepts", "tooltip": "Bundle file name without extension."}),
            }
        }

    def save(self, clip, filename):
        registry = layerwise.concept_registry(clip)
        if not registry:
            raise ValueError("This CLIP carries no concept words; connect the CLIP output of Gradient Fusion.")
        groups = []
        for entry in registry.values():
            if entry["group"] not in groups:
                groups.append(entry["group"])
        words = [w for g in groups for w in g]
        target = model_folders.output_file(model_folders.EDLORA_FOLDER, filename, "fused_concepts")
        first = registry[words[0]]
        bundle = Concept(words=words, embeddings={w: registry[w]["embedding"] for w in words},
                         name=os.path.splitext(os.path.basename(target))[0], word_groups=groups,
                         text_encoders=first["text_encoders"], base_family=first["base_family"])
        WRITERS["edlora"](bundle, target)
        return {"ui": {"text": [target]}, "result": (target,)}


NODE_CLASS_MAPPINGS = {
    "GradientFusion": GradientFusion,
    "EDLoRAConceptList": EDLoRAConceptList,
    "LoRAAsConcept": LoRAAsConcept,
    "EDLoRASaveBundle": EDLoRASaveBundle,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "GradientFusion": "Gradient Fusion (Mix-of-Show)",
    "EDLoRAConceptList": "ED-LoRA Concept List (Mix-of-Show)",
    "LoRAAsConcept": "LoRA as Concept (Mix-of-Show)",
    "EDLoRASaveBundle": "ED-LoRA Save Bundle (Mix-of-Show)",
}
