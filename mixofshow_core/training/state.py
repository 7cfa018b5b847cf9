"""Resumable training state: parameters, AdamW moments and progress in one safetensors file.

Tensors: ``param.<name>`` (every TrainableConcept tensor), ``opt.<index>.<key>`` (AdamW state per
parameter index), ``frozen_embeddings`` when the embeddings froze. Metadata (strings):
mixofshow.format = "edlora-train-state", version, config (TrainConfig JSON), dataset fingerprint,
progress (step, total, frozen_at, losses), optimizer param groups and grad-scaler state (JSON).
No pickle anywhere; written atomically.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from ..errors import MixOfShowError
from ..files import save_safetensors_atomic
from .config import TrainConfig
from .loop import Progress
from .trainable import TrainableConcept

FORMAT = "edlora-train-state"
VERSION = 1


class TrainingStateError(MixOfShowError):
    """A resume state is damaged or belongs to another run."""


@dataclass
class SavedState:
    config: TrainConfig
    fingerprint: str
    progress: Progress
    tensors: dict[str, torch.Tensor]
    optimizer_groups: list[dict]
    scaler: dict
    extra: dict


def save(path: str | os.PathLike[str], trainable: TrainableConcept, optimizer: torch.optim.Optimizer,
         scaler: torch.amp.GradScaler, config: TrainConfig, fingerprint: str, progress: Progress,
         extra: dict | None = None) -> Path:
    tensors = {f"param.{k}": v for k, v in trainable.state_dict().items()}
    opt = optimizer.state_dict()
    for index, entry in opt["state"].items():
        for key, value in entry.items():
            tensors[f"opt.{index}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    if progress.frozen_embeddings is not None:
        tensors["frozen_embeddings"] = progress.frozen_embeddings
    groups = [{k: v for k, v in g.items() if k != "params"} | {"params": g["params"]} for g in opt["param_groups"]]
    scaler_state = {k: float(v) if isinstance(v, (int, float)) else v for k, v in scaler.state_dict().items()}
    metadata = {
        "mixofshow.format": FORMAT,
        "mixofshow.format_version": str(VERSION),
        "mixofshow.config": config.to_json(),
        "mixofshow.dataset": fingerprint,
        "mixofshow.progress": json.dumps({"step": progress.step, "total": progress.total,
                                          "frozen_at": progress.frozen_at, "losses": progress.losses}),
        "mixofshow.optimizer_groups": json.dumps(groups),
        "mixofshow.scaler": json.dumps(scaler_state),
        "mixofshow.extra": json.dumps(extra or {}),
    }
    return save_safetensors_atomic(tensors, path, metadata)


def load(path: str | os.PathLike[str]) -> SavedState:
    target = Path(path)
    try:
        with safe_open(str(target), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # safetensors raises its own types for damaged files
        raise TrainingStateError(
            f"Resume state {target} cannot be read ({type(err).__name__}: {err}); delete it to start over."
        ) from err
    if meta.get("mixofshow.format") != FORMAT:
        found = meta.get("mixofshow.format")
        raise TrainingStateError(f"{target} is not an ED-LoRA training state (format {found!r}).")
    if int(meta.get("mixofshow.format_version", "0")) > VERSION:
        raise TrainingStateError(f"{target} was written by a newer pack (state version "
                                 f"{meta['mixofshow.format_version']}); update the pack to resume it.")
    info = json.loads(meta["mixofshow.progress"])
    progress = Progress(step=info["step"], total=info["total"], losses=list(info["losses"]),
                        frozen_at=info["frozen_at"], frozen_embeddings=tensors.pop("frozen_embeddings", None))
    return SavedState(config=TrainConfig.from_json(meta["mixofshow.config"]), fingerprint=meta["mixofshow.dataset"],
                      progress=progress, tensors=tensors,
                      optimizer_groups=json.loads(meta["mixofshow.optimizer_groups"]),
                      scaler=json.loads(meta["mixofshow.scaler"]), extra=json.loads(meta.get("mixofshow.extra", "{}")))


def restore(saved: SavedState, trainable: TrainableConcept, optimizer: torch.optim.Optimizer,
            scaler: torch.amp.GradScaler) -> None:
    """Load saved parameters, AdamW moments and scaler into freshly built objects of the same run."""
    params = {k[len("param."):]: v for k, v in saved.tensors.items() if k.startswith("param.")}
    try:
        trainable.load_state_dict(params, strict=True)
    except RuntimeError as err:
        raise TrainingStateError(f"The resume state does not match this concept's layers: {err}") from err
    state: dict[int, dict] = {}
    for key, value in saved.tensors.items():
        if key.startswith("opt."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": saved.optimizer_groups})
    if saved.scaler:
        scaler.load_state_dict(saved.scaler)
