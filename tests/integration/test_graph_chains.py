"""Regions wherever they sit in a graph, through ComfyUI's executor (issue 31, items 1 and 2).

* Stock model patches (LoRA, model sampling, FreeU) and another ED-LoRA Loader give the same image whether
  they come before or after Apply Regions: the regional patch computes with the model the host runs.
* The regional patch holds no module or large tensor, so a clone after Apply Regions copies no weights.
* A region's ControlNet strength s scales its residual by exactly s, also when Region Control Strength
  feeds Regional KSampler: the same image as the stock ControlNet applied at s.
"""
import gc
import os
import types

import pytest
import safetensors.torch
import torch
from integration.host_support import random_concept, write_concept

import comfy_host

CKPT = ["1", 0]
CAT = ["2", 0]  # model after the cat concept
CLIP = ["2", 1]


@pytest.fixture(scope="module")
def files(host, testbed):
    """The cat and dog concepts and a kohya LoRA, fitted to the tiny testbed (TestbedCheckpointLoader, seed 0)."""
    model, clip, _ = testbed
    with torch.inference_mode():
        write_concept(host, random_concept(host, model, clip, ("<cat1>", "<cat2>"), seed=61), "chain_cat.safetensors")
        write_concept(host, random_concept(host, model, clip, ("<dog1>", "<dog2>"), seed=62), "chain_dog.safetensors")
        lora = random_concept(host, model, clip, ("<lora1>",), seed=63, up_std=0.05)
        host.pack("mixofshow_core.formats").WRITERS["kohya_lora"](lora, os.path.join(host.models("loras"),
                                                                                     "chain_lora.safetensors"))


def _base() -> dict:
    return {
        "1": {"class_type": "TestbedCheckpointLoader", "inputs": {"variant": "tiny-random-sd1", "seed": 0}},
        "2": {"class_type": "EDLoRALoader", "inputs": {"model": CKPT, "clip": ["1", 1], "concept_name":
              "chain_cat.safetensors", "strength_model": 1.0, "strength_clip": 1.0}},
        "3": {"class_type": "RegionPrompt", "inputs": {"clip": CLIP, "prompt": "a <cat1> <cat2>", "negative": "ugly",
              "x": 0.0, "y": 0.0, "width": 0.5, "height": 1.0, "weight": 1.0}},
        "4": {"class_type": "EDLoRATextEncode", "inputs": {"clip": CLIP, "text": "two animals"}},
        "5": {"class_type": "EDLoRATextEncode", "inputs": {"clip": CLIP, "text": "blurry"}},
        "6": {"class_type": "EmptyLatentImage", "inputs": {"width": 128, "height": 128, "batch_size": 1}},
    }


PATCHES = {  # a node that clones and patches a MODEL: class_type, inputs besides "model"
    "LoraLoaderModelOnly": ("LoraLoaderModelOnly", {"lora_name": "chain_lora.safetensors", "strength_model": 1.0}),
    "ModelSamplingDiscrete": ("ModelSamplingDiscrete", {"sampling": "v_prediction", "zsnr": False}),
    "FreeU_V2": ("FreeU_V2", {"b1": 1.3, "b2": 1.4, "s1": 0.9, "s2": 0.2}),
    "EDLoRALoader": ("EDLoRALoader", {"clip": CLIP, "concept_name": "chain_dog.safetensors", "strength_model": 1.0,
                                      "strength_clip": 1.0}),
}


def _sample(prompt: dict, model_link: list, name: str) -> torch.Tensor:
    """KSampler on ``model_link`` with the global prompts; the latent saved by SaveLatent, [1, 4, 8, 8]."""
    prompt["20"] = {"class_type": "KSampler", "inputs": {
        "model": model_link, "positive": ["4", 0], "negative": ["5", 0], "latent_image": ["6", 0], "seed": 5,
        "steps": 3, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}}
    prompt["21"] = {"class_type": "SaveLatent", "inputs": {"samples": ["20", 0], "filename_prefix": name}}
    result = comfy_host.run_prompt(prompt)
    assert result.success, result.error
    saved = result.outputs["21"]["latents"][0]
    import folder_paths

    path = os.path.join(folder_paths.get_output_directory(), saved["subfolder"], saved["filename"])
    return safetensors.torch.load_file(path)["latent_tensor"].float()


def _chain(kind: str, regions_first: bool) -> torch.Tensor:
    cls, extra = PATCHES[kind]
    prompt = _base()
    if regions_first:  # model -> ApplyRegions -> patch
        prompt["10"] = {"class_type": "ApplyRegions", "inputs": {"model": CAT, "regions": ["3", 0]}}
        prompt["11"] = {"class_type": cls, "inputs": {"model": ["10", 0], **extra}}
    else:  # model -> patch -> ApplyRegions
        prompt["11"] = {"class_type": cls, "inputs": {"model": CAT, **extra}}
        prompt["10"] = {"class_type": "ApplyRegions", "inputs": {"model": ["11", 0], "regions": ["3", 0]}}
    out = "11" if regions_first else "10"
    return _sample(prompt, [out, 0], f"chain_{kind}_{regions_first}")


@pytest.mark.parametrize("kind", list(PATCHES))
def test_a_model_patch_gives_the_same_image_before_or_after_apply_regions(host, files, kind):
    after = _chain(kind, regions_first=True)
    before = _chain(kind, regions_first=False)
    assert torch.allclose(after, before, atol=1e-5, rtol=1e-5), float((after - before).abs().max())
    prompt = _base()
    prompt["10"] = {"class_type": "ApplyRegions", "inputs": {"model": CAT, "regions": ["3", 0]}}
    regions_only = _sample(prompt, ["10", 0], f"chain_{kind}_none")
    assert not torch.allclose(after, regions_only, atol=1e-3)  # the patch did act (inside the boxes too)


