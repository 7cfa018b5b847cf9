"""ComfyUI nodes of the Mix-of-Show pack: thin adapters over mixofshow_core."""
from . import concept_nodes, testbed_nodes
from .paths import register_folders

register_folders()

NODE_CLASS_MAPPINGS = {**concept_nodes.NODE_CLASS_MAPPINGS, **testbed_nodes.NODE_CLASS_MAPPINGS}
NODE_DISPLAY_NAME_MAPPINGS = {**concept_nodes.NODE_DISPLAY_NAME_MAPPINGS, **testbed_nodes.NODE_DISPLAY_NAME_MAPPINGS}
