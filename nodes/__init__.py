"""ComfyUI nodes of the Mix-of-Show pack, one subpackage per feature, each a thin adapter over mixofshow_core.

concepts/  EDLoRALoader, layer-wise encoding, concept export      fusion/    GradientFusion, OrthogonalMerge
regions/   RegionPrompt, ApplyRegions, RegionalKSampler, poses    training/  EDLoRATrain and its dataset nodes
comfy_version.py holds everything that depends on the ComfyUI release.
"""
from .concepts import nodes as concept_nodes
from .fusion import nodes as fusion_nodes
from .fusion import orthogonal_nodes
from .model_folders import register_folders
from .regions import nodes as region_nodes
from .regions import pose_nodes
from .training import nodes as training_nodes

register_folders()

_MODULES = (concept_nodes, fusion_nodes, orthogonal_nodes, region_nodes, pose_nodes, training_nodes)
NODE_CLASS_MAPPINGS = {k: v for m in _MODULES for k, v in m.NODE_CLASS_MAPPINGS.items()}
NODE_DISPLAY_NAME_MAPPINGS = {k: v for m in _MODULES for k, v in m.NODE_DISPLAY_NAME_MAPPINGS.items()}
