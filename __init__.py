"""Mix-of-Show for ComfyUI: ED-LoRA concepts with layer-wise embeddings (Gu et al., NeurIPS 2023).

Works under any folder name in custom_nodes/ (all imports are package-relative).
"""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./web/js"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