def _reachable_tensors_and_modules(root) -> tuple[int, list[str]]:
    """Bytes of all tensors and the names of nn.Modules reachable from ``root`` as deepcopy walks it (functions,
    classes and modules are copied by reference; a bound method copies its object)."""
    seen, stack, total, modules = set(), [root], 0, []
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType, types.ModuleType)):
            continue
        seen.add(id(obj))
        if isinstance(obj, types.MethodType):
            stack.append(obj.__self__)
            continue
        if isinstance(obj, torch.nn.Module):
            modules.append(type(obj).__name__)
            continue
        if isinstance(obj, torch.Tensor):
            total += obj.numel() * obj.element_size()
            continue
        stack.extend(gc.get_referents(obj))
    return total, modules


def test_the_regional_patch_holds_no_module_or_large_tensor(host, files, testbed):
    model = testbed[0]
    region_nodes = host.pack("nodes.regions.nodes")
    with torch.inference_mode():
        regions = region_nodes.RegionPrompt().add(testbed[1], "a cat", "", 0.0, 0.0, 0.5, 1.0, 1.0)[0]
        patched = region_nodes.ApplyRegions().apply(model, regions)[0]
    unet_bytes = sum(p.numel() * p.element_size() for p in model.model.diffusion_model.parameters())
    total, modules = _reachable_tensors_and_modules(patched.model_options)
    assert modules == [] and total < unet_bytes / 20, (modules, total, unet_bytes)


@pytest.mark.fullsize
def test_cloning_after_apply_regions_copies_no_weights(host, sd15):
    """SD1.5 size: three clones after Apply Regions (what LoRA, FreeU, ... nodes do) keep the process's memory."""
    import psutil

    model, clip = sd15[:2]
    region_nodes = host.pack("nodes.regions.nodes")
    with torch.inference_mode():
        regions = region_nodes.RegionPrompt().add(clip, "a cat", "", 0.0, 0.0, 0.5, 1.0, 1.0)[0]
        patched = region_nodes.ApplyRegions().apply(model, regions)[0]
        gc.collect()
        before = psutil.Process().memory_info().rss
        clones = [patched.clone(), patched.clone().clone(), patched.clone()]
        grown = psutil.Process().memory_info().rss - before
    assert len(clones) == 3 and grown < 200 * 2**20, f"cloning grew the process by {grown / 2**20:.0f} MiB"


def _control_prompt(strength: float, regional: str) -> dict:
    """The ControlNet at ``strength`` globally (stock) or 1.0 globally and ``strength`` in a whole-image region."""
    prompt = _base()
    prompt["3"]["inputs"].update(width=1.0, prompt="two animals", negative="blurry")
    prompt["7"] = {"class_type": "TestbedControlNet", "inputs": {"seed": 7}}
    prompt["8"] = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1,
                                                          "color": 0x77AA33}}
    global_strength = strength if regional == "stock" else 1.0
    prompt["9"] = {"class_type": "ControlNetApplyAdvanced", "inputs": {
        "positive": ["4", 0], "negative": ["5", 0], "control_net": ["7", 0], "image": ["8", 0],
        "strength": global_strength, "start_percent": 0.0, "end_percent": 1.0}}
    if regional != "stock":
        prompt["3"]["inputs"]["control_strength"] = strength
    return prompt


def _regional(prompt: dict, with_strength_node: bool, name: str) -> torch.Tensor:
    positive, negative = ["9", 0], ["9", 1]
    if with_strength_node:
        prompt["12"] = {"class_type": "RegionControlStrength", "inputs": {
            "positive": positive, "negative": negative, "regions": ["3", 0]}}
        positive, negative = ["12", 0], ["12", 1]
    prompt["20"] = {"class_type": "RegionalKSampler", "inputs": {
        "model": CAT, "regions": ["3", 0], "positive": positive, "negative": negative, "latent_image": ["6", 0],
        "seed": 5, "steps": 3, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}}
    prompt["21"] = {"class_type": "SaveLatent", "inputs": {"samples": ["20", 0], "filename_prefix": name}}
    result = comfy_host.run_prompt(prompt)
    assert result.success, result.error
    import folder_paths

    saved = result.outputs["21"]["latents"][0]
    return safetensors.torch.load_file(os.path.join(folder_paths.get_output_directory(), saved["subfolder"],
                                                    saved["filename"]))["latent_tensor"].float()


@pytest.mark.parametrize("strength", [0.25, 0.5])
@pytest.mark.parametrize("with_strength_node", [False, True], ids=["sampler_only", "strength_node_then_sampler"])
def test_region_control_strength_is_applied_exactly_once(host, files, strength, with_strength_node):
    stock = _regional(_control_prompt(strength, "stock"), False, f"ctl_stock_{strength}")
    regional = _regional(_control_prompt(strength, "region"), with_strength_node, f"ctl_region_{strength}")
    full = _regional(_control_prompt(1.0, "stock"), False, "ctl_full")
    assert not torch.allclose(stock, full, atol=1e-3)  # the strength matters on this model
    assert torch.allclose(regional, stock, atol=1e-5, rtol=1e-5), float((regional - stock).abs().max())
