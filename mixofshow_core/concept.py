"""An ED-LoRA concept: layer-wise word embeddings plus text-encoder and UNet LoRA (spec §1.1-§1.3).

Each concept word (e.g. ``<potter1>``) owns one embedding row per UNet attention block, shape ``[L, D]``
(SD1.x: L = 16, D = 768; SDXL: L = 11, D = 768 + 1280); row ``l`` is what the cross-attention layers of
block ``l`` see in place of the word, blocks counted down -> mid -> up. With two text encoders (SDXL) a row
is both encoders' token embeddings side by side, CLIP-L first, in the order their outputs form the context.
LoRA factors are keyed by diffusers module names (``text_model.encoder.layers.0.self_attn.q_proj``,
``down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q``); modules of the second text encoder carry
the prefix ``text_encoder_2.`` (``text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from .errors import ConceptFileError, ConceptWordError
from .lora import LayerDelta

WORD_PATTERN = re.compile(r"^\S+$")
FAMILY_BY_TEXT_WIDTH = {768: "sd1", 1024: "sd2", 2048: "sdxl"}
SDXL_ENCODERS = [("clip_l", 768), ("clip_g", 1280)]
TEXT_ENCODER_2 = "text_encoder_2."  # text_lora key prefix of the second text encoder (SDXL's CLIP-G)
FAMILY_NAMES = {"sd1": "SD1.x", "sd2": "SD2.x", "sdxl": "SDXL"}


def family_for_text_width(width: int) -> str:
    """Name the base family a text width belongs to ("sd1", "sd2", "sdxl"), or "unknown-<width>"."""
    return FAMILY_BY_TEXT_WIDTH.get(width, f"unknown-{width}")


def split_text_module(module: str) -> tuple[int, str]:
    """(text encoder index, module name inside it) of a text_lora key: 0 for the first encoder, 1 for SDXL's
    CLIP-G (prefix ``text_encoder_2.``)."""
    if module.startswith(TEXT_ENCODER_2):
        return 1, module[len(TEXT_ENCODER_2):]
    return 0, module


@dataclass
class Concept:
    """Words, their per-layer embeddings and the LoRA deltas of one trained concept.

    Attributes:
        words: concept words in prompt order, e.g. ["<potter1>", "<potter2>"].
        embeddings: word -> fp32 tensor [L, D], row l for cross-attention layer l.
        text_lora: diffusers text-encoder module name -> LoRAPair.
        unet_lora: diffusers UNet module name -> LoRAPair.
        alpha: delta scale as in the official code (alpha, not alpha/rank).
        name: display name (defaults to the words joined by a space).
        base_family: "sd1", "sd2", "sdxl"; when not given, "sdxl" for CLIP-L + CLIP-G encoders, else derived
            from the text width.
        word_groups: which words form one concept (a fused bundle holds several); default [words].
        triggers: for a standard (kohya, diffusers, LyCORIS) LoRA made into a concept, its trigger phrases, e.g.
            ["hatsune miku"]: plain prompt text the LoRA was trained on. Such a concept has no ``words`` and no
            embeddings, names its ``text_encoders``, and may key UNet modules by LDM name
            (``input_blocks.4.1.transformer_blocks.0.attn1.to_q``, ``input_blocks.1.0.in_layers.2``).
        other_changes: for a standard LoRA, the changes that are not a layer's weight matrix (biases, norm scales;
            ComfyUI's Train LoRA writes them as ``.diff_b`` / 1-D ``.diff``), by the host's parameter key, e.g.
            ``diffusion_model.input_blocks.1.0.emb_layers.1.bias`` -> dense [shape of that parameter], strength
            included. Fusion weight-averages them.
        orthogonal: for Orthogonal Adaptation concepts, {"basis", "slot", "scale", "rank"}; else {}.
        text_encoders: [(name, width)] of the text encoders whose token embeddings make up a row, in row
            order, e.g. [("clip_l", 768), ("clip_g", 1280)]; widths sum to D. Default: SDXL's two for D = 2048,
            SD2's "clip_h" for 1024, else one "clip_l" of width D.
    """

    words: list[str]
    embeddings: dict[str, torch.Tensor]
    text_lora: dict[str, LayerDelta] = field(default_factory=dict)
    unet_lora: dict[str, LayerDelta] = field(default_factory=dict)
    alpha: float = 1.0
    name: str = ""
    base_family: str = ""
    word_groups: list[list[str]] = field(default_factory=list)
    orthogonal: dict = field(default_factory=dict)
    text_encoders: list[tuple[str, int]] = field(default_factory=list)
    triggers: list[str] = field(default_factory=list)
    other_changes: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.words and not self.triggers:
            raise ConceptWordError("A concept needs at least one word (e.g. '<potter1>') or, for a standard LoRA, a "
                                   "trigger phrase; found none.")
        self.triggers = [" ".join(t.split()) for t in self.triggers]
        if any(not t for t in self.triggers) or (self.triggers and self.words):
            raise ConceptWordError(f"Trigger phrases {self.triggers} must be non-empty text, on a concept without "
                                   f"layer-wise words (found words {self.words}).")
        if self.triggers and not self.text_encoders:
            raise ConceptFileError("A concept made from a standard LoRA has no embeddings to tell its text width: "
                                   "give its text_encoders.")
        for word in self.words:
            if not WORD_PATTERN.match(word):
                raise ConceptWordError(
                    f"Concept word {word!r} contains white space or is empty; words are single tokens "
                    "such as '<potter1>'. Rename the word."
                )
        if len(set(self.words)) != len(self.words):
            raise ConceptWordError(f"Concept words repeat: {self.words}; each word must be unique.")
        missing = [w for w in self.words if w not in self.embeddings]
        extra = [w for w in self.embeddings if w not in self.words]
        if missing or extra:
            raise ConceptFileError(
                f"Embeddings do not match the word list {self.words}: missing {missing}, unexpected {extra}."
            )
        shapes = {tuple(t.shape) for t in self.embeddings.values()}
        if self.words and (len(shapes) != 1 or len(next(iter(shapes))) != 2):
            raise ConceptFileError(
                f"Every word embedding must be [layers, text_width] with one shared shape; found {sorted(shapes)}."
            )
        for name, pair in {**self.text_lora, **self.unet_lora}.items():
            pair.check(name)
        if not self.name:
            self.name = " ".join(self.words) or ", ".join(self.triggers)
        if not self.word_groups and self.words:
            self.word_groups = [list(self.words)]
        grouped = [w for g in self.word_groups for w in g]
        if sorted(grouped) != sorted(self.words):
            raise ConceptFileError(f"word_groups {self.word_groups} must cover the words {self.words} exactly once.")
        if not self.text_encoders:
            both = self.text_width == sum(w for _, w in SDXL_ENCODERS)
            one = "clip_h" if self.text_width == 1024 else "clip_l"
            self.text_encoders = list(SDXL_ENCODERS) if both else [(one, self.text_width)]
        self.text_encoders = [(str(n), int(w)) for n, w in self.text_encoders]
        if sum(w for _, w in self.text_encoders) != self.text_width:
            raise ConceptFileError(
                f"Text encoders {self.text_encoders} add up to width {sum(w for _, w in self.text_encoders)}, but the "
                f"embeddings are {self.text_width} wide; the encoder widths must add up to the embedding width.")
        if not self.base_family:
            sdxl = [n for n, _ in self.text_encoders] == [n for n, _ in SDXL_ENCODERS]
            self.base_family = "sdxl" if sdxl else family_for_text_width(self.text_width)
        second = sorted(m for m in self.text_lora if split_text_module(m)[0] >= len(self.text_encoders))
        if second:
            raise ConceptFileError(
                f"Text-encoder LoRA modules {second[:6]} belong to a second text encoder, but the concept has only "
                f"{[n for n, _ in self.text_encoders]}.")

    @property
    def layer_count(self) -> int:
        """L, the number of cross-attention layers the embeddings were trained for (0 without embeddings)."""
        return int(next(iter(self.embeddings.values())).shape[0]) if self.embeddings else 0

    @property
    def text_width(self) -> int:
        """D, the text-encoder hidden size."""
        if not self.embeddings:
            return sum(w for _, w in self.text_encoders)
        return int(next(iter(self.embeddings.values())).shape[1])

    @property
    def prompt_text(self) -> str:
        """How prompts name the concept: its words ("<potter1> <potter2>") or its trigger phrases."""
        return " ".join(self.words) if self.words else ", ".join(self.triggers)

    @property
    def rank(self) -> int:
        """Largest LoRA rank in the concept (0 for an embedding-only concept; full changes count 0)."""
        ranks = [p.rank for p in {**self.text_lora, **self.unet_lora}.values()]
        return max(ranks, default=0)

    def encoder_rows(self, word: str) -> dict[str, torch.Tensor]:
        """A word's rows split by text encoder: name -> [L, width] (SD1.x: {"clip_l": all of it})."""
        parts = self.embeddings[word].split([w for _, w in self.text_encoders], dim=1)
        return {name: part for (name, _), part in zip(self.text_encoders, parts)}

    def embedding_stack(self) -> torch.Tensor:
        """All word embeddings stacked in word order, shape [n_words, L, D]."""
        return torch.stack([self.embeddings[w] for w in self.words])  # (W, L, D)


def rename_words(concept: Concept, new_words: list[str]) -> Concept:
    """The same concept under other words (same order); e.g. to resolve a clash between two concepts."""
    if len(new_words) != len(concept.words):
        raise ConceptWordError(
            f"Concept '{concept.name}' has {len(concept.words)} words {concept.words}; give exactly that many new "
            f"words, found {new_words}."
        )
    mapping = dict(zip(concept.words, new_words))
    return Concept(
        words=list(new_words),
        embeddings={mapping[w]: t for w, t in concept.embeddings.items()},
        text_lora=concept.text_lora,
        unet_lora=concept.unet_lora,
        alpha=concept.alpha,
        name=" ".join(new_words),
        base_family=concept.base_family,
        word_groups=[[mapping[w] for w in g] for g in concept.word_groups],
        orthogonal=dict(concept.orthogonal),
        text_encoders=list(concept.text_encoders),
    )
