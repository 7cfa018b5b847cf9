"""Integration tier: the real ComfyUI (COMFYUI_PATH) in-process, with this pack loaded.

Tests run under torch.inference_mode(), as ComfyUI's executor runs nodes. Models are built in code
(the pack's tiny testbed) or generated as files (full-size SD1.5 shape); nothing is downloaded.
"""
from __future__ import annotations

import os

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.environ.get("MOS_CACHE", os.path.join(REPO, ".cache"))


def pytest_collection_modifyitems(config, items):
    comfy = os.environ.get("COMFYUI_PATH", "")
    skip = None
    if not comfy or not os.path.isfile(os.path.join(comfy, "main.py")):
        skip = pytest.mark.skip(reason="no ComfyUI: run scripts/run_tests.sh, or set COMFYUI_PATH to a checkout")
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.comfy)
            if skip:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def host(tmp_path_factory):
    import comfy_host

    return comfy_host.boot(str(tmp_path_factory.mktemp("comfy")))


@pytest.fixture(autouse=True)
def _inference_mode():
    with torch.inference_mode():
        yield


@pytest.fixture(scope="session")
def backward_supported(host) -> bool:
    """Whether this ComfyUI back-propagates through its UNet as shipped (0.3.41 and newer); training needs it."""
    glue = host.pack("nodes.training.train_host")
    with torch.inference_mode():
        model = host.pack("testbed.model").build_testbed(0)[0].clone()
    with torch.inference_mode(False), torch.enable_grad():
        glue.prepare_for_autograd(model.model.diffusion_model)
        try:
            glue.check_backward(model)
        except glue.UnsupportedHostError:
            return False
    return True


@pytest.fixture
def trains(backward_supported, host):
    """Skips a test that trains on a host that cannot (the opt-in 2024 host; training needs 0.3.41)."""
    if not backward_supported:
        pytest.skip(f"ComfyUI {host.pack('nodes.comfy_version').host_version()} cannot back-propagate through its "
                    "UNet; training needs 0.3.41 or newer (the node's error is checked in test_old_host_error)")


@pytest.fixture(scope="session")
def cn(host):
    """ComfyUI's own top-level ``nodes`` module (import it only after the host is booted)."""
    import importlib

    return importlib.import_module("nodes")


@pytest.fixture(scope="session")
def testbed(host):
    with torch.inference_mode():
        return host.pack("testbed.model").build_testbed(0)


@pytest.fixture(scope="session")
def testbed_sdxl(host):
    """(MODEL, CLIP, VAE) of the tiny SDXL-architecture testbed (70 cross-attention layers, both encoders)."""
    with torch.inference_mode():
        return host.pack("testbed.model_sdxl").build_testbed(0)


@pytest.fixture(scope="session")
def sd15(host):
    """(MODEL, CLIP, VAE, file name) of the full-size random SD1.5-shaped checkpoint."""
    import nodes

    import test_assets

    path = test_assets.sd15_checkpoint(os.path.join(CACHE, "test-assets"))
    link = os.path.join(host.models("checkpoints"), "sd15_random.safetensors")
    if not os.path.exists(link):
        os.symlink(path, link)
    with torch.inference_mode():
        model, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint("sd15_random.safetensors")[:3]
    return model, clip, vae, "sd15_random.safetensors"
