"""Mix-of-Show core: ED-LoRA concepts, file formats and layer-wise conditioning.

Pure torch/safetensors code; it never imports ComfyUI (a test enforces this). The ComfyUI glue lives
in the pack's `nodes/` folder.
"""
from .concept import Concept
from .errors import (
    BaseModelMismatchError,
    ConceptFileError,
    ConceptWordError,
    KeyMappingError,
    MixOfShowError,
)
from .lora import LoRAPair

__all__ = [
    "BaseModelMismatchError",
    "Concept",
    "ConceptFileError",
    "ConceptWordError",
    "KeyMappingError",
    "LoRAPair",
    "MixOfShowError",
]
