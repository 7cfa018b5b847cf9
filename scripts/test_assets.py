"""Generated model files for tests and benchmarks (nothing can be downloaded on our machines).

* ``sd15_checkpoint``: a full-size SD1.5-shaped checkpoint (real key layout, UNet 860 M and CLIP-L
  123 M parameters, TAESD VAE) with seeded random fp16 weights, cached by version.
* ``sdxl_checkpoint``: a full-size SDXL checkpoint (the single-file layout ComfyUI's Save Checkpoint writes: UNet
  2.57 B, CLIP-L 123 M and OpenCLIP-G 695 M parameters, TAESD VAE) with seeded random fp16 weights (6.8 GB).
* ``official_edlora_checkpoint``: a ``.pth`` laid out exactly as the original Mix-of-Show code saves
  one (spec §1.9, main or research branch), written from the spec's table, independently of the pack's
  own code.
"""
from __future__ import annotations

import os

import torch
from safetensors.torch import save_file

ASSET_VERSION = "sd15-random-v1"
# spec §0.1: the 16 attention blocks of SD1.5 with their channel width, in layer order
SD15_ATTENTION_BLOCKS = (
    [("down_blocks.0.attentions.0", 320), ("down_blocks.0.attentions.1", 320),
     ("down_blocks.1.attentions.0", 640), ("down_blocks.1.attentions.1", 640),
     ("down_blocks.2.attentions.0", 1280), ("down_blocks.2.attentions.1", 1280),
     ("mid_block.attentions.0", 1280)]
    + [(f"up_blocks.1.attentions.{j}", 1280) for j in range(3)]
    + [(f"up_blocks.2.attentions.{j}", 640) for j in range(3)]
    + [(f"up_blocks.3.attentions.{j}", 320) for j in range(3)]
)
SD15_UNET = dict(
    use_checkpoint=False, image_size=32, use_spatial_transformer=True, legacy=False, adm_in_channels=None,
    in_channels=4, out_channels=4, model_channels=320, num_res_blocks=[2, 2, 2, 2], channel_mult=[1, 2, 4, 4],
    transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0], transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    transformer_depth_middle=1, use_linear_in_transformer=False, context_dim=768,
    use_temporal_resblock=False, use_temporal_attention=False,
)


