"""One training run inside ComfyUI: fresh or resumed concept, progress, periodic files, cancel that keeps the work.

Files of a run named N:
* ``models/edloras/N.safetensors``: the concept as trained so far (ready for EDLoRALoader), rewritten at
  every checkpoint, on cancel and at the end.
* ``output/mixofshow_training/N/state.safetensors``: the resume state (parameters, AdamW moments, progress).
* ``output/mixofshow_training/N/loss.png`` and ``validation_<step>.png``.
All writes are atomic (temporary file, then rename).
"""
from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any

import comfy.model_management
import comfy.utils
import folder_paths
import numpy as np
import torch
from PIL import Image

from ...mixofshow_core.concept_init import init_concept, random_word_vector
from ...mixofshow_core.errors import ConceptWordError
from ...mixofshow_core.files import atomic_write
from ...mixofshow_core.formats import edlora_safetensors
from ...mixofshow_core.training import loop, orthogonal, plot, state
from ...mixofshow_core.training.config import TrainConfig
from ...mixofshow_core.training.dataset import ConceptDataset
from ...mixofshow_core.training.trainable import TrainableConcept
from .. import model_folders, model_layout
from ..concepts import layerwise
from . import targets, train_host

logger = logging.getLogger(__name__)
_RAND = re.compile(r"^<rand-([0-9.eE+-]+)>$")
RUNS_FOLDER = "mixofshow_training"
# Settings that may change between a run and its resumption (they do not change the math's intent).
RESUMABLE_CHANGES = ("precision", "gradient_checkpointing")
LOG_EVERY_S = 5.0  # a progress line in ComfyUI's console (the terminal) at most this often


SAVE_EVERY = 100  # steps between writes of the concept and its resume state


@dataclass
class Validation:
    every: int = 0  # steps; 0 = only at the end
    prompts: str = ""
    steps: int = 20
    cfg: float = 7.5
    seed: int = 0


@dataclass
class RunResult:
    concept_path: str
    progress: loop.Progress
    plot: torch.Tensor  # (1, H, W, 3)
    validation: torch.Tensor | None  # (N, H, W, 3)
    report: str
    files: list[str] = field(default_factory=list)


def run_paths(name: str) -> tuple[str, str]:
    """(concept file, run folder) for a run name (reduced to a base name)."""
    concept = model_folders.output_file(model_folders.EDLORA_FOLDER, name, "concept")
    stem = os.path.splitext(os.path.basename(concept))[0]
    folder = os.path.join(folder_paths.get_output_directory(), RUNS_FOLDER, stem)
    os.makedirs(folder, exist_ok=True)
    return concept, folder


def word_vectors(clip: Any, config: TrainConfig) -> list[torch.Tensor]:
    """Initial vector [D] per word: ``<rand-σ>`` draws N(0, σ²); a class word copies its token row."""
    table = layerwise.embedding_table(clip)
    g = torch.Generator().manual_seed(config.seed)
    out = []
    for word, init in zip(config.words, config.init):
        match = _RAND.match(init)
        if match:
            out.append(random_word_vector(table.shape[1], float(match.group(1)), g))
            continue
        token = layerwise.single_token(clip, init)
        if token is None:
            raise ConceptWordError(
                f"Initializer {init!r} for {word} is not one token of this CLIP. Use a one-token class word (man, "
                "woman, girl, dog, cat, car, ...) or '<rand-0.013>'."
            )
        out.append(table[token].detach().float().cpu().clone())
    return out


def fresh_trainable(model: Any, clip: Any, config: TrainConfig) -> tuple[TrainableConcept, dict]:
    """A new concept per the official initialisation; orthogonal mode freezes slot rows as down factors."""
    layers = model_layout.layer_rows(model)
    text, unet = targets.text_targets(clip), targets.unet_targets(model)
    concept = init_concept(config.words, word_vectors(clip, config), layers, text, unet, rank=config.rank,
                           alpha=config.alpha, seed=config.seed, text_encoders=model_layout.clip_encoders(clip),
                           base_family=model_layout.concept_family(model))
    info: dict = {}
    if config.mode == "orthogonal":
        for loras in (concept.text_lora, concept.unet_lora):
            for module, pair in list(loras.items()):
                down = orthogonal.down_projection(pair.in_features, config.rank, config.orthogonal_slot)
                loras[module] = type(pair)(down=down, up=torch.zeros_like(pair.up))
        info = {"basis": orthogonal.BASIS_NAME, "slot": config.orthogonal_slot, "scale": orthogonal.SCALE,
                "rank": config.rank}
    return TrainableConcept(concept, train_down=config.mode != "orthogonal"), info


