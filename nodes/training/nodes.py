"""ED-LoRA / Orthogonal Adaptation training nodes (Mix-of-Show/training)."""
from __future__ import annotations

import os

import folder_paths

from ...mixofshow_core.formats import load_concept
from ...mixofshow_core.training import dataset as datasets
from ...mixofshow_core.training.captions import PLACEHOLDER
from ...mixofshow_core.training.config import CROP_MODES, MODES, PRECISIONS, TEMPLATE_SETS, TrainConfig
from ..concepts import model_patches
from . import run

CATEGORY = "Mix-of-Show/training"
D = TrainConfig(words=["<w1>"], init=["<rand-0.013>"])  # defaults only
_V = run.Validation()  # validation defaults


def _tip(text: str, **options) -> dict:
    return {"tooltip": text, **options}


class EDLoRADataset:
    DESCRIPTION = (
        "Training images of one concept from an IMAGE batch: one caption per line (in image order; one line is used "
        f"for all) containing the placeholder {PLACEHOLDER}, and optional subject masks (white = subject)."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MOS_DATASET",)
    RETURN_NAMES = ("dataset",)
    OUTPUT_TOOLTIPS = ("Images, captions and masks for 'ED-LoRA Train'.",)
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", _tip("5-20 photos of the concept (a batch; use an image batch node for several).")),
                "captions": ("STRING", _tip(
                    f"One caption per line, e.g. '{PLACEHOLDER}, smiling, outdoors'. {PLACEHOLDER} becomes the concept "
                    "words. Empty = just the placeholder.", multiline=True, default=PLACEHOLDER)),
            },
            "optional": {"masks": ("MASK", _tip("Subject masks (one per image, image size); the loss then counts the "
                                                "subject only and attention is kept on it."))},
        }

    def build(self, images, captions, masks=None):
        return (datasets.from_tensors(images, captions.splitlines(), masks),)


class EDLoRADatasetFromFolder:
    DESCRIPTION = (
        "Training images of one concept from a folder (absolute, or relative to ComfyUI's input folder): name.png "
        f"with an optional caption name.txt (first line, with {PLACEHOLDER}) beside it or in captions/, and an "
        "optional mask masks/name.png."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MOS_DATASET", "IMAGE")
    RETURN_NAMES = ("dataset", "preview")
    OUTPUT_TOOLTIPS = ("Images, captions and masks for 'ED-LoRA Train'.", "The first image, for a quick look.")
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "folder": ("STRING", _tip("Folder with the images, e.g. 'training/potter' under input/.",
                                          default="training/my_concept")),
                "default_caption": ("STRING", _tip(
                    f"Caption for images without a .txt file; must contain {PLACEHOLDER}.", default=PLACEHOLDER)),
            }
        }

    @classmethod
    def IS_CHANGED(cls, folder, default_caption):
        root = cls._resolve(folder)
        if not os.path.isdir(root):
            return ""
        return ";".join(f"{e.name}:{e.stat().st_mtime_ns}" for e in sorted(os.scandir(root), key=lambda e: e.name))

    @staticmethod
    def _resolve(folder: str) -> str:
        return folder if os.path.isabs(folder) else os.path.join(folder_paths.get_input_directory(), folder)

    def build(self, folder, default_caption):
        data = datasets.from_folder(self._resolve(folder), default_caption)
        return data, data.samples[0].image.permute(1, 2, 0).unsqueeze(0)


