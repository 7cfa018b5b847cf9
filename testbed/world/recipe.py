"""Settings for concepts on the world testbed, shared by the demo workflows, the benchmark and the tests.

Plain data with no imports, so scripts/build_example_workflows.py can read it without torch. The
paper's learning rates are for SD1.5; this tiny model was trained from scratch and needs larger steps
to learn a concept in a few hundred updates.
"""

# EDLoRATrain inputs (the names of the node's inputs); words and init come from the concept. lr_unet 2e-3: on
# this model 4e-3 and 8e-3 score lower (single-concept attr 0.63 and 0.57 against 0.66, 8 concepts;
# docs/fidelity.md, The concept recipe, swept).
TRAIN = {
    "steps": 300, "batch_size": 4, "resolution": 64, "lr_embedding": 2e-2, "lr_text": 1e-3, "lr_unet": 2e-3,
    "emb_norm_threshold": 100.0, "attn_reg_weight": 0.01, "crop": "center", "templates": "none",
}
# GradientFusion inputs, one ridge for every stage (ridge and spatial_ridge). A ridge of 0.3: the layers are
# 32-64 wide and their features ill-conditioned; at 1e-2 fused changes grow to 3-4x the concepts' own (3 concepts:
# K/V 4.3x, UNet attention 3.3x) and images break once regions mix prompts (README, Gradient fusion).
# testbed/bench_fidelity.py compares ridges. K/V targets: the paper's ("official"), with which every fused number in
# docs/fidelity.md was measured (bench_fidelity.py --fusion kv_targets=own_model compares the node's default).
FUSE = {"steps": 20, "resolution": 64, "seed": 0, "ridge": 0.3, "kv_targets": "official"}
# KSampler / RegionalKSampler settings for 64x64 world images. cfg 2, not 5: at 5 guidance shifts hues and
# washes trained concepts out (identity attr 0.54 vs 0.66 at 2, over all 8 concepts); the base model draws
# captions better at 2 as well (shape 82 % vs 73 %). README, Synthetic world.
SAMPLE = {"steps": 20, "cfg": 2.0, "sampler": "euler", "scheduler": "normal"}
# The demo's concepts (names in testbed.world.concepts.CONCEPTS).
DEMO_CONCEPTS = ("rubo", "zeta", "kiva")
# Boxes (x, y, width, height as fractions of the image) for scenes of 2 and 3 concepts.
LAYOUTS = {
    2: ((0.0, 0.0, 0.5, 1.0), (0.5, 0.0, 0.5, 1.0)),
    3: ((0.0, 0.0, 0.5, 0.5), (0.5, 0.0, 0.5, 0.5), (0.25, 0.5, 0.5, 0.5)),
}
# Canvases (width, height) on which each box of LAYOUTS is 64x64 px, the size the model was trained at. On the
# 64-px canvas the UNet's middle block sees one 1x1 cell, so two boxes share it; here each box has its own cell
# there (docs/fidelity.md, Region binding and canvas size).
BOX_CANVAS = {2: (128, 64), 3: (128, 128)}