def _check_resume(saved: state.SavedState, config: TrainConfig, fingerprint: str, where: str) -> None:
    changed = saved.config.differences(config, ignore=RESUMABLE_CHANGES)
    if changed:
        shown = ", ".join(f"{k}: saved {a!r}, now {b!r}" for k, a, b in ((k, *v) for k, v in sorted(changed.items())))
        raise state.TrainingStateError(
            f"The run at {where} was started with other settings ({shown}). Restore those settings to resume it, or "
            "set resume to false (or pick another concept name) to start over."
        )
    if saved.fingerprint != fingerprint:
        raise state.TrainingStateError(
            f"The run at {where} was trained on other images or captions. Connect the same dataset to resume, or set "
            "resume to false (or pick another concept name) to start over."
        )


def _save_png(image: torch.Tensor, path: str) -> None:
    """IMAGE [N, H, W, 3] -> one PNG (images side by side), atomically."""
    row = torch.cat(list(image), dim=1) if image.shape[0] > 1 else image[0]  # (H, N*W, 3)
    pil = Image.fromarray((row.clamp(0, 1).numpy() * 255).round().astype(np.uint8))
    atomic_write(path, lambda tmp: pil.save(tmp, format="PNG"))


def _log_step(name: str, p: loop.Progress, start_step: int, elapsed: float) -> None:
    """One console line: step, recent loss, time left at this run's pace."""
    recent = p.losses[-10:]
    rate = (p.step - start_step) / elapsed if elapsed > 0 else 0.0
    left = f"{(p.total - p.step) / rate:.0f} s left" if rate > 0 and not p.done else "done"
    logger.info("[Mix-of-Show] training %s: step %d/%d, loss %.4f (mean of the last %d), %.2f steps/s, %s",
                name, p.step, p.total, float(np.mean(recent)) if recent else float("nan"), len(recent), rate, left)