def _random_like(shapes: dict[str, torch.Size], seed: int, prefix: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in shapes.items():
        if "norm" in name and name.endswith("weight"):
            t = torch.ones(shape)
        elif name.endswith("bias") or "norm" in name or "position_ids" in name:
            t = torch.zeros(shape)
        else:
            t = torch.randn(shape, generator=g) * 0.02
        out[prefix + name] = t.to(torch.float16)
    return out


def sd15_checkpoint(cache_dir: str, seed: int = 0) -> str:
    """Path of the full-size random SD1.5-shaped checkpoint, generated once (needs ComfyUI imported)."""
    path = os.path.join(cache_dir, f"{ASSET_VERSION}-s{seed}.safetensors")
    if os.path.exists(path):
        return path
    import comfy.sd1_clip
    import comfy.supported_models
    import comfy.taesd.taesd

    unet = comfy.supported_models.SD15(dict(SD15_UNET)).get_model({}, device="meta")
    shapes = {k: v.shape for k, v in unet.diffusion_model.state_dict().items()}
    tensors = _random_like(shapes, seed, "model.diffusion_model.")
    with torch.inference_mode():
        clip = comfy.sd1_clip.SDClipModel(device="meta")
    # real SD1.5 files carry only text_model.* (no projection); the host fills the rest
    shapes = {k: v.shape for k, v in clip.transformer.state_dict().items() if k.startswith("text_model.")}
    tensors.update(_random_like(shapes, seed + 1, "cond_stage_model.transformer."))
    taesd = comfy.taesd.taesd.TAESD()
    tensors.update(_random_like({k: v.shape for k, v in taesd.state_dict().items()}, seed + 2, "first_stage_model."))
    os.makedirs(cache_dir, exist_ok=True)
    tmp = path + ".part"
    save_file(tensors, tmp)
    os.replace(tmp, path)
    return path


def attention_blocks(model_channels: int, channel_mult=(1, 2, 4, 4)) -> list[tuple[str, int]]:
    """The spec §0.1 table for an SD1-layout UNet of another width: (diffusers attention block, channels).

    Down levels 0-2 hold two attention blocks each, then the middle block, then up levels 1-3 three each
    (up level u mirrors down level 3 - u); ``attention_blocks(320)`` is SD15_ATTENTION_BLOCKS.
    """
    width = [model_channels * m for m in channel_mult]
    down = [(f"down_blocks.{level}.attentions.{j}", width[level]) for level in range(3) for j in range(2)]
    up = [(f"up_blocks.{u}.attentions.{j}", width[3 - u]) for u in range(1, 4) for j in range(3)]
    return down + [("mid_block.attentions.0", width[-1])] + up


def official_edlora_checkpoint(path: str, words=("<potter1>", "<potter2>"), seed: int = 0, layers: int = 16,
                               width: int = 768, research_keys: bool = False, research_modules: bool = False,
                               conv_proj: bool = True, blocks=None, text_layers: int = 12,
                               text_mlp: int | None = None) -> str:
    """Write a checkpoint with the original code's exact keys and shapes (random values).

    Default: the main branch's layout (spec §1.9). ``research_keys``: the research branch's key names
    (``<module>_lora.down.weight``). ``research_modules``: the research branch's wider targets
    (``where: Transformer2DModel`` / ``CLIPEncoderLayer``): besides attention, each transformer's
    ``proj_in``/``proj_out`` (1x1 convolutions on SD1.5: factors ``[r, c, 1, 1]`` / ``[c, r, 1, 1]``;
    ``conv_proj=False`` gives the linear ones of SD2/SDXL), its feed-forward ``ff.net.0.proj`` (GEGLU,
    c -> 8c) and ``ff.net.2`` (4c -> c), and the text encoder's ``mlp.fc1``/``mlp.fc2`` (width <->
    ``text_mlp``, default 4 * width). ``blocks``: (attention block, channels), default SD1.5's;
    ``text_layers``: text-encoder layers (12 for CLIP-L).
    """
    g = torch.Generator().manual_seed(seed)
    blocks = SD15_ATTENTION_BLOCKS if blocks is None else blocks
    text_mlp = 4 * width if text_mlp is None else text_mlp
    down_end, up_end = ("_lora.down.weight", "_lora.up.weight") if research_keys else (".lora_down.weight",
                                                                                       ".lora_up.weight")

    def lora(out: dict, module: str, fan_in: int, fan_out: int, conv: bool = False) -> None:
        kernel = (1, 1) if conv else ()
        out[module + down_end] = torch.randn(4, fan_in, *kernel, generator=g) * 0.02  # (r, in[, 1, 1])
        out[module + up_end] = torch.randn(fan_out, 4, *kernel, generator=g) * 0.02  # (out, r[, 1, 1])

    emb = {w: torch.randn(layers, width, generator=g) * 0.3 for w in words}  # (16, 768)
    text = {}
    for i in range(text_layers):
        for p in ("q_proj", "k_proj", "v_proj", "out_proj"):
            lora(text, f"text_model.encoder.layers.{i}.self_attn.{p}", width, width)
        if research_modules:
            lora(text, f"text_model.encoder.layers.{i}.mlp.fc1", width, text_mlp)
            lora(text, f"text_model.encoder.layers.{i}.mlp.fc2", text_mlp, width)
    unet = {}
    for block, channels in blocks:
        if research_modules:
            lora(unet, f"{block}.proj_in", channels, channels, conv=conv_proj)
        for attn in ("attn1", "attn2"):
            for p in ("to_q", "to_k", "to_v", "to_out.0"):
                fan_in = width if attn == "attn2" and p in ("to_k", "to_v") else channels
                lora(unet, f"{block}.transformer_blocks.0.{attn}.{p}", fan_in, channels)
        if research_modules:
            lora(unet, f"{block}.transformer_blocks.0.ff.net.0.proj", channels, 8 * channels)
            lora(unet, f"{block}.transformer_blocks.0.ff.net.2", 4 * channels, channels)
            lora(unet, f"{block}.proj_out", channels, channels, conv=conv_proj)
    torch.save({"params": {"new_concept_embedding": emb, "text_encoder": text, "unet": unet}}, path)
    return path


SDXL_UNET = dict(
    use_checkpoint=False, image_size=32, use_spatial_transformer=True, legacy=False, adm_in_channels=2816,
    num_classes="sequential", in_channels=4, out_channels=4, model_channels=320, num_res_blocks=[2, 2, 2],
    channel_mult=[1, 2, 4], transformer_depth=[0, 0, 2, 2, 10, 10], transformer_depth_output=[0, 0, 0, 2, 2, 2, 10,
                                                                                              10, 10],
    transformer_depth_middle=10, use_linear_in_transformer=True, context_dim=2048, num_head_channels=64,
    use_temporal_resblock=False, use_temporal_attention=False,
)


def sdxl_checkpoint(cache_dir: str, seed: int = 0) -> str:
    """Path of the full-size random SDXL checkpoint, generated once (needs ComfyUI imported). The text encoders are
    written through the host's own SDXL saving conversion (OpenCLIP-G keys), as Save Checkpoint writes them."""
    path = os.path.join(cache_dir, f"sdxl-random-v1-s{seed}.safetensors")
    if os.path.exists(path):
        return path
    import comfy.sdxl_clip
    import comfy.supported_models
    import comfy.taesd.taesd

    config = comfy.supported_models.SDXL(dict(SDXL_UNET))
    unet = config.get_model({}, device="meta")
    tensors = _random_like({k: v.shape for k, v in unet.diffusion_model.state_dict().items()}, seed,
                           "model.diffusion_model.")
    with torch.inference_mode():
        clip = comfy.sdxl_clip.SDXLClipModel(device="meta")
    shapes = {k: v.shape for k, v in clip.state_dict().items() if ".text_model." in k or "text_projection" in k}
    tensors.update(config.process_clip_state_dict_for_saving(_random_like(shapes, seed + 1, "")))
    taesd = comfy.taesd.taesd.TAESD()
    tensors.update(_random_like({k: v.shape for k, v in taesd.state_dict().items()}, seed + 2, "first_stage_model."))
    os.makedirs(cache_dir, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, path + ".part")
    os.replace(path + ".part", path)
    return path


def sd15_controlnet(cache_dir: str, seed: int = 0) -> str:
    """A full-size SD1.5 ControlNet checkpoint (random fp16 weights, the real key layout), generated once."""
    path = os.path.join(cache_dir, f"controlnet-sd15-random-v1-s{seed}.safetensors")
    if os.path.exists(path):
        return path
    import comfy.cldm.cldm

    config = {k: v for k, v in SD15_UNET.items() if k not in ("out_channels", "transformer_depth_output")}
    control = comfy.cldm.cldm.ControlNet(hint_channels=3, num_heads=8, num_head_channels=-1, device="meta", **config)
    tensors = _random_like({k: v.shape for k, v in control.state_dict().items()}, seed, "control_model.")
    os.makedirs(cache_dir, exist_ok=True)
    save_file(tensors, path + ".part")
    os.replace(path + ".part", path)
    return path


def sdxl_controlnet(cache_dir: str, seed: int = 0) -> str:
    """A full-size SDXL ControlNet checkpoint (random fp16 weights, the LDM key layout of e.g. OpenPoseXL2: 1.25 B
    parameters), generated once."""
    path = os.path.join(cache_dir, f"controlnet-sdxl-random-v1-s{seed}.safetensors")
    if os.path.exists(path):
        return path
    import comfy.cldm.cldm

    config = {k: v for k, v in SDXL_UNET.items() if k not in ("out_channels", "transformer_depth_output")}
    control = comfy.cldm.cldm.ControlNet(hint_channels=3, num_heads=-1, device="meta", **config)
    tensors = _random_like({k: v.shape for k, v in control.state_dict().items()}, seed, "control_model.")
    os.makedirs(cache_dir, exist_ok=True)
    save_file(tensors, path + ".part")
    os.replace(path + ".part", path)
    return path


def sdxl_concept(path: str, words=("<alice1>", "<alice2>"), seed: int = 0) -> str:
    """A random ED-LoRA concept for the full-size SDXL layout (11 rows of 768 + 1280, rank-4 LoRA on both text
    encoders' and all 70 transformers' attention), written from the format-2 table in docs/design.md (not with
    the pack's writer)."""
    import json

    g = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for i, _ in enumerate(words):
        tensors[f"embedding.clip_l.{i}"] = torch.randn(11, 768, generator=g) * 0.02
        tensors[f"embedding.clip_g.{i}"] = torch.randn(11, 1280, generator=g) * 0.02

    def lora(key: str, fan_in: int, fan_out: int) -> None:
        tensors[f"{key}.lora_down.weight"] = torch.randn(4, fan_in, generator=g) * fan_in ** -0.5
        tensors[f"{key}.lora_up.weight"] = torch.randn(fan_out, 4, generator=g) * 0.01

    for part, layers, width in (("text_encoder", 12, 768), ("text_encoder_2", 32, 1280)):
        for i in range(layers):
            for p in ("q", "k", "v", "out"):
                lora(f"{part}.text_model.encoder.layers.{i}.self_attn.{p}_proj", width, width)
    # SDXL's attention blocks (diffusers names) with their width and transformer depth
    blocks = [("down_blocks.1.attentions.0", 640, 2), ("down_blocks.1.attentions.1", 640, 2),
              ("down_blocks.2.attentions.0", 1280, 10), ("down_blocks.2.attentions.1", 1280, 10),
              ("mid_block.attentions.0", 1280, 10)]
    blocks += [(f"up_blocks.0.attentions.{j}", 1280, 10) for j in range(3)]
    blocks += [(f"up_blocks.1.attentions.{j}", 640, 2) for j in range(3)]
    for block, c, depth in blocks:
        for k in range(depth):
            for attn, context in (("attn1", c), ("attn2", 2048)):
                prefix = f"unet.{block}.transformer_blocks.{k}.{attn}"
                lora(f"{prefix}.to_q", c, c)
                lora(f"{prefix}.to_k", context, c)
                lora(f"{prefix}.to_v", context, c)
                lora(f"{prefix}.to_out.0", c, c)
    metadata = {"mixofshow.format": "edlora", "mixofshow.format_version": "2", "mixofshow.base_family": "sdxl",
                "mixofshow.layer_count": "11", "mixofshow.text_width": "2048",
                "mixofshow.words": json.dumps(list(words)),
                "mixofshow.rank": "4", "mixofshow.alpha": "1.0", "mixofshow.name": " ".join(words),
                "mixofshow.word_groups": json.dumps([list(words)]),
                "mixofshow.text_encoders": json.dumps([["clip_l", 768], ["clip_g", 1280]]),
                "mixofshow.layer_granularity": "attention_block"}
    save_file(tensors, path + ".part", metadata)
    os.replace(path + ".part", path)
    return path


def kohya_lora(path: str, sdxl: bool, trigger: str, seed: int = 0) -> str:
    """A random kohya LoRA (rank 4, alpha 4) for the full-size SD1.5 or SDXL layout: both text encoders' and every
    transformer's attention, under the names sd-scripts writes (SD1: ``lora_unet_<diffusers>``, ``lora_te_``; SDXL:
    ``lora_unet_<LDM>``, ``lora_te1_``, ``lora_te2_``), with a kohya dataset folder naming ``trigger``."""
    import json

    g = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}

    def lora(key: str, fan_in: int, fan_out: int) -> None:
        tensors[f"{key}.lora_down.weight"] = torch.randn(4, fan_in, generator=g) * fan_in ** -0.5
        tensors[f"{key}.lora_up.weight"] = torch.randn(fan_out, 4, generator=g) * 0.01
        tensors[f"{key}.alpha"] = torch.tensor(4.0)

    encoders = (("lora_te1_", 12, 768), ("lora_te2_", 32, 1280)) if sdxl else (("lora_te_", 12, 768),)
    for prefix, layers, width in encoders:
        for i in range(layers):
            for p in ("q", "k", "v", "out"):
                lora(f"{prefix}text_model_encoder_layers_{i}_self_attn_{p}_proj", width, width)
    if sdxl:  # LDM names: (block, width, transformer depth)
        blocks = [("input_blocks_4_1", 640, 2), ("input_blocks_5_1", 640, 2), ("input_blocks_7_1", 1280, 10),
                  ("input_blocks_8_1", 1280, 10), ("middle_block_1", 1280, 10)]
        blocks += [(f"output_blocks_{b}_1", 1280 if b < 3 else 640, 10 if b < 3 else 2) for b in range(6)]
    else:
        blocks = [(name.replace(".", "_"), c, 1) for name, c in SD15_ATTENTION_BLOCKS]
    context = 2048 if sdxl else 768
    for block, c, depth in blocks:
        for k in range(depth):
            for attn, fan_in in (("attn1", c), ("attn2", context)):
                prefix = f"lora_unet_{block}_transformer_blocks_{k}_{attn}"
                lora(f"{prefix}_to_q", c, c)
                lora(f"{prefix}_to_k", fan_in, c)
                lora(f"{prefix}_to_v", fan_in, c)
                lora(f"{prefix}_to_out_0", c, c)
    metadata = {"ss_network_module": "networks.lora", "ss_network_dim": "4", "ss_network_alpha": "4.0",
                "ss_base_model_version": "sdxl_base_v1-0" if sdxl else "sd_v1",
                "ss_tag_frequency": json.dumps({f"10_{trigger}": {trigger: 10, "solo": 8}})}
    save_file(tensors, path + ".part", metadata)
    os.replace(path + ".part", path)
    return path


