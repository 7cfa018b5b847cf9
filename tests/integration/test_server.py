"""The real ComfyUI server (main.py --cpu) with the pack installed under another folder name.

The pack is linked into a custom_nodes folder as "ComfyUI-Mix-of-Show" and its concept folder is
given through extra_model_paths.yaml, as a user would set them up.
"""
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
import torch
from integration.host_support import running_server

from mixofshow_core.concept_init import init_concept
from mixofshow_core.formats import WRITERS

OUR_NODES = ("EDLoRALoader", "EDLoRATextEncode", "EDLoRAExport", "TestbedCheckpointLoader", "TestbedConceptDataset",
             "RegionPoseSkeleton")


def _get(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("server")
    (root / "concepts").mkdir()
    concept = init_concept(["<srv1>", "<srv2>"], [torch.randn(64), torch.randn(64)], 16, {}, {})
    WRITERS["edlora"](concept, root / "concepts" / "server_concept.safetensors")
    with running_server(root) as url:
        yield url, root


def test_object_info_lists_our_nodes_with_tooltips(server):
    url, _ = server
    info = _get(url + "/object_info")
    for name in OUR_NODES:
        node = info[name]
        assert node["display_name"].endswith("(Mix-of-Show)") and node["category"].startswith("Mix-of-Show/")
        assert len(node["description"]) > 40
        for spec in node["input"]["required"].values():
            assert spec[1].get("tooltip"), (name, spec)
    assert "server_concept.safetensors" in info["EDLoRALoader"]["input"]["required"]["concept_name"][0]
    assert "/extensions/ComfyUI-Mix-of-Show/js/mixofshow.js" in _get(url + "/extensions")


def test_extension_modules_and_their_relative_imports_are_served(server):
    """WEB_DIRECTORY is web/, so the scripts are at /extensions/<folder>/js/: the host's app.js is three levels up."""
    url, _ = server
    ours = [p for p in _get(url + "/extensions") if p.startswith("/extensions/ComfyUI-Mix-of-Show/")]
    assert "/extensions/ComfyUI-Mix-of-Show/js/mixofshow.js" in ours
    imports = 0
    for path in ours:
        with urllib.request.urlopen(url + path, timeout=30) as r:
            source = r.read().decode()
        for spec in re.findall(r"""^\s*import\b[^"']*["'](\.{1,2}/[^"']+)["']""", source, re.M):
            target = urllib.parse.urljoin(url + path, spec)
            try:
                with urllib.request.urlopen(target, timeout=30) as r:
                    assert r.read(), (path, spec, target)
            except urllib.error.HTTPError as err:
                pytest.fail(f"{path} imports {spec}, which resolves to {target}: HTTP {err.code}")
            imports += 1
    assert imports >= 2  # at least mixofshow.js's import of the host's app.js and of the region editor


def test_prompt_endpoint_runs_a_concept_workflow(server):
    url, root = server
    prompt = {
        "1": {"class_type": "TestbedCheckpointLoader", "inputs": {"variant": "tiny-random-sd1", "seed": 0}},
        "2": {"class_type": "EDLoRALoader", "inputs": {"model": ["1", 0], "clip": ["1", 1], "strength_model": 1.0,
                                                       "strength_clip": 1.0,
                                                       "concept_name": "server_concept.safetensors"}},
        "3": {"class_type": "EDLoRATextEncode", "inputs": {"clip": ["2", 1], "text": "a <srv1> <srv2> on a hill"}},
        "4": {"class_type": "EDLoRATextEncode", "inputs": {"clip": ["2", 1], "text": "blurry"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 2}},
        "6": {"class_type": "KSampler", "inputs": {"model": ["2", 0], "positive": ["3", 0], "negative": ["4", 0],
                                                   "latent_image": ["5", 0], "seed": 1, "steps": 3, "cfg": 6.0,
                                                   "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "server"}},
    }
    request = urllib.request.Request(url + "/prompt", data=json.dumps({"prompt": prompt}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as r:
        prompt_id = json.loads(r.read())["prompt_id"]
    for _ in range(240):
        history = _get(f"{url}/history/{prompt_id}")
        if prompt_id in history and history[prompt_id].get("outputs"):
            break
        time.sleep(0.25)
    images = history[prompt_id]["outputs"]["8"]["images"]
    assert len(images) == 2
    assert all((root / "out" / i["subfolder"] / i["filename"]).stat().st_size > 0 for i in images)
