"""ComfyUI side of ED-LoRA training: autograd on host models, LoRA and embedding hooks, the TrainHost.

How training reaches into the host without changing it:
* ComfyUI runs nodes under ``torch.inference_mode()`` and builds models there. ``prepare_for_autograd``
  swaps every inference-mode parameter/buffer of the UNet and text encoder for an ordinary clone
  (same values, so other users of the shared module see no change).
* LoRA is applied with forward hooks on the adapted Linear layers (y += alpha·up(down(x))), removed
  when training ends. Word rows enter each text encoder through a hook on its token-embedding module:
  each (word, layer) pair gets a reserved vocabulary id that never occurs in the training prompts,
  and the hook writes that encoder's part of the pair's trainable row over the id's embedding.
* Per-layer contexts are packed exactly as at inference (``layer_context.pack_layers``) and reach
  each cross-attention layer through the same ``LayerwiseContextPatch``; an extra attn2 patch records
  the concept words' attention for the regulariser.
* SDXL: both encoders run, and the pooled text comes from one more section with each word's mean row, as at
  inference; it enters the UNet through the model's own ADM encoding (pooled text + image size).
"""
from __future__ import annotations

import contextlib
import math
from typing import Any

import comfy.model_management
import comfy.sample
import torch
import torch.nn.functional as F

from ...mixofshow_core import layer_context
from ...mixofshow_core.errors import BaseModelMismatchError, MixOfShowError
from ...mixofshow_core.unet_layout import map_unet_modules
from ...mixofshow_core.words import substitute
from .. import model_layout
from ..comfy_version import MIN_TRAINING_HOST, host_version
from ..concepts import layerwise


class UnsupportedHostError(MixOfShowError):
    """The running ComfyUI cannot back-propagate through its UNet."""


# ---------------------------------------------------------------- autograd on host models
def prepare_for_autograd(module: torch.nn.Module) -> int:
    """Replace inference-mode parameters and buffers by ordinary clones; returns how many were replaced."""
    replaced = 0
    with torch.inference_mode(False):
        for sub in module.modules():
            for name, p in list(sub.named_parameters(recurse=False)):
                if p.is_inference():
                    setattr(sub, name, torch.nn.Parameter(p.clone(), requires_grad=False))
                    replaced += 1
            for name, b in list(sub.named_buffers(recurse=False)):
                if b.is_inference():
                    setattr(sub, name, b.clone())  # stays a buffer (persistence unchanged)
                    replaced += 1
    return replaced


def check_backward(model: Any) -> None:
    """Back-propagate through one transformer block; a clear error on hosts whose blocks cannot."""
    unet = model.model.diffusion_model
    site = model_layout.cross_attention_sites(model)[0]
    block = unet.get_submodule(site.ldm_prefix)
    weight = block.attn1.to_q.weight
    x = torch.zeros(1, 2, weight.shape[1], device=weight.device, dtype=weight.dtype, requires_grad=True)
    context = torch.zeros(1, 2, block.attn2.to_k.weight.shape[1], device=weight.device, dtype=weight.dtype)
    try:
        block(x * 1.0, context=context, transformer_options={}).float().sum().backward()  # x * 1: not a leaf
    except RuntimeError as err:
        if "inplace" not in str(err) and "in-place" not in str(err):
            raise
        raise UnsupportedHostError(
            f"Training needs ComfyUI {MIN_TRAINING_HOST} or newer: this ComfyUI (version {host_version()}) modifies "
            "tensors in place inside its transformer blocks, which breaks back-propagation. Update ComfyUI (git pull, "
            "or the desktop/portable updater) and run again."
        ) from err


# ---------------------------------------------------------------- hooks
def _lora_hook(down: torch.Tensor, up: torch.Tensor, scale: float):
    def hook(module, args, output):
        x = args[0]
        delta = F.linear(F.linear(x.to(down.dtype), down), up)  # autocast, when on, picks the compute dtype
        return output + (scale * delta).to(output.dtype)

    return hook


class _TokenRows:
    """Forward hook on the token embedding: reserved ids -> trainable (word, layer) rows."""

    def __init__(self, ids: torch.Tensor, vocab: int):
        self.lookup = torch.full((vocab,), -1, dtype=torch.long)  # id -> row in table, -1 = untouched
        self.lookup[ids] = torch.arange(ids.numel())
        self.table: torch.Tensor | None = None  # (W*L, D) set per forward

    def __call__(self, module, args, output):
        if self.table is None:
            return output
        ids = args[0]
        rows = self.lookup.to(ids.device)[ids]  # (..., T)
        hit = rows >= 0
        if not bool(hit.any()):
            return output
        picked = self.table.to(output.device, output.dtype)[rows.clamp_min(0)]  # (..., T, D)
        return torch.where(hit.unsqueeze(-1), picked, output)


