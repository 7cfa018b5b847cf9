"""Configuration dataclasses; node inputs take their defaults from here (one source of truth)."""
from __future__ import annotations

from dataclasses import dataclass

FUSION_MODES = ("closed_form", "lbfgs", "average")
FUSION_ANCHORS = ("average", "base")
FUSION_TEXT_INPUTS = ("own", "fused")
FUSION_KV_TARGETS = ("official", "own_model")


@dataclass
class FusionConfig:
    """Gradient fusion settings (spec §2).

    Attributes:
        mode: "closed_form" (exact, from Gram statistics), "lbfgs" (the paper's solver on stored
            features; memory grows with concepts and resolution) or "average" (weight fusion baseline).
        text_iters: L-BFGS iterations for text-encoder layers (paper: 500).
        kv_iters: L-BFGS iterations for cross-attention K/V (official code: 500).
        spatial_iters: L-BFGS iterations for the other UNet attention layers (paper: 50).
        ridge: Tikhonov weight λ of the text-encoder and cross-attention K/V layers, as a fraction of tr(G)/d.
            0 = the exact minimum-change solution, which can extrapolate wildly along directions the features
            barely cover (ill-conditioned G). Measured (benchmarks/bench_fusion_safety.py, SD1.5 shape, three
            concepts): at 1e-3 each concept's own K/V outputs are kept to 4.8e-5 relative, and on prompts
            without concept words no layer moves more than the strongest concept alone moves it (0.71, 0.94).
        spatial_ridge: the same for the other UNet attention layers, whose features come from sampling and are
            far less spread: below 0.1 the fused layers move ordinary prompts 1.3-3.4x as far as any concept
            alone (held-out 0.87 at 0.1, own-prompt error 0.19 against averaging's 0.32).
        anchor: what the ridge pulls toward: "base" (W₀, no change) or "average" (the weight average of the
            concepts' changes). Measured the same on own prompts and slightly less safe off them (0.94-0.96
            against 0.87-0.94), so "base" is the default.
        steps: sampling steps whose UNet features are collected per concept (paper: 20).
        resolution: image side in pixels for feature collection (paper: 512).
        seed: seed of the feature-collection sampling noise (deterministic fusion).
        text_inputs: which inputs the text-encoder layers are fitted on: "own" (the official scheme: each layer on
            the inputs the concept's own encoder gives it, all layers at once) or "fused" (layer by layer in forward
            order, on the inputs the already-fused earlier layers give, to reproduce the concept's own layer on its
            own inputs; closed form only). benchmarks/bench_fusion_text_inputs.py measures both end to end: on the
            SD1.5 shape "fused" fits the text stage 5x slower and moves prompts without concept words further than
            any concept alone (held-out 1.6), so "own" stays the default.
        kv_targets: what the cross-attention K/V layers reproduce on the fused encoder's contexts at each concept's
            tokens: "official" (the concept's K/V change applied to those contexts) or "own_model" (the concept's
            own model's keys/values: its own encoder's contexts through W₀ + its change, so the K/V layers also
            absorb what the fused text encoder gets wrong; closed form only). Default "own_model": on the SD1.5 shape
            with 3 large random concepts at ridge 1e-3 its keys/values at each concept's tokens are 7.7e-5 from the
            concept's own model end to end, against 0.41 for "official", with prompts without concept words moved
            0.77 of the strongest concept's own move (official 0.73), and the K/V stage takes 1.2 s against 9.7 s.
        accumulate_fp64: accumulate Gram statistics in float64. Off (default): float32, half the memory and about
            half the statistics + solve time, with the same own-prompt and held-out numbers to three digits at
            every ridge >= FP32_MIN_RIDGE (bench_fusion_safety.py --fp32); a stage whose ridge is below it
            accumulates in float64 anyway, since float32 rounding is amplified there (own error 1-8).
    """

    mode: str = "closed_form"
    text_iters: int = 500
    kv_iters: int = 500
    spatial_iters: int = 50
    ridge: float = 1e-3
    spatial_ridge: float = 0.1
    anchor: str = "base"
    steps: int = 20
    resolution: int = 512
    seed: int = 0
    accumulate_fp64: bool = False
    text_inputs: str = "own"
    kv_targets: str = "own_model"

    def __post_init__(self) -> None:
        if self.mode not in FUSION_MODES:
            raise ValueError(f"FusionConfig.mode must be one of {FUSION_MODES}, found {self.mode!r}.")
        if self.resolution < 64 or self.resolution % 8:
            raise ValueError(f"FusionConfig.resolution must be a multiple of 8 and >= 64, found {self.resolution}.")
        if self.steps < 1:
            raise ValueError(f"FusionConfig.steps must be >= 1, found {self.steps}.")
        if self.anchor not in FUSION_ANCHORS:
            raise ValueError(f"FusionConfig.anchor must be one of {FUSION_ANCHORS}, found {self.anchor!r}.")
        if self.text_inputs not in FUSION_TEXT_INPUTS:
            raise ValueError(f"FusionConfig.text_inputs must be one of {FUSION_TEXT_INPUTS}, found "
                             f"{self.text_inputs!r}.")
        if self.kv_targets not in FUSION_KV_TARGETS:
            raise ValueError(f"FusionConfig.kv_targets must be one of {FUSION_KV_TARGETS}, found {self.kv_targets!r}.")
        if self.ridge < 0 or self.spatial_ridge < 0:
            raise ValueError(f"FusionConfig ridges must be >= 0, found {self.ridge} and {self.spatial_ridge}.")


FP32_MIN_RIDGE = 1e-4  # below this a stage's statistics are float64 whatever accumulate_fp64 says

# The official fusion prompts (spec §2.1): every concept is encoded with these, words filled in.
FUSION_TEXT_TEMPLATES = ("photo of a {}", "{}")
FUSION_SAMPLE_TEMPLATE = "photo of a {}"
# Prompts without concept words on which the fusion report measures how far the fused model moves ordinary prompts.
FUSION_HELD_OUT_PROMPTS = (
    "a photo of a dog running on the beach", "a red car parked in front of a house", "portrait of an old man, studio",
    "a bowl of fruit on a wooden table", "mountains at sunset, landscape painting", "a city street at night, rain",
    "a woman reading in a library", "two children playing football",
)
