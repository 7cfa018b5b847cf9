"""The ED-LoRA training loop (spec §1.4-§1.7), independent of the host application.

The host (ComfyUI glue, or a pure-torch toy in the unit tests) supplies a ``TrainHost``: how to
encode images to latents, prompts to layer-wise contexts and run the denoiser. The loop owns the
recipe: per-step randomness from (seed, step), noise offset, DDPM noising, masked loss, attention
regularisation, AdamW with linear decay, the embedding freeze rule and stopping between steps.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch

from . import augment, losses
from .config import TrainConfig
from .dataset import ConceptDataset, step_generator
from .trainable import TrainableConcept


class TrainHost(Protocol):
    device: torch.device
    prediction: str  # "eps" or "v"

    def alphas_cumprod(self) -> torch.Tensor: ...  # (N,) on any device

    def encode_latents(self, images: torch.Tensor, seed: int) -> torch.Tensor: ...  # [B,3,R,R] -> [B,C,h,w]

    def contexts(self, prompts: list[str], embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Packed layer-wise contexts [B, T·L, D] and concept-word token positions [B, W]."""
        ...

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, contexts: torch.Tensor,
                positions: torch.Tensor | None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Raw denoiser output [B, C, h, w] and, when ``positions`` is given, the concept-word attention
        maps of every cross-attention layer, each [B, heads, r, r, W]."""
        ...

    def autocast(self) -> contextlib.AbstractContextManager: ...


@dataclass
class Progress:
    """Where a run stands; saved with the resume state."""

    step: int = 0
    total: int = 0
    losses: list[float] = field(default_factory=list)
    frozen_at: int | None = None  # step after which the embeddings stopped changing
    frozen_embeddings: torch.Tensor | None = None  # (W, L, D) kept from then on

    @property
    def done(self) -> bool:
        return self.step >= self.total


@dataclass
class Callbacks:
    should_stop: Callable[[], bool] = lambda: False
    after_step: Callable[[Progress], None] = lambda progress: None


def make_optimizer(trainable: TrainableConcept, config: TrainConfig) -> torch.optim.AdamW:
    groups = trainable.param_groups(config)
    for g in groups:
        g["initial_lr"] = g["lr"]
    return torch.optim.AdamW(groups, lr=0.0, betas=(0.9, 0.999), weight_decay=config.weight_decay)


def make_scaler(host: TrainHost, config_precision: str) -> torch.amp.GradScaler:
    """Loss scaling is only needed for fp16 autocast on a GPU."""
    enabled = host.device.type == "cuda" and config_precision == "fp16"
    return torch.amp.GradScaler(host.device.type, enabled=enabled)


def linear_lr(optimizer: torch.optim.Optimizer, step: int, total: int) -> None:
    """Linear decay to 0 over ``total`` steps, no warm-up (diffusers 'linear')."""
    factor = max(0.0, (total - step) / total)
    for g in optimizer.param_groups:
        g["lr"] = g["initial_lr"] * factor


def step_loss(host: TrainHost, trainable: TrainableConcept, dataset: ConceptDataset, config: TrainConfig,
              step: int) -> torch.Tensor:
    """The training objective of ``step``'s batch, noise and timesteps (a pure function of seed and step)."""
    batch = dataset.batch(step, config, trainable.words)
    g = step_generator(config.seed, step, stream=1)
    latents = host.encode_latents(batch.images.to(host.device), seed=int(torch.randint(2**62, (1,), generator=g)))
    b, c = latents.shape[:2]
    noise = torch.randn(latents.shape, generator=g)  # (B, C, h, w)
    noise = noise + config.noise_offset * torch.randn(b, c, 1, 1, generator=g)
    schedule = host.alphas_cumprod().detach().float().cpu()
    timesteps = torch.randint(len(schedule), (b,), generator=g)  # (B,)
    ac = schedule[timesteps].view(b, 1, 1, 1)
    noise, ac, dev_latents = noise.to(host.device), ac.to(host.device), latents.float()
    noisy = ac.sqrt() * dev_latents + (1 - ac).sqrt() * noise
    target = noise if host.prediction == "eps" else ac.sqrt() * noise - (1 - ac).sqrt() * dev_latents
    use_reg = config.attn_reg_weight > 0
    with host.autocast():
        contexts, positions = host.contexts(batch.prompts, trainable.embeddings)
        prediction, maps = host.predict(noisy.to(latents.dtype), timesteps.to(host.device), contexts,
                                        positions if use_reg else None)
    mask = augment.to_latent_grid(batch.loss_masks.to(host.device), *latents.shape[-2:])
    loss = losses.masked_mse(prediction, target, mask, config.official_mask_scale)
    if use_reg and maps:
        reg = losses.attention_regularisation(maps, batch.loss_masks.to(host.device), config.reg_full_identity)
        if reg is not None and torch.isfinite(reg):
            loss = loss + config.attn_reg_weight * reg
    return loss


def evaluate(host: TrainHost, trainable: TrainableConcept, dataset: ConceptDataset, config: TrainConfig,
             steps: range) -> float:
    """Mean objective over the batches of ``steps`` without updating anything (fixed data, noise, timesteps)."""
    with torch.no_grad():
        return sum(float(step_loss(host, trainable, dataset, config, s)) for s in steps) / len(steps)


def train_step(host: TrainHost, trainable: TrainableConcept, dataset: ConceptDataset, config: TrainConfig,
               optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, progress: Progress) -> float:
    """One optimizer step at ``progress.step``; returns the loss (before the step)."""
    linear_lr(optimizer, progress.step, progress.total)
    loss = step_loss(host, trainable, dataset, config, progress.step)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    _embedding_rule(trainable, config, progress)
    return float(loss.detach())


def _embedding_rule(trainable: TrainableConcept, config: TrainConfig, progress: Progress) -> None:
    """Official emb_norm_threshold: once the mean row norm reaches it, the embeddings stay as they are."""
    with torch.no_grad():
        if progress.frozen_embeddings is not None:
            trainable.embeddings.copy_(progress.frozen_embeddings.to(trainable.embeddings.device))
        elif trainable.embedding_norm() >= config.emb_norm_threshold:
            progress.frozen_at = progress.step + 1
            progress.frozen_embeddings = trainable.embeddings.detach().clone()


def run(host: TrainHost, trainable: TrainableConcept, dataset: ConceptDataset, config: TrainConfig,
        optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, progress: Progress,
        callbacks: Callbacks | None = None) -> bool:
    """Train until ``progress.total``; returns False when stopped early (state stays consistent)."""
    callbacks = callbacks or Callbacks()
    while not progress.done:
        if callbacks.should_stop():
            return False
        loss = train_step(host, trainable, dataset, config, optimizer, scaler, progress)
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"Training loss became {loss} at step {progress.step}; lower the learning rates or use precision "
                "'fp32'. The last checkpoint is still on disk."
            )
        progress.losses.append(loss)
        progress.step += 1
        callbacks.after_step(progress)
    return True