class EDLoRATrain:
    DESCRIPTION = (
        "Train an ED-LoRA concept (Mix-of-Show): layer-wise word embeddings + rank-4 LoRA on text encoder and UNet "
        "attention, with the paper's recipe as defaults. Progress shows a live loss plot; Cancel saves a usable "
        "concept and a resume state; queue again with resume on to continue exactly. The concept is written to "
        "models/edloras/<concept_name>.safetensors. Mode 'orthogonal' trains an Orthogonal Adaptation concept "
        "(merge several with 'Orthogonal Merge'). Needs ComfyUI 0.3.41 or newer."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MODEL", "CLIP", "STRING", "IMAGE", "IMAGE", "STRING")
    RETURN_NAMES = ("MODEL", "CLIP", "concept_file", "loss_plot", "validation", "report")
    OUTPUT_TOOLTIPS = (
        "The model with the trained concept applied (sample it right away).",
        "The CLIP with the concept's words usable in 'ED-LoRA Text Encode'.",
        "Name of the saved concept in models/edloras (for ED-LoRA Loader / Concept List).",
        "Loss per step (grey) and its moving average (blue).",
        "Validation images at the end of training (empty image when no validation prompt).",
        "Steps, speed, final loss, embedding freeze step and file locations.",
    )
    FUNCTION = "train"
    OUTPUT_NODE = True
    EXPERIMENTAL = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", _tip("Base diffusion model (SD1.x or SDXL) to train on.")),
                "clip": ("CLIP", _tip("The CLIP of the same checkpoint.")),
                "vae": ("VAE", _tip("The VAE of the same checkpoint (encodes the training images).")),
                "dataset": ("MOS_DATASET", _tip("From 'ED-LoRA Dataset' or 'ED-LoRA Dataset From Folder'.")),
                "concept_name": ("STRING", _tip("File name in models/edloras; also names the run folder "
                                                "output/mixofshow_training/<name>.", default="my_concept")),
                "words": ("STRING", _tip("New concept words, space-separated (paper: two, an 'adjective' and a "
                                         "class word), e.g. '<potter1> <potter2>'.", default="<mychar1> <mychar2>")),
                "init": ("STRING", _tip("Initializer per word: '<rand-0.013>' (random, paper) or a one-token class "
                                        "word such as man, woman, dog.", default="<rand-0.013> man")),
                "steps": ("INT", _tip("Optimizer steps; 0 = images × repeats / batch_size (paper: one pass over the "
                                      "enlarged set).", default=D.steps, min=0, max=1_000_000)),
                "repeats": ("INT", _tip("Dataset enlarge ratio used when steps = 0 (paper: 500).",
                                        default=D.repeats, min=1, max=100_000)),
                "batch_size": ("INT", _tip("Images per step (paper: 2 per GPU).", default=D.batch_size, min=1, max=64)),
                "resolution": ("INT", _tip("Training image size (paper: 512 for SD1.5).", default=D.resolution,
                                           min=64, max=2048, step=64)),
                "seed": ("INT", _tip("Seeds every random draw; same seed and data, same concept.", default=D.seed,
                                     min=0, max=2**31 - 1)),
                "resume": ("BOOLEAN", _tip("Continue a cancelled run of this concept_name from its saved state "
                                           "(exactly where it stopped). Off starts over and overwrites it.",
                                           default=True)),
            },
            "optional": {
                "mode": (list(MODES), _tip("edlora: the paper's ED-LoRA. orthogonal: Orthogonal Adaptation (frozen "
                                           "orthogonal down-projections; merge concepts by summation).",
                                           default=D.mode)),
                "orthogonal_slot": ("INT", _tip("Orthogonal mode: basis rows this concept uses. Give every concept "
                                                "you want to merge its own slot.", default=0, min=0, max=4096)),
                "lr_embedding": ("FLOAT", _tip("Learning rate of the word embeddings (paper: 1e-3).",
                                               default=D.lr_embedding, min=0.0, max=1.0, step=1e-5)),
                "lr_text": ("FLOAT", _tip("Learning rate of the text-encoder LoRA (paper: 1e-5).", default=D.lr_text,
                                          min=0.0, max=1.0, step=1e-6)),
                "lr_unet": ("FLOAT", _tip("Learning rate of the UNet LoRA (paper: 1e-4).", default=D.lr_unet,
                                          min=0.0, max=1.0, step=1e-6)),
                "rank": ("INT", _tip("LoRA rank (paper: 4; Orthogonal Adaptation paper: 20).", default=D.rank,
                                     min=1, max=128)),
                "alpha": ("FLOAT", _tip("LoRA scale: delta = alpha · up @ down (official, not alpha/rank).",
                                        default=D.alpha, min=0.0, max=16.0, step=0.05)),
                "weight_decay": ("FLOAT", _tip("AdamW weight decay, all groups (paper: 0.01).",
                                               default=D.weight_decay, min=0.0, max=1.0, step=0.001)),
                "train_lora": ("BOOLEAN", _tip("Off trains the word embeddings only (the paper's embedding-only "
                                               "diagnostic).", default=D.train_lora)),
                "noise_offset": ("FLOAT", _tip("Per-channel noise offset (paper: 0.01, 'crucial for stable "
                                               "identity').", default=D.noise_offset, min=0.0, max=1.0, step=0.001)),
                "mask_loss": ("BOOLEAN", _tip("Count the loss on the subject mask where a mask is given (paper: on for "
                                              "real people).", default=D.mask_loss)),
                "official_mask_scale": ("BOOLEAN", _tip("Reproduce the official masked loss, which is 4× the true "
                                                        "masked mean (affects the balance with attention reg.).",
                                                        default=D.official_mask_scale)),
                "attn_reg_weight": ("FLOAT", _tip("Attention regularisation: keep the words' attention on the subject "
                                                  "(official 0.01; 0 = off).", default=D.attn_reg_weight,
                                                  min=0.0, max=10.0, step=0.001)),
                "reg_full_identity": ("BOOLEAN", _tip("Class word's attention must cover the whole mask (official: on "
                                                      "for Thanos only).", default=D.reg_full_identity)),
                "emb_norm_threshold": ("FLOAT", _tip("Freeze the embeddings once their mean row norm reaches this "
                                                     "(official 0.55).", default=D.emb_norm_threshold, min=0.0,
                                                     max=100.0, step=0.01)),
                "crop": (list(CROP_MODES), _tip("paper: resize, random crop (p=0.5), pad to a square with a valid-area "
                                                "mask. center: center crop. pad: whole image padded.", default=D.crop)),
                "templates": (list(TEMPLATE_SETS), _tip("Prompt templates around each caption (paper: human).",
                                                        default=D.templates)),
                "shuffle_captions": ("BOOLEAN", _tip("Shuffle the comma-separated caption parts after the first.",
                                                     default=D.shuffle_captions)),
                "precision": (list(PRECISIONS), _tip("auto: bf16 (or fp16) autocast on GPU, fp32 on CPU.",
                                                     default=D.precision)),
                "gradient_checkpointing": ("BOOLEAN", _tip("Recompute UNet activations in backward: less memory, "
                                                           "slower.", default=D.gradient_checkpointing)),
                "save_every": ("INT", _tip("Write the concept and resume state every N steps (0 = only on cancel and "
                                           "at the end).", default=run.SAVE_EVERY, min=0, max=1_000_000)),
                "validation_prompts": ("STRING", _tip("One prompt per line, using the concept words, sampled every "
                                                      "validate_every steps and at the end. Empty = no validation.",
                                                      multiline=True, default=_V.prompts)),
                "validate_every": ("INT", _tip("Steps between validation images (0 = only at the end).",
                                               default=_V.every, min=0, max=1_000_000)),
                "validation_steps": ("INT", _tip("Sampling steps of validation images.", default=_V.steps, min=1,
                                                 max=200)),
                "validation_cfg": ("FLOAT", _tip("CFG of validation images.", default=_V.cfg, min=0.0, max=30.0,
                                                 step=0.1)),
            },
        }

    def train(self, model, clip, vae, dataset, concept_name, words, init, steps, repeats, batch_size, resolution, seed,
              resume, save_every=run.SAVE_EVERY, validation_prompts=_V.prompts, validate_every=_V.every,
              validation_steps=_V.steps, validation_cfg=_V.cfg, **options):
        config = TrainConfig(words=words.split(), init=init.split(), steps=steps, repeats=repeats,
                             batch_size=batch_size, resolution=resolution, seed=seed, **options)
        validation = run.Validation(every=validate_every, prompts=validation_prompts, steps=validation_steps,
                                    cfg=validation_cfg, seed=seed)
        result = run.train(model, clip, vae, dataset, config, concept_name, resume, save_every, validation)
        concept = load_concept(result.concept_path)
        trained_model, trained_clip = model_patches.apply_concept(model, clip, concept, 1.0, 1.0,
                                                                  source=os.path.basename(result.concept_path),
                                                                  path=result.concept_path)
        validation_image = result.validation if result.validation is not None else result.plot[:, :64, :64] * 0
        name = os.path.basename(result.concept_path)
        return {"ui": {"text": [result.report]},
                "result": (trained_model, trained_clip, name, result.plot, validation_image, result.report)}


NODE_CLASS_MAPPINGS = {
    "EDLoRADataset": EDLoRADataset,
    "EDLoRADatasetFromFolder": EDLoRADatasetFromFolder,
    "EDLoRATrain": EDLoRATrain,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "EDLoRADataset": "ED-LoRA Dataset (Mix-of-Show)",
    "EDLoRADatasetFromFolder": "ED-LoRA Dataset From Folder (Mix-of-Show)",
    "EDLoRATrain": "ED-LoRA Train (Mix-of-Show)",
}
