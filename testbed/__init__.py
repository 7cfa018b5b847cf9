"""The pack's testbed, apart from the product: a synthetic world (renderer, novel concepts, scorer,
fidelity statistics), a tiny SD1-architecture model trained on it, its nodes (category
Mix-of-Show/testbed), trainers, fidelity benchmark and workflows. mixofshow_core/ and nodes/ import
nothing from here (tests/unit/test_core_boundary.py).

This file imports nothing, so ``testbed.world`` loads without ComfyUI; the pack's __init__ registers
``testbed.nodes``.
"""
