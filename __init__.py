"""Mix-of-Show for ComfyUI: ED-LoRA concepts with layer-wise embeddings (Gu et al., NeurIPS 2023).

Works under any folder name in custom_nodes/ (all imports are package-relative). The product nodes live in
nodes/; the built-in testbed (tiny model, synthetic world) registers its own nodes under Mix-of-Show/testbed.
"""
from .nodes import NODE_CLASS_MAPPINGS as _PRODUCT
from .nodes import NODE_DISPLAY_NAME_MAPPINGS as _PRODUCT_NAMES
from .testbed import nodes as _testbed

NODE_CLASS_MAPPINGS = {**_PRODUCT, **_testbed.NODE_CLASS_MAPPINGS}
NODE_DISPLAY_NAME_MAPPINGS = {**_PRODUCT_NAMES, **_testbed.NODE_DISPLAY_NAME_MAPPINGS}
WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
