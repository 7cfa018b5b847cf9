"""Loading, prompting and exporting ED-LoRA concepts (Mix-of-Show/loaders)."""
from __future__ import annotations

import logging

from ...mixofshow_core.concept import rename_words
from ...mixofshow_core.formats import WRITERS, load_concept
from .. import model_folders
from . import layerwise, model_patches

logger = logging.getLogger(__name__)
CATEGORY = "Mix-of-Show/loaders"


class EDLoRALoader:
    DESCRIPTION = (
        "Load an ED-LoRA concept (this pack's .safetensors or an original Mix-of-Show .pth) onto a MODEL and "
        "CLIP. Its LoRA is merged like LoraLoader; its words (e.g. <potter1> <potter2>) become usable in "
        "'ED-LoRA Text Encode'. Chain several loaders for several concepts."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MODEL", "CLIP")
    RETURN_NAMES = ("MODEL", "CLIP")
    OUTPUT_TOOLTIPS = (
        "The model with the concept's UNet LoRA and the layer-wise context patch.",
        "The CLIP with the concept's text-encoder LoRA and its words registered.",
    )
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "An SD1.x or SDXL diffusion model (e.g. from Load Checkpoint)."}),
                "clip": ("CLIP", {"tooltip": "The CLIP of the same checkpoint."}),
                "concept_name": (model_folders.concept_files(), {"tooltip": "Concept file in models/edloras."}),
                "strength_model": ("FLOAT", {
                    "default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01,
                    "tooltip": "Scale of the UNet LoRA delta (official alpha; the paper samples with 0.6-1.0). "
                               "0 keeps only the embedding.",
                }),
                "strength_clip": ("FLOAT", {
                    "default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01,
                    "tooltip": "Scale of the text-encoder LoRA delta. "
                               "Word embeddings are always used at full strength.",
                }),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, concept_name):
        try:
            model_folders.concept_path(concept_name)
        except FileNotFoundError as err:
            return str(err)
        return True

    def load(self, model, clip, concept_name, strength_model, strength_clip):
        path = model_folders.concept_path(concept_name)
        concept = load_concept(path)
        return model_patches.apply_concept(model, clip, concept, strength_model, strength_clip, source=concept_name,
                                        path=path)


class EDLoRATextEncode:
    DESCRIPTION = (
        "Encode a prompt in which ED-LoRA concept words (loaded with EDLoRALoader) get their per-layer "
        "embeddings: each UNet cross-attention layer receives its own context, as in Mix-of-Show. Use it for "
        "the negative prompt too, so both batch together. Works with any sampler, areas, masks and ControlNet."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("CONDITIONING",)
    OUTPUT_TOOLTIPS = ("Layer-wise conditioning; without loaded concepts it equals CLIPTextEncode's output.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "clip": ("CLIP", {"tooltip": "A CLIP that went through EDLoRALoader."}),
                "text": ("STRING", {
                    "multiline": True, "dynamicPrompts": True,
                    "tooltip": "Prompt; write concept words as trained, e.g. 'a <potter1> <potter2> in a forest'. "
                               "(word:1.2) weights work as usual.",
                }),
            }
        }

    def encode(self, clip, text):
        for note in layerwise.prompt_warnings(clip, text):
            logger.warning("[Mix-of-Show] %s", note)
        return (layerwise.encode_layerwise(clip, text),)


EXPORT_FORMATS = {
    "kohya LoRA (for LoraLoader)": ("kohya_lora", "loras"),
    "ED-LoRA safetensors": ("edlora", model_folders.EDLORA_FOLDER),
}


class EDLoRAExport:
    DESCRIPTION = (
        "Save a concept file in another format: its LoRA part as a standard LoRA for LoraLoader and other tools "
        "(concept words need the ED-LoRA nodes), or any concept (e.g. an original .pth) as this pack's safetensors."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("path",)
    OUTPUT_TOOLTIPS = ("Where the file was written.",)
    FUNCTION = "export"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "concept_name": (model_folders.concept_files(), {"tooltip": "Concept file in models/edloras."}),
                "format": (list(EXPORT_FORMATS),
                           {"tooltip": "kohya LoRA goes to models/loras, ED-LoRA to models/edloras."}),
                "filename": ("STRING", {"default": "concept_lora", "tooltip": "File name without extension."}),
            },
            "optional": {
                "words": ("STRING", {"default": "", "tooltip":
                          "New concept words, space separated, one per existing word (e.g. '<anna1> <anna2>'), "
                          "to resolve a clash with another concept. Empty keeps the words."}),
            },
        }

    def export(self, concept_name, format, filename, words=""):
        writer, folder = EXPORT_FORMATS[format]
        target = model_folders.output_file(folder, filename, "concept_lora")
        concept = load_concept(model_folders.concept_path(concept_name))
        if words.strip():
            concept = rename_words(concept, words.split())
        WRITERS[writer](concept, target)
        logger.info("[Mix-of-Show] wrote %s", target)
        return {"ui": {"text": [target]}, "result": (target,)}


NODE_CLASS_MAPPINGS = {
    "EDLoRALoader": EDLoRALoader,
    "EDLoRATextEncode": EDLoRATextEncode,
    "EDLoRAExport": EDLoRAExport,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "EDLoRALoader": "ED-LoRA Loader (Mix-of-Show)",
    "EDLoRATextEncode": "ED-LoRA Text Encode (Mix-of-Show)",
    "EDLoRAExport": "ED-LoRA Export (Mix-of-Show)",
}
