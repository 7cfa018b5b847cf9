"""ComfyUI nodes of the Mix-of-Show pack: thin adapters over mixofshow_core."""
from . import (
    concept_nodes,
    fusion_nodes,
    orthogonal_nodes,
    region_nodes,
    region_pose_nodes,
    testbed_nodes,
    training_nodes,
)
from .paths import register_folders

register_folders()

_MODULES = (concept_nodes, fusion_nodes, orthogonal_nodes, region_nodes, region_pose_nodes, testbed_nodes,
            training_nodes)
NODE_CLASS_MAPPINGS = {k: v for m in _MODULES for k, v in m.NODE_CLASS_MAPPINGS.items()}
NODE_DISPLAY_NAME_MAPPINGS = {k: v for m in _MODULES for k, v in m.NODE_DISPLAY_NAME_MAPPINGS.items()}