class _AttentionRecorder:
    """attn2 patch (after the layer-wise one): keep the concept-word columns of each layer's attention."""

    def __init__(self, attn_modules: dict[tuple[str, int, int], Any]):
        self.attn = attn_modules  # (block name, block number, transformer index) -> attn2
        self.positions: torch.Tensor | None = None  # (B, W)
        self.maps: list[torch.Tensor] = []

    def __call__(self, n, context, value, extra_options):
        block = extra_options.get("block")
        attn = None if block is None else self.attn.get((block[0], block[1], extra_options.get("block_index", 0)))
        if self.positions is None or attn is None or context is None:
            return n, context, value
        q, k = attn.to_q(n), attn.to_k(context)  # (B, HW, inner), (B, T, inner)
        b, hw, inner = q.shape
        heads = attn.heads
        q = q.view(b, hw, heads, inner // heads).transpose(1, 2)  # (B, h, HW, dh)
        k = k.view(b, -1, heads, inner // heads).transpose(1, 2)  # (B, h, T, dh)
        probs = torch.softmax((q.float() @ k.float().transpose(-1, -2)) * (inner // heads) ** -0.5, dim=-1)
        index = self.positions.to(probs.device).view(b, 1, 1, -1).expand(b, heads, hw, -1)
        cols = probs.gather(-1, index)  # (B, h, HW, W)
        side = math.isqrt(hw)
        self.maps.append(cols.view(b, heads, side, side, -1))  # (B, h, r, r, W)
        return n, context, value


# ---------------------------------------------------------------- the host
class ComfyTrainHost:
    """TrainHost over a ComfyUI MODEL, CLIP and VAE (see mixofshow_core.training.loop)."""

    def __init__(self, model: Any, clip: Any, vae: Any, words: list[str], prompts: list[str], precision: str,
                 gradient_checkpointing: bool):
        _, self.layers, self.encoders = model_layout.model_and_clip(model, clip, "ED-LoRA training")
        comfy.model_management.load_models_gpu([model, clip.patcher])
        self.model, self.clip, self.vae = model, clip, vae
        self.unet = model.model.diffusion_model
        self.text_models = {name: getattr(clip.cond_stage_model, name) for name, _ in self.encoders}
        self.pooled_section = len(self.encoders) == 2  # SDXL: the UNet reads pooled text too
        self.device = comfy.model_management.get_torch_device()
        self.dtype = model.model.get_dtype()
        kind = model.model.model_type.name
        if kind not in ("EPS", "V_PREDICTION"):
            raise BaseModelMismatchError(f"Training supports eps- and v-prediction models; this one is {kind}.")
        self.prediction = "eps" if kind == "EPS" else "v"
        self.precision = _resolve_precision(precision, self.device)
        self.gradient_checkpointing = gradient_checkpointing
        prepare_for_autograd(self.unet)
        prepare_for_autograd(clip.cond_stage_model)
        check_backward(model)
        self.sites = model_layout.cross_attention_sites(model)
        self.words = list(words)
        self.stand_ins = layerwise.pick_stand_ins(clip, " ".join(prompts), len(words))
        vocab = layerwise.embedding_table(clip).shape[0]
        bound = [substitute(p, dict(zip(self.words, self.stand_ins))) for p in prompts]
        rows = len(words) * (self.layers + self.pooled_section)  # (word, layer) rows, then SDXL's mean rows
        self.layer_ids = _reserved_ids(clip, bound, set(self.stand_ins.values()), rows, vocab)
        self.token_rows = {name: _TokenRows(self.layer_ids, vocab) for name, _ in self.encoders}
        self.layer_patch = layerwise.LayerwiseContextPatch(self.sites)
        self.recorder = _AttentionRecorder({(s.block[0], s.block[1], s.depth): self.unet.get_submodule(s.ldm_prefix)
                                            .attn2 for s in self.sites})

    # -- TrainHost
    def alphas_cumprod(self) -> torch.Tensor:
        sigmas = self.model.model.model_sampling.sigmas.float()
        return 1.0 / (1.0 + sigmas ** 2)  # (N,)

    def encode_latents(self, images: torch.Tensor, seed: int) -> torch.Tensor:
        pixels = ((images.float() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).cpu()  # (B, R, R, 3)
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)  # the VAE samples its posterior with the global generator
            latents = self.vae.encode(pixels)
        return self.model.model.process_latent_in(latents).to(self.device, self.dtype)

    def contexts(self, prompts: list[str], embeddings: torch.Tensor) -> tuple[tuple, torch.Tensor]:
        """((packed contexts [B, T·L, D], pooled text [B, P] or None), concept-word positions [B, W])."""
        ids, positions = self._token_ids(prompts)  # key -> (S*B, T) with S = L (+1 mean section), (B, W)
        table = embeddings.reshape(-1, embeddings.shape[-1])  # (W*L, D)
        if self.pooled_section:
            table = torch.cat([table, embeddings.mean(dim=1)])  # (W*L + W, D)
        batch, outs, pooled, start = len(prompts), [], None, 0
        self._set_clip_layer()
        for (name, width), key in zip(self.encoders, ("l", "g")):
            self.token_rows[name].table = table[:, start:start + width]
            start += width
            try:
                out = self.text_models[name](ids[key].tolist())
            finally:
                self.token_rows[name].table = None
            outs.append(out[0])  # (S*B, T, width)
            if name == "clip_g":
                pooled = out[1][:batch]  # (B, P): the mean-row section's projected end token
        z = torch.cat(outs, dim=-1)[batch if self.pooled_section else 0:]  # (L*B, T, D)
        contexts = z.reshape(self.layers, batch, *z.shape[1:])  # (L, B, T, D)
        return (layer_context.pack_layers(contexts), pooled), positions  # (B, T*L, D)

    def predict(self, noisy, timesteps, contexts, positions):
        packed, pooled = contexts
        self.recorder.maps, self.recorder.positions = [], positions
        options = {"patches": {"attn2_patch": [self.layer_patch, self.recorder]}}
        try:
            out = self.unet(noisy.to(self.dtype), timesteps=timesteps.float(), context=packed.to(self.dtype),
                            y=self._adm(pooled, noisy), transformer_options=options)
        finally:
            maps, self.recorder.maps, self.recorder.positions = self.recorder.maps, [], None
        return out.float(), maps

    def autocast(self):
        if self.precision in ("bf16", "fp16"):
            return torch.autocast(self.device.type, dtype=torch.bfloat16 if self.precision == "bf16" else torch.float16)
        return contextlib.nullcontext()

    # -- helpers
    def _adm(self, pooled: torch.Tensor | None, noisy: torch.Tensor) -> torch.Tensor | None:
        """SDXL's ADM input for the batch: pooled text and the image size (uncropped, target = size), as the
        model itself encodes them; None for models without it."""
        if pooled is None:
            return None
        ratio = getattr(self.vae, "downscale_ratio", 8)
        height, width = (int(s) * (ratio if isinstance(ratio, int) else 8) for s in noisy.shape[-2:])
        y = self.model.model.encode_adm(pooled_output=pooled, width=width, height=height, crop_w=0, crop_h=0,
                                        target_width=width, target_height=height)
        return y.to(self.device, self.dtype)

    def _set_clip_layer(self) -> None:
        self.clip.cond_stage_model.reset_clip_options()
        if self.clip.layer_idx is not None:
            self.clip.cond_stage_model.set_clip_options({"layer": self.clip.layer_idx})

    def _token_ids(self, prompts: list[str]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Token ids per tokenizer key ("l", SDXL also "g"), one section per layer (SDXL: the mean-row section
        first), stand-ins replaced by reserved ids: key -> [S*B, T]; and concept-word positions [B, W]."""
        rows: dict[str, list[list[int]]] = {}
        positions = []
        stand_in_ids = list(self.stand_ins.values())
        for text in prompts:
            tokens = self.clip.tokenize(substitute(text, dict(zip(self.words, self.stand_ins))))
            for key, chunks in tokens.items():
                rows.setdefault(key, []).append([int(t[0]) for t in chunks[0]])
            ids = rows["l"][-1]
            positions.append([ids.index(s) if s in ids else 0 for s in stand_in_ids])
        words, layers = len(stand_in_ids), self.layers
        sections = [[words * layers + w for w in range(words)]] if self.pooled_section else []  # mean rows
        sections += [[w * layers + layer for w in range(words)] for layer in range(layers)]
        out = {}
        for key, per_prompt in rows.items():
            batch = []
            for section in sections:
                mapping = {s: int(self.layer_ids[r]) for s, r in zip(stand_in_ids, section)}
                batch += [[mapping.get(t, t) for t in ids] for ids in per_prompt]
            out[key] = torch.tensor(batch)
        return out, torch.tensor(positions)

    @contextlib.contextmanager
    def attached(self, trainable) -> Any:
        """Install the trainable's LoRA and embedding hooks (and checkpointing) for the duration."""
        handles = [self.text_models[name].transformer.get_input_embeddings().register_forward_hook(rows)
                   for name, rows in self.token_rows.items()]
        text_root = self.clip.cond_stage_model
        for name, (down, up) in trainable.text_lora().items():
            handles.append(text_root.get_submodule(model_layout.clip_module(name)).register_forward_hook(
                _lora_hook(down, up, trainable.alpha)))
        ldm = map_unet_modules(model_layout.unet_layout(self.model), list(trainable.unet_names))
        for name, (down, up) in trainable.unet_lora().items():
            handles.append(self.unet.get_submodule(ldm[name]).register_forward_hook(
                _lora_hook(down, up, trainable.alpha)))
        handles += _clone_text_norm_inputs(text_root)
        wrapped = _checkpoint_blocks(self.unet) if self.gradient_checkpointing else []
        try:
            yield self
        finally:
            for h in handles:
                h.remove()
            for block in wrapped:
                del block.forward

    def validation_images(self, prompt_text: str, embeddings: torch.Tensor, seed: int, steps: int, cfg: float,
                          size: int) -> torch.Tensor:
        """Sample one image per validation prompt with the concept as trained so far; IMAGE [N, H, W, 3]."""
        import nodes  # ComfyUI's built-in nodes

        prompts = [p.strip() for p in prompt_text.splitlines() if p.strip()]
        images = []
        with torch.no_grad():
            negative_cond, negative_pooled = self.clip.encode_from_tokens(self.clip.tokenize(""), return_pooled=True)
            negative = [[negative_cond, {"pooled_output": negative_pooled}]]
            model = layerwise.with_layer_patch(self.model)
            for i, text in enumerate(prompts):
                (packed, pooled), _ = self.contexts([text], embeddings)
                packed = packed.float().cpu()
                extras = {"mixofshow_layers": self.layers,
                          "cross_attn_controlnet": layer_context.mean_over_layers(packed, self.layers)}
                if pooled is not None:
                    extras["pooled_output"] = pooled.float().cpu()
                positive = [[packed, extras]]
                latent = nodes.EmptyLatentImage().generate(size, size, 1)[0]["samples"]  # the host's latent shape
                noise = comfy.sample.prepare_noise(latent, seed + i)
                samples = comfy.sample.sample(model, noise, steps, cfg, "euler", "normal", positive, negative, latent,
                                              denoise=1.0, disable_pbar=True, seed=seed + i)
                images.append(self.vae.decode(samples).float().cpu())
        # sampling may re-patch weights from inference-mode backups; make them trainable again
        prepare_for_autograd(self.unet)
        prepare_for_autograd(self.clip.cond_stage_model)
        return torch.cat(images) if images else torch.zeros(1, size, size, 3)


def _resolve_precision(precision: str, device: torch.device) -> str:
    if device.type != "cuda":
        return "fp32"
    if precision == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return precision


def _clone_text_norm_inputs(root: torch.nn.Module) -> list[Any]:
    """ComfyUI's CLIPLayer adds both residuals in place (``x += attn(norm1(x))``; every release checked, 2024-03
    to 0.33.0), and autograd refuses because each LayerNorm saved ``x`` for its backward. A forward pre-hook
    hands each layer's two norms a copy of ``x``, so the in-place adds touch a tensor nobody saved; the host's
    forward runs as shipped. Returns the hook handles (remove them after training)."""
    def copy_input(module, args):
        return (args[0].clone(), *args[1:])

    return [getattr(m, norm).register_forward_pre_hook(copy_input) for m in root.modules()
            if all(hasattr(m, a) for a in ("layer_norm1", "self_attn", "layer_norm2", "mlp"))
            for norm in ("layer_norm1", "layer_norm2")]


def _checkpoint_blocks(unet: torch.nn.Module) -> list[torch.nn.Module]:
    """Recompute each UNet block's activations in backward (instance-level forward, removed afterwards)."""
    import torch.utils.checkpoint

    blocks = [*unet.input_blocks, unet.middle_block, *unet.output_blocks]
    for block in blocks:
        original = block.forward

        def forward(*args, _original=original, **kwargs):
            return torch.utils.checkpoint.checkpoint(_original, *args, use_reentrant=False, **kwargs)

        block.forward = forward
    return blocks


def _reserved_ids(clip: Any, prompts: list[str], stand_ins: set[int], count: int, vocab: int) -> torch.Tensor:
    """``count`` vocabulary ids that no prompt uses (rows the hook overwrites), from the top of the vocabulary."""
    used = {int(t[0]) for text in prompts for chunk in clip.tokenize(text)["l"] for t in chunk} | stand_ins
    specials = {clip.tokenizer.clip_l.start_token, clip.tokenizer.clip_l.end_token}
    picked = [i for i in range(vocab - 1, -1, -1) if i not in used and i not in specials][:count]
    return torch.tensor(picked)  # (W*L,)
