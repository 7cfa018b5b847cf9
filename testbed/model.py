"""The built-in default model: a tiny SD1-architecture checkpoint made in code (no download).

Same classes as SD1.5 (ComfyUI's UNet with the SD1.5 block layout and its 16 cross-attention
layers, an SD1 CLIP with the bundled tokenizer, a KL autoencoder) at a fraction of the width:
UNet 32 channels, text width 64, ~5 M parameters in all. ``build_testbed`` gives seeded random weights
(the plumbing, not image quality); ``load_trained`` reads the world-trained file made by
testbed/scripts/train_world_model.py, whose VAE decoder is wider than its encoder.
"""
from __future__ import annotations

import functools
import os

import comfy.ldm.models.autoencoder
import comfy.model_management
import comfy.model_patcher
import comfy.sd
import comfy.sd1_clip
import comfy.supported_models
import comfy.supported_models_base
import folder_paths
import torch

CLIP_CONFIG = os.path.join(os.path.dirname(__file__), "clip_config.json")
TEXT_WIDTH = 64
UNET_CONFIG = dict(
    use_checkpoint=False, image_size=32, use_spatial_transformer=True, legacy=False, adm_in_channels=None,
    in_channels=4, out_channels=4, model_channels=32, num_res_blocks=[2, 2, 2, 2], channel_mult=[1, 2, 2, 2],
    transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0], transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    transformer_depth_middle=1, use_linear_in_transformer=False, context_dim=TEXT_WIDTH,
    use_temporal_resblock=False, use_temporal_attention=False,
)
VAE_CONFIG = dict(double_z=True, z_channels=4, resolution=64, in_channels=3, out_ch=3, ch=32, ch_mult=[1, 1, 1, 1],
                  num_res_blocks=1, attn_resolutions=[], dropout=0.0)
DECODER_KEY = "mixofshow.vae_decoder"  # trained-file metadata: JSON of VAE_CONFIG changes for its decoder


class TinySD1(comfy.supported_models.SD15):
    """SD15 with 16-channel heads (SD15 itself forces 8 heads, too many for 32 channels)."""

    unet_config = dict(comfy.supported_models.SD15.unet_config, model_channels=32, context_dim=TEXT_WIDTH)
    unet_extra_config = {"num_heads": -1, "num_head_channels": 16}