def train(model: Any, clip: Any, vae: Any, dataset: ConceptDataset, config: TrainConfig, name: str, resume: bool,
          save_every: int, validation: Validation) -> RunResult:
    """Train (or resume) a concept; on cancel, save everything and re-raise ComfyUI's interrupt."""
    concept_path, folder = run_paths(name)
    state_path = os.path.join(folder, "state.safetensors")
    fingerprint = dataset.fingerprint()
    total = config.total_steps(len(dataset))
    saved = None
    if resume and os.path.exists(state_path):
        with torch.inference_mode(False):  # tensors made under inference mode could not be updated in place
            saved = state.load(state_path)
        _check_resume(saved, config, fingerprint, state_path)
    prompts = dataset.possible_prompts(config.words, config.templates) + [
        p for p in validation.prompts.splitlines() if p.strip()]

    with torch.inference_mode(False), torch.enable_grad():
        host = train_host.ComfyTrainHost(model, clip, vae, config.words, prompts, config.precision,
                                         config.gradient_checkpointing)
        trainable, info = fresh_trainable(model, clip, config)
        trainable.to(host.device)
        optimizer = loop.make_optimizer(trainable, config)
        scaler = loop.make_scaler(host, host.precision)
        progress = loop.Progress(total=total)
        if saved is not None:
            state.restore(saved, trainable, optimizer, scaler)
            progress = saved.progress
            info = saved.extra.get("orthogonal", info)
        files: list[str] = []
        last_validation: list[torch.Tensor | None] = [None]

        def checkpoint() -> None:
            state.save(state_path, trainable, optimizer, scaler, config, fingerprint, progress,
                       extra={"orthogonal": info, "name": name})
            concept = trainable.to_concept(name=name, orthogonal=info)
            edlora_safetensors.write(concept, concept_path)
            marks = [(progress.frozen_at, "embedding frozen")] if progress.frozen_at else []
            _save_png(plot.loss_plot(progress.losses, marks=marks), os.path.join(folder, "loss.png"))

        def validate() -> None:
            if not validation.prompts.strip():
                return
            images = host.validation_images(validation.prompts, trainable.embeddings, validation.seed,
                                            validation.steps, validation.cfg, config.resolution)
            last_validation[0] = images
            target = os.path.join(folder, f"validation_{progress.step:06d}.png")
            _save_png(images, target)
            files.append(target)

        bar = comfy.utils.ProgressBar(total)
        started, start_step, last_preview, last_log = time.monotonic(), progress.step, [0.0], [time.monotonic()]

        def after_step(p: loop.Progress) -> None:
            if save_every and p.step % save_every == 0 and not p.done:
                checkpoint()
            if validation.every and p.step % validation.every == 0 and not p.done:
                validate()
            preview = None
            now = time.monotonic()
            if now - last_preview[0] > 1.0 or p.done:
                last_preview[0] = now
                title = f"step {p.step}/{p.total}  loss {p.losses[-1]:.4f}"
                pil = Image.fromarray((plot.loss_plot(p.losses, title=title)[0].numpy() * 255).astype(np.uint8))
                preview = ("PNG", pil, 640)
            bar.update_absolute(p.step, p.total, preview)
            if now - last_log[0] >= LOG_EVERY_S or p.done:
                last_log[0] = now
                _log_step(name, p, start_step, now - started)

        callbacks = loop.Callbacks(should_stop=comfy.model_management.processing_interrupted, after_step=after_step)
        finished = progress.done
        try:
            if not finished:
                with host.attached(trainable):
                    finished = loop.run(host, trainable, dataset, config, optimizer, scaler, progress, callbacks)
                    if finished:
                        validate()
        except comfy.model_management.InterruptProcessingException:
            finished = False
        except FloatingPointError:
            raise  # the parameters are no longer finite: keep the last checkpoint on disk as it is
        except Exception:
            if progress.step > start_step:
                checkpoint()  # e.g. out of memory: the last completed step is consistent; keep it
            raise
        if not finished:
            checkpoint()
            logger.info("Training of %s cancelled at step %d/%d; saved %s and %s", name, progress.step, total,
                        concept_path, state_path)
            raise comfy.model_management.InterruptProcessingException()
        if progress.step > start_step or not os.path.exists(concept_path):
            checkpoint()
        elapsed = time.monotonic() - started
    steps_run = progress.step - start_step
    rate = steps_run / elapsed if elapsed > 0 and steps_run else 0.0
    recent = progress.losses[-20:]
    report = (
        f"{name}: {progress.step}/{total} steps ({steps_run} this run, {rate:.2f} steps/s), mode {config.mode}"
        + (f" slot {config.orthogonal_slot}" if config.mode == "orthogonal" else "")
        + f", mean loss of the last {len(recent)} steps {np.mean(recent) if recent else float('nan'):.4f}"
        + (f", embedding frozen after step {progress.frozen_at}" if progress.frozen_at else ", embedding not frozen")
        + f". Concept: {concept_path}. Resume state: {state_path}."
    )
    marks = [(progress.frozen_at, "embedding frozen")] if progress.frozen_at else []
    return RunResult(concept_path=concept_path, progress=progress, plot=plot.loss_plot(progress.losses, marks=marks),
                     validation=last_validation[0], report=report, files=files)


def evaluate(model: Any, clip: Any, vae: Any, dataset: ConceptDataset, config: TrainConfig, concept=None,
             steps: range = range(8)) -> float:
    """Mean training objective of ``concept`` (None = freshly initialised) over fixed batches: the same images,
    noise and timesteps for any concept, so values compare across concepts and across training."""
    prompts = dataset.possible_prompts(config.words, config.templates)
    with torch.inference_mode(False), torch.enable_grad():
        host = train_host.ComfyTrainHost(model, clip, vae, config.words, prompts, "fp32", False)
        trainable = fresh_trainable(model, clip, config)[0] if concept is None else TrainableConcept(concept)
        trainable.to(host.device)
        with host.attached(trainable):
            return loop.evaluate(host, trainable, dataset, config, steps)
