"""A tiny SDXL-architecture checkpoint made in code (no download), for end-to-end runs on CPU.

The host's own SDXL classes at a fraction of the width: the SDXL UNet block layout (transformer depths
[0, 0, 2, 2, 10, 10], 10 in the middle: 70 cross-attention layers in 11 attention blocks, linear proj_in/out,
size and pooled-text ADM input), an SDXL CLIP with both encoders (CLIP-L 64 wide, CLIP-G 128 wide with a
text projection; context 64 + 128 = 192) and the SDXL tokenizers, and the tiny KL autoencoder. Weights are
seeded random: the plumbing, not image quality. ~20 M parameters in all.
"""
from __future__ import annotations

import os

import comfy.model_management
import comfy.model_patcher
import comfy.sd
import comfy.sd1_clip
import comfy.sdxl_clip
import comfy.supported_models
import comfy.supported_models_base
import folder_paths
import torch

from .model import build_vae, seeded_init

# 3 layers each: SDXL reads the penultimate hidden layer of both encoders
CLIP_L_CONFIG = os.path.join(os.path.dirname(__file__), "sdxl_clip_l_config.json")
CLIP_G_CONFIG = os.path.join(os.path.dirname(__file__), "sdxl_clip_g_config.json")
CLIP_L_WIDTH, CLIP_G_WIDTH, POOLED_WIDTH = 64, 128, 128
SIZE_CONDITIONING = 6 * 256  # SDXL's ADM: pooled text + 6 size/crop values embedded 256 wide each
UNET_CONFIG = dict(
    use_checkpoint=False, image_size=32, use_spatial_transformer=True, legacy=False,
    adm_in_channels=POOLED_WIDTH + SIZE_CONDITIONING, num_classes="sequential", in_channels=4, out_channels=4,
    model_channels=32, num_res_blocks=[2, 2, 2], channel_mult=[1, 2, 4],
    transformer_depth=[0, 0, 2, 2, 10, 10], transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10],
    transformer_depth_middle=10, use_linear_in_transformer=True, context_dim=CLIP_L_WIDTH + CLIP_G_WIDTH,
    use_temporal_resblock=False, use_temporal_attention=False,
)


class TinySDXL(comfy.supported_models.SDXL):
    """The host's SDXL config with 16-channel heads at the tiny widths."""

    unet_config = dict(comfy.supported_models.SDXL.unet_config, model_channels=32,
                       context_dim=CLIP_L_WIDTH + CLIP_G_WIDTH, adm_in_channels=POOLED_WIDTH + SIZE_CONDITIONING)
    unet_extra_config = {"num_heads": -1, "num_head_channels": 16}


class TinySDXLClipModel(comfy.sdxl_clip.SDXLClipModel):
    """SDXL's two text encoders as the host builds them (penultimate hidden layer, CLIP-G pooled through its
    projection), at the tiny widths."""

    def __init__(self, device="cpu", dtype=None, model_options={}):  # noqa: B006 (the host's signature)
        torch.nn.Module.__init__(self)
        self.clip_l = comfy.sd1_clip.SDClipModel(
            layer="hidden", layer_idx=-2, device=device, dtype=dtype, layer_norm_hidden_state=False,
            textmodel_json_config=CLIP_L_CONFIG, model_options=model_options)
        self.clip_g = comfy.sd1_clip.SDClipModel(
            layer="hidden", layer_idx=-2, device=device, dtype=dtype, layer_norm_hidden_state=False,
            textmodel_json_config=CLIP_G_CONFIG, special_tokens={"start": 49406, "end": 49407, "pad": 0},
            return_projected_pooled=True, model_options={**model_options, "model_name": "clip_g"})
        self.dtypes = {dtype}


class TinySDXLTokenizer(comfy.sdxl_clip.SDXLTokenizer):
    """SDXL's tokenizers with CLIP-G embeddings of the tiny width (for textual-inversion files)."""

    def __init__(self, embedding_directory=None, tokenizer_data={}):  # noqa: B006 (the host's signature)
        super().__init__(embedding_directory=embedding_directory, tokenizer_data=tokenizer_data)
        self.clip_l.embedding_size = CLIP_L_WIDTH
        self.clip_g.embedding_size = CLIP_G_WIDTH


def build_model(seed: int, std: float | None = 0.02):
    """The tiny SDXL UNet (an SDXL-family MODEL to the host: model_base.SDXL, SDXL latent format)."""
    config = TinySDXL(dict(UNET_CONFIG))
    config.set_inference_dtype(torch.float32, None)
    model = seeded_init(config.get_model({}), seed, std)
    return comfy.model_patcher.ModelPatcher(
        model, comfy.model_management.get_torch_device(), comfy.model_management.unet_offload_device()
    )


def build_clip(seed: int, std: float | None = 0.02):
    target = comfy.supported_models_base.ClipTarget(TinySDXLTokenizer, TinySDXLClipModel)
    clip = comfy.sd.CLIP(target, embedding_directory=folder_paths.get_folder_paths("embeddings"))
    seeded_init(clip.cond_stage_model, seed + 1, std)
    return clip


def build_testbed(seed: int = 0, std: float | None = 0.02):
    """(MODEL, CLIP, VAE) of the tiny random SDXL-architecture checkpoint."""
    return build_model(seed, std), build_clip(seed, std), build_vae(seed)


def build_controlnet(seed: int):
    """A ControlNet for the tiny SDXL UNet (same layout, size and pooled-text input), as stock
    ControlNetApplyAdvanced expects."""
    import comfy.cldm.cldm
    import comfy.controlnet

    config = {k: v for k, v in UNET_CONFIG.items() if k not in ("out_channels", "transformer_depth_output")}
    control = comfy.cldm.cldm.ControlNet(hint_channels=3, num_heads=-1, num_head_channels=16,
                                         dtype=torch.float32, **config)
    return comfy.controlnet.ControlNet(seeded_init(control, seed, std=0.05),
                                       load_device=comfy.model_management.get_torch_device())
