"""Standard LoRA files in the key layouts other tools write, with seeded random factors (tests, benchmarks, stand-ins).

Names are derived here from the LDM module tree, independently of the pack: SD1.x/SDXL input/output blocks hold
three children per level, so ``input_blocks.b`` is diffusers ``down_blocks.(b-1)//3`` (attentions/resnets
``(b-1)%3``) and ``output_blocks.b`` is ``up_blocks.b//3`` ``b%3``.

Kinds (``write_lora(..., kind=...)``):
* ``kohya``: sd-scripts' ``networks.lora``: ``lora_unet_<diffusers>`` (SD1) / ``lora_unet_<LDM>`` (SDXL),
  ``lora_te_`` / ``lora_te1_``, ``lora_te2_``; ``.lora_down.weight``, ``.lora_up.weight`` (conv layers: 4-D
  factors), ``.alpha``; the transformer's linear layers and proj_in/proj_out, the text encoders' attention and MLP.
* ``locon``: LyCORIS LoCon: kohya's modules plus the resnets' 3x3 convolutions (``lora_down [r, in, 3, 3]``,
  ``lora_up [out, r, 1, 1]``).
* ``loha``: LyCORIS LoHa on kohya's modules: ``hada_w1_a [out, r]``, ``hada_w1_b [r, in]``, ``hada_w2_a``,
  ``hada_w2_b``, ``alpha``.
* ``diffusers``: the diffusers training scripts' attention-processor layout:
  ``unet.<diffusers block>.attn1.processor.to_q_lora.down.weight`` and
  ``text_encoder.<module>.lora_linear_layer.down.weight`` (SDXL: ``text_encoder_2.`` too).
"""
from __future__ import annotations

import json
import re
from typing import Any

import torch
from safetensors.torch import save_file

KINDS = ("kohya", "locon", "loha", "diffusers")
_TRANSFORMER = re.compile(r"^(?P<block>input_blocks\.\d+|middle_block|output_blocks\.\d+)\.1\."
                          r"(?P<rest>proj_in|proj_out|transformer_blocks\.\d+\."
                          r"(?:attn[12]\.(?:to_q|to_k|to_v|to_out\.0)|ff\.net\.0\.proj|ff\.net\.2))$")
_RESNET_CONV = re.compile(r"^input_blocks\.(?P<b>\d+)\.0\.(?P<conv>in_layers\.2|out_layers\.3)$")
_TEXT = re.compile(r"^transformer\.(?P<m>text_model\.encoder\.layers\.\d+\.(?:self_attn\.[qkvo]\w*_proj|mlp\.fc[12]))$")
_ATTENTION = re.compile(r"\.attn[12]\.(to_q|to_k|to_v|to_out\.0)$")


def _diffusers_block(block: str) -> str:
    if block == "middle_block":
        return "mid_block.attentions.0"
    section, b = block.split(".")
    b = int(b)
    return f"down_blocks.{(b - 1) // 3}.attentions.{(b - 1) % 3}" if section == "input_blocks" else \
        f"up_blocks.{b // 3}.attentions.{b % 3}"


def unet_targets(model: Any, resnets: bool = False) -> list[tuple[str, str, torch.Size]]:
    """[(diffusers name, LDM name, weight shape)] of the UNet layers kohya adapts (with ``resnets``: LoCon's
    3x3 convolutions of the encoder's resnets too)."""
    out = []
    for name, module in model.model.diffusion_model.named_modules():
        m = _TRANSFORMER.match(name)
        if m and hasattr(module, "weight"):
            out.append((f"{_diffusers_block(m['block'])}.{m['rest']}", name, module.weight.shape))
        r = _RESNET_CONV.match(name)
        if resnets and r and int(r["b"]) % 3:
            b = int(r["b"])
            conv = "conv1" if r["conv"] == "in_layers.2" else "conv2"
            out.append((f"down_blocks.{(b - 1) // 3}.resnets.{(b - 1) % 3}.{conv}", name, module.weight.shape))
    return out


def text_targets(clip: Any) -> list[tuple[int, str, torch.Size]]:
    """[(encoder index, module name inside it, weight shape)]: CLIP-L is 0, SDXL's CLIP-G 1."""
    out = []
    for index, attr in enumerate(("clip_l", "clip_g")):
        encoder = getattr(clip.cond_stage_model, attr, None)
        for name, module in (encoder.named_modules() if encoder is not None else ()):
            m = _TEXT.match(name)
            if m:
                out.append((index, m["m"], module.weight.shape))
    return out


def _factors(g: torch.Generator, shape: torch.Size, rank: int, std: float, conv_down: bool) -> dict[str, torch.Tensor]:
    out_f, in_f, kernel = shape[0], shape[1], tuple(shape[2:])
    down = torch.randn(rank, in_f, *(kernel if conv_down else ()), generator=g) * 0.1
    up = torch.randn(out_f, rank, *((1,) * len(kernel)), generator=g) * std
    if not conv_down and kernel:  # a 1x1 convolution: kohya writes 4-D factors
        down = down.reshape(rank, in_f, 1, 1)
    return {"lora_down.weight": down, "lora_up.weight": up}


