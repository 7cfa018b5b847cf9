"""ED-LoRA training settings; defaults are the official main-branch recipe (spec §1.4-§1.7)."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields

from ..errors import MixOfShowError

MODES = ("edlora", "orthogonal")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
CROP_MODES = ("paper", "center", "pad")
TEMPLATE_SETS = ("human", "object", "style", "none")


class TrainingConfigError(MixOfShowError):
    """A training setting is out of range or inconsistent."""


@dataclass
class TrainConfig:
    """Everything that decides a training run's trajectory (stored with the resume state).

    Attributes:
        words: new concept words in prompt order, e.g. ["<potter1>", "<potter2>"].
        init: initializer per word: "<rand-σ>" (one N(0, σ²) vector in every layer row) or a class
            word that is one token (its embedding in every row). Official: ["<rand-0.013>", "man"].
        rank / alpha: LoRA rank and scale; delta = alpha · up @ down (alpha not divided by rank).
        lr_embedding / lr_text / lr_unet: AdamW learning rates of the three parameter groups.
        weight_decay: AdamW weight decay, all groups.
        train_lora: False trains the word embeddings only (the paper's embedding-only diagnostic).
        steps: optimizer steps; 0 = ceil(images × repeats / batch_size) (one pass over the enlarged set).
        repeats: dataset enlarge ratio (official 500).
        batch_size: images per step.
        resolution: training image side in pixels (multiple of 64).
        noise_offset: std of the per-channel offset added to the noise (official 0.01).
        mask_loss: weight the loss by the subject mask when a sample has one (else the valid area).
        official_mask_scale: reproduce the official masked mean, which is 4× the per-element mean
            (mask summed over one channel, error over four); False gives the correct mean.
        attn_reg_weight: weight of the attention regularisation (official 0.01; 0 = off).
        reg_full_identity: class-word attention must match the whole mask (else only stay inside it).
        emb_norm_threshold: freeze the embeddings once the concept rows' mean L2 norm reaches this.
        seed: seeds every random draw; step s uses its own generator, so a resumed run repeats exactly.
        mode: "edlora", or "orthogonal" (frozen down-projections from a shared orthogonal basis).
        orthogonal_slot: which block of basis rows this concept uses (distinct slots never interfere).
        crop: "paper" (resize, random crop, pad into the canvas), "center" (center crop) or "pad".
        templates: prompt template set wrapped around each caption ("none" keeps the caption).
        shuffle_captions: shuffle the comma-separated parts after the first.
        precision: "auto" (bf16/fp16 autocast on GPU, fp32 on CPU), "fp32", "bf16", "fp16".
        gradient_checkpointing: recompute UNet block activations in backward (less memory, slower).
    """

    words: list[str]
    init: list[str]
    rank: int = 4
    alpha: float = 1.0
    lr_embedding: float = 1e-3
    lr_text: float = 1e-5
    lr_unet: float = 1e-4
    weight_decay: float = 0.01
    train_lora: bool = True
    steps: int = 0
    repeats: int = 500
    batch_size: int = 2
    resolution: int = 512
    noise_offset: float = 0.01
    mask_loss: bool = True
    official_mask_scale: bool = False
    attn_reg_weight: float = 0.01
    reg_full_identity: bool = False
    emb_norm_threshold: float = 0.55
    seed: int = 0
    mode: str = "edlora"
    orthogonal_slot: int = 0
    crop: str = "paper"
    templates: str = "human"
    shuffle_captions: bool = True
    precision: str = "auto"
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        if len(self.words) != len(self.init) or not self.words:
            raise TrainingConfigError(
                f"Give one initializer per concept word: words {self.words}, initializers {self.init}. "
                "Example: words '<potter1> <potter2>', init '<rand-0.013> man'."
            )
        checks = [
            (self.rank >= 1, f"rank must be >= 1, found {self.rank}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, found {self.batch_size}"),
            (self.steps >= 0, f"steps must be >= 0 (0 = from images × repeats), found {self.steps}"),
            (self.repeats >= 1, f"repeats must be >= 1, found {self.repeats}"),
            (self.resolution >= 64 and self.resolution % 64 == 0,
             f"resolution must be a multiple of 64, found {self.resolution}"),
            (self.mode in MODES, f"mode must be one of {MODES}, found {self.mode!r}"),
            (self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}, found {self.precision!r}"),
            (self.crop in CROP_MODES, f"crop must be one of {CROP_MODES}, found {self.crop!r}"),
            (self.templates in TEMPLATE_SETS, f"templates must be one of {TEMPLATE_SETS}, found {self.templates!r}"),
            (self.orthogonal_slot >= 0, f"orthogonal_slot must be >= 0, found {self.orthogonal_slot}"),
            (min(self.lr_embedding, self.lr_text, self.lr_unet, self.weight_decay) >= 0,
             "learning rates and weight decay must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise TrainingConfigError(f"Training setting: {message}.")

    def total_steps(self, images: int) -> int:
        """Steps of the run: ``steps`` if set, else ceil(images × repeats / batch_size)."""
        return self.steps or max(1, math.ceil(images * self.repeats / self.batch_size))

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def differences(self, other: "TrainConfig", ignore: tuple[str, ...] = ()) -> dict[str, tuple]:
        """Fields whose values differ: name -> (self's, other's)."""
        a, b = asdict(self), asdict(other)
        return {k: (a[k], b[k]) for k in a if k not in ignore and a[k] != b[k]}