def seeded_init(module: torch.nn.Module, seed: int, std: float | None = 0.02) -> torch.nn.Module:
    """Fill every parameter deterministically: norms 1/0, biases 0, other weights N(0, std²).

    ``std=None`` scales each matrix by 1/√fan_in instead (signals keep their size through the depth, so
    the output responds to every layer: what training tests need).
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.fill_(1.0)
            elif name.endswith("bias") or "norm" in name:
                p.zero_()
            else:
                scale = std if std is not None or p.dim() < 2 or "embedding" in name else p[0].numel() ** -0.5
                p.copy_(torch.randn(p.shape, generator=g) * (scale if scale is not None else 0.02))
    return module


def build_model(seed: int, std: float | None = 0.02, channels: int = 32):
    """The testbed UNet; ``channels``: its base width (a multiple of 32, GroupNorm's group count)."""
    if channels <= 0 or channels % 32:
        raise ValueError(f"UNet width must be a positive multiple of 32 (GroupNorm has 32 groups); got {channels}")
    config = TinySD1(dict(UNET_CONFIG, model_channels=channels))
    config.set_inference_dtype(torch.float32, None)
    model = seeded_init(config.get_model({}), seed, std)
    return comfy.model_patcher.ModelPatcher(
        model, comfy.model_management.get_torch_device(), comfy.model_management.unet_offload_device()
    )


def build_clip(seed: int, std: float | None = 0.02):
    encoder = functools.partial(
        comfy.sd1_clip.SD1ClipModel,
        clip_model=functools.partial(comfy.sd1_clip.SDClipModel, textmodel_json_config=CLIP_CONFIG),
    )
    target = comfy.supported_models_base.ClipTarget(comfy.sd1_clip.SD1Tokenizer, encoder)
    clip = comfy.sd.CLIP(target, embedding_directory=folder_paths.get_folder_paths("embeddings"))
    seeded_init(clip.cond_stage_model, seed + 1, std)
    return clip


def build_vae(seed: int, std: float | None = 0.02, state: dict | None = None, decoder: dict | None = None):
    """The testbed VAE: seeded random, or ``state``'s weights. ``decoder``: VAE_CONFIG changes for a decoder
    wider than the encoder (the world model's; ComfyUI's VAE builds both halves from one config)."""
    if state is None:
        autoencoder = comfy.ldm.models.autoencoder.AutoencoderKL(ddconfig=dict(VAE_CONFIG), embed_dim=4)
        state = seeded_init(autoencoder, seed + 2, std).state_dict()
    if not decoder:
        return comfy.sd.VAE(sd=state, config={"params": {"ddconfig": dict(VAE_CONFIG), "embed_dim": 4}})
    # ComfyUI's VAE needs decoder weights of VAE_CONFIG's shape: placeholders (never used), then the swap
    placeholder = {f"decoder.{k}": v for k, v in _bare_decoder(VAE_CONFIG).state_dict().items()}
    vae = comfy.sd.VAE(sd={**{k: v for k, v in state.items() if not k.startswith("decoder.")}, **placeholder},
                       config={"params": {"ddconfig": dict(VAE_CONFIG), "embed_dim": 4}})
    wide = _bare_decoder({**VAE_CONFIG, **decoder})
    wide.load_state_dict({k[len("decoder."):]: v for k, v in state.items() if k.startswith("decoder.")})
    vae.first_stage_model.decoder = wide.to(vae.vae_dtype).eval()
    vae.patcher.size = 0  # measured again, with the wide decoder
    if hasattr(vae, "size"):
        vae.size = None
    return vae


def build_decoder(config: dict, std: float | None = 0.02) -> torch.nn.Module:
    """A seeded VAE decoder of ``config`` (a ddconfig); ``std`` as in ``seeded_init``."""
    return seeded_init(_bare_decoder(config), 0, std)


def _bare_decoder(config: dict) -> torch.nn.Module:
    """A VAE decoder of ``config`` with uninitialised weights (ComfyUI's layers skip initialisation)."""
    import comfy.ldm.modules.diffusionmodules.model as blocks

    return blocks.Decoder(**config)


def build_testbed(seed: int = 0, std: float | None = 0.02):
    """(MODEL, CLIP, VAE) of the tiny random SD1-architecture checkpoint (``std``: see ``seeded_init``)."""
    return build_model(seed, std), build_clip(seed, std), build_vae(seed)


def checkpoint_state(model, clip, vae) -> dict[str, torch.Tensor]:
    """All weights of a testbed (MODEL, CLIP, VAE) under the prefixes unet., clip., vae."""
    parts = {"unet": model.model.diffusion_model, "clip": clip.cond_stage_model, "vae": vae.first_stage_model}
    return {f"{name}.{k}": v.detach().clone() for name, module in parts.items() for k, v in module.state_dict().items()}


def load_trained(path: str):
    """(MODEL, CLIP, VAE) of a trained testbed file written by testbed/scripts/train_world_model.py (the
    UNet's width is read from its first convolution)."""
    import json

    import safetensors
    import safetensors.torch

    state = safetensors.torch.load_file(path)
    with safetensors.safe_open(path, "pt") as f:
        decoder = json.loads((f.metadata() or {}).get(DECODER_KEY, "{}"))
    parts = {p: {k[len(p) + 1:]: v.float() for k, v in state.items() if k.startswith(p + ".")}
             for p in ("unet", "clip", "vae")}
    with torch.no_grad():  # the CLIP constructor writes into its weights
        model = build_model(0, channels=parts["unet"]["input_blocks.0.0.weight"].shape[0])
        clip = build_clip(0)
        model.model.diffusion_model.load_state_dict(parts["unet"], strict=True)
        clip.cond_stage_model.load_state_dict(parts["clip"], strict=True)
        return model, clip, build_vae(0, state=parts["vae"], decoder=decoder)


def build_controlnet(seed: int):
    """A ControlNet for the tiny UNet (same layout), as stock ControlNetApplyAdvanced expects."""
    import comfy.cldm.cldm
    import comfy.controlnet

    config = {k: v for k, v in UNET_CONFIG.items() if k not in ("out_channels", "transformer_depth_output")}
    control = comfy.cldm.cldm.ControlNet(hint_channels=3, num_heads=-1, num_head_channels=16,
                                         dtype=torch.float32, **config)
    return comfy.controlnet.ControlNet(seeded_init(control, seed, std=0.05),
                                       load_device=comfy.model_management.get_torch_device())
