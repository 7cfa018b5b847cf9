"""The trainable parameters of one concept: layer-wise word rows and LoRA factors (spec §1.1, §1.3)."""
from __future__ import annotations

import torch

from ..concept import Concept
from ..lora import LoRAPair
from .config import TrainConfig


class TrainableConcept(torch.nn.Module):
    """Parameters of a concept under training.

    ``embeddings`` is [W, L, D] (word, layer, width). LoRA factors live in parameter lists indexed
    like ``text_names`` / ``unet_names``; in orthogonal mode the down factors are frozen.
    """

    def __init__(self, concept: Concept, train_down: bool = True):
        super().__init__()
        self.words = list(concept.words)
        self.alpha = float(concept.alpha)
        self.text_encoders, self.base_family = list(concept.text_encoders), concept.base_family
        self.embeddings = torch.nn.Parameter(concept.embedding_stack().float().clone())  # (W, L, D)
        self.text_names = sorted(concept.text_lora)
        self.unet_names = sorted(concept.unet_lora)
        self.text_down, self.text_up = self._factors(concept.text_lora, self.text_names, train_down)
        self.unet_down, self.unet_up = self._factors(concept.unet_lora, self.unet_names, train_down)

    @staticmethod
    def _factors(loras: dict[str, LoRAPair], names: list[str], train_down: bool):
        down = torch.nn.ParameterList(
            torch.nn.Parameter(loras[n].down.float().clone(), requires_grad=train_down) for n in names)
        up = torch.nn.ParameterList(torch.nn.Parameter(loras[n].up.float().clone()) for n in names)
        return down, up

    def text_lora(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """module -> (down [r, in], up [out, r]) as live tensors (gradients flow)."""
        return {n: (d, u) for n, d, u in zip(self.text_names, self.text_down, self.text_up)}

    def unet_lora(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return {n: (d, u) for n, d, u in zip(self.unet_names, self.unet_down, self.unet_up)}

    def param_groups(self, config: TrainConfig) -> list[dict]:
        """AdamW groups: embeddings, text LoRA, UNet LoRA (frozen factors left out)."""
        groups = [{"params": [self.embeddings], "lr": config.lr_embedding, "name": "embedding"}]
        if config.train_lora:
            for name, downs, ups, lr in (("text", self.text_down, self.text_up, config.lr_text),
                                         ("unet", self.unet_down, self.unet_up, config.lr_unet)):
                params = [p for p in [*downs, *ups] if p.requires_grad]
                if params:
                    groups.append({"params": params, "lr": lr, "name": name})
        return groups

    def embedding_norm(self) -> float:
        """Mean L2 norm of the concept rows (all words, all layers): the freeze criterion."""
        return float(self.embeddings.detach().norm(dim=-1).mean())

    def to_concept(self, name: str = "", orthogonal: dict | None = None) -> Concept:
        """A detached CPU snapshot as a Concept (what is saved to models/edloras)."""
        def pairs(names, downs, ups):
            return {n: LoRAPair(down=d.detach().float().cpu().clone(), up=u.detach().float().cpu().clone())
                    for n, d, u in zip(names, downs, ups)}

        return Concept(
            words=list(self.words),
            embeddings={w: self.embeddings[i].detach().float().cpu().clone() for i, w in enumerate(self.words)},
            text_lora=pairs(self.text_names, self.text_down, self.text_up),
            unet_lora=pairs(self.unet_names, self.unet_down, self.unet_up),
            alpha=self.alpha,
            name=name,
            base_family=self.base_family,
            orthogonal=dict(orthogonal or {}),
            text_encoders=self.text_encoders,
        )
