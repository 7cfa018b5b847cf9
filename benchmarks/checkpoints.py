"""The generated full-size checkpoints the benchmarks load (random weights, real layouts), by family."""
from __future__ import annotations

import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASSETS = os.path.join(REPO, ".cache", "test-assets")
FAMILIES = ("sd15", "sdxl")
NAMES = {"sd15": "SD1.5 shape (16 layers, CLIP-L)", "sdxl": "SDXL shape (70 layers in 11 rows, CLIP-L + CLIP-G)"}


def load(host, family: str):
    """(MODEL, CLIP, VAE) of the full-size ``family`` stand-in through stock CheckpointLoaderSimple."""
    import nodes

    import test_assets

    make = test_assets.sdxl_checkpoint if family == "sdxl" else test_assets.sd15_checkpoint
    name = f"{family}_random.safetensors"
    link = os.path.join(host.models("checkpoints"), name)
    if not os.path.exists(link):
        os.symlink(make(ASSETS), link)
    return nodes.CheckpointLoaderSimple().load_checkpoint(name)[:3]


def concept(host, family: str, name: str, words: tuple[str, ...], seed: int) -> str:
    """Write a random concept for ``family`` to models/edloras/<name> (SD1: the original .pth layout)."""
    import test_assets

    path = os.path.join(host.models("edloras"), name)
    if family == "sdxl":
        return test_assets.sdxl_concept(path, words=words, seed=seed)
    return test_assets.official_edlora_checkpoint(path, words=words, seed=seed)