def write_lora(path: str, model: Any, clip: Any, kind: str = "kohya", seed: int = 0, rank: int = 4, std: float = 0.05,
               sdxl: bool = False, tags: dict[str, dict[str, int]] | None = None, extra: dict | None = None) -> str:
    """Write a random ``kind`` LoRA for ``model``/``clip`` (SDXL naming with ``sdxl``) with kohya-style metadata
    (``ss_tag_frequency`` = ``tags``); ``extra`` adds raw tensors (e.g. a key no model has)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, found {kind!r}")
    g = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    alpha = torch.tensor(rank / 2.0)  # scale alpha / rank = 0.5

    def add(name: str, shape: torch.Size, conv3: bool = False) -> None:
        if kind == "loha":
            rows, cols = shape[0], shape[1:].numel()
            for w in ("w1", "w2"):
                tensors[f"{name}.hada_{w}_a"] = torch.randn(rows, rank, generator=g) * std ** 0.5
                tensors[f"{name}.hada_{w}_b"] = torch.randn(rank, cols, generator=g) * std ** 0.5
        else:
            tensors.update({f"{name}.{k}": v for k, v in _factors(g, shape, rank, std, conv3).items()})
        tensors[f"{name}.alpha"] = alpha.clone()

    for diffusers, ldm, shape in unet_targets(model, resnets=kind == "locon"):
        if kind == "diffusers":
            m = _ATTENTION.search(diffusers)
            if m is None:
                continue
            proj = m.group(1).replace("to_out.0", "to_out")
            base = f"unet.{diffusers[:m.start()]}.{m.group(0)[1:6]}.processor.{proj}_lora"
            f = _factors(g, shape, rank, std, False)
            tensors[f"{base}.down.weight"], tensors[f"{base}.up.weight"] = f["lora_down.weight"], f["lora_up.weight"]
            continue
        add("lora_unet_" + (ldm if sdxl else diffusers).replace(".", "_"), shape, conv3=len(shape) == 4 and
            shape[2] > 1)
    for index, module, shape in text_targets(clip):
        if kind == "diffusers":  # the diffusers scripts adapt the text encoders' attention only
            if ".mlp." in module:
                continue
            base = f"{('text_encoder', 'text_encoder_2')[index]}.{module}.lora_linear_layer"
            f = _factors(g, shape, rank, std, False)
            tensors[f"{base}.down.weight"], tensors[f"{base}.up.weight"] = f["lora_down.weight"], f["lora_up.weight"]
            continue
        prefix = ("lora_te1_", "lora_te2_")[index] if sdxl else "lora_te_"
        add(prefix + module.replace(".", "_"), shape)
    tensors.update(extra or {})
    metadata = {
        "ss_network_module": "networks.lora" if kind == "kohya" else "lycoris.kohya",
        "ss_network_dim": str(rank), "ss_network_alpha": str(rank / 2.0),
        "ss_base_model_version": "sdxl_base_v1-0" if sdxl else "sd_v1",
        "ss_tag_frequency": json.dumps(tags or {}),
    }
    if kind in ("locon", "loha"):
        metadata["ss_network_args"] = json.dumps({"algo": kind})
    if kind == "diffusers":
        metadata = {}
    save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata=metadata)
    return path


def train_comfy_lora(model: Any, clip: Any, vae: Any, pixels: torch.Tensor, captions: list[str], output_dir: str,
                     target_dir: str, prefix: str, seed: int = 0, steps: int = 100, learning_rate: float = 5e-3,
                     rank: int = 8, batch_size: int = 4, dtype: str = "fp32") -> tuple[str, dict, list[float]]:
    """A LoRA trained and saved by ComfyUI's own Train LoRA and Save LoRA nodes (``comfy_extras.nodes_train``):
    the UNet's linear/conv weights as ``lora_up``/``lora_down``/``alpha``, every bias as ``.diff_b`` and every norm
    as a 1-D ``.diff``, under generic ``diffusion_model.`` keys.

    ``pixels`` [n, H, W, 3] in 0..1, one caption each. Save LoRA writes into ``output_dir``/loras; the file is then
    moved into ``target_dir``. Returns (file name, the trained state dict, the loss per step).
    """
    import inspect
    import os
    import shutil

    from comfy.weight_adapter import adapter_maps
    from comfy_extras.nodes_train import SaveLoRA, TrainLoraNode

    with torch.inference_mode():
        # one LATENT per image: 0.3.75's single-LATENT path fails (UnboundLocalError: multi_res)
        latents = [{"samples": vae.encode(pixels[i: i + 1])} for i in range(len(pixels))]
        positive = [clip.encode_from_tokens_scheduled(clip.tokenize(c)) for c in captions]
        inputs = dict(
            model=[model], latents=latents, positive=positive, batch_size=[batch_size], steps=[steps],
            grad_accumulation_steps=[1], learning_rate=[learning_rate], rank=[rank], optimizer=["AdamW"],
            loss_function=["MSE"], seed=[seed], training_dtype=[dtype], lora_dtype=[dtype],
            algorithm=[next(k for k in adapter_maps if k.lower() == "lora")], gradient_checkpointing=[False],
            existing_lora=["[None]"], bucket_mode=[False])
        accepted = inspect.signature(TrainLoraNode.execute).parameters  # bucket_mode: newer hosts only
        torch.manual_seed(seed)  # the node draws its batches and noise levels from torch's global generator
        out = TrainLoraNode.execute(**{k: v for k, v in inputs.items() if k in accepted})
        _, lora, losses, done = getattr(out, "args", out)[:4]
    folder = os.path.join(output_dir, "loras")
    before = set(os.listdir(folder)) if os.path.isdir(folder) else set()
    SaveLoRA.execute(lora, f"loras/{prefix}", done)  # exactly what the Save LoRA node writes
    (name,) = set(os.listdir(folder)) - before
    shutil.move(os.path.join(folder, name), os.path.join(target_dir, name))
    return name, lora, [float(x) for x in losses["loss"]]