# What a workflow's loaders read, for the stand-ins the as-opened test and the thumbnails place under their names.
WORKFLOW_MODEL_FOLDERS = {"CheckpointLoaderSimple": "checkpoints", "ControlNetLoader": "controlnet",
                          "EDLoRALoader": "edloras", "LoRAAsConcept": "loras", "LoraLoader": "loras",
                          "CreateHookLora": "loras"}
SDXL_CHECKPOINTS = {"Illustrious-XL-v0.1.safetensors"}  # the SDXL example workflows' checkpoint


def workflow_is_sdxl(workflow: dict) -> bool:
    return any(n["type"] == "CheckpointLoaderSimple" and n["widgets_values"][0] in SDXL_CHECKPOINTS
               for n in workflow["nodes"])


def place_stand_in(node_type: str, target: str, sdxl: bool, cache_dir: str) -> None:
    """The generated stand-in for the model file a ``node_type`` loader names, at ``target`` (its name): the
    full-size random SD1.5 or SDXL checkpoint or ControlNet (linked), a kohya LoRA (trigger: its stem), or a
    concept with the words ``<stem1> <stem2>`` the prompts use (written: SD1 in the original layout read back, SDXL
    in format 2)."""
    stem = os.path.splitext(os.path.basename(target))[0]
    if node_type == "CheckpointLoaderSimple":
        os.symlink((sdxl_checkpoint if sdxl else sd15_checkpoint)(cache_dir), target)
    elif node_type == "ControlNetLoader":
        os.symlink((sdxl_controlnet if sdxl else sd15_controlnet)(cache_dir), target)
    elif WORKFLOW_MODEL_FOLDERS.get(node_type) == "loras":
        kohya_lora(target, sdxl, trigger=stem, seed=len(stem))
    elif sdxl:
        sdxl_concept(target, words=(f"<{stem}1>", f"<{stem}2>"), seed=len(stem))
    else:
        import mixofshow_core.formats as formats

        official = official_edlora_checkpoint(target + ".pth", words=(f"<{stem}1>", f"<{stem}2>"), seed=len(stem))
        formats.WRITERS["edlora"](formats.load_concept(official), target)
        os.remove(official)


def main(argv=None) -> int:
    """Generate assets in a process of their own (their peak memory goes back to the system when it ends):
    ``python scripts/test_assets.py sdxl_checkpoint sdxl_controlnet``."""
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("assets", nargs="+", choices=["sd15_checkpoint", "sd15_controlnet", "sdxl_checkpoint",
                                                      "sdxl_controlnet"])
    parser.add_argument("--cache", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                        ".cache", "test-assets"))
    args = parser.parse_args(argv)
    import comfy_host

    comfy_host.boot(tempfile.mkdtemp(prefix="mos-assets-"))  # the generators read the host's model classes
    for name in args.assets:
        print(globals()[name](args.cache))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
