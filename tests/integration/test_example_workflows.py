"""The shipped example workflows: well-formed UI JSON, and they run in the real executor.

They run on the generated full-size SD1.5-shaped checkpoint with concept files in the original
Mix-of-Show .pth layout, at 64x64 and one step. Nothing is put into the input folder: the workflows need
no input files (test_workflows_as_opened.py runs them unchanged on a fresh server).
"""
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import comfy_host
import test_assets

WORKFLOWS = sorted(glob.glob(os.path.join(comfy_host.REPO, "example_workflows", "*.json"))
                   + glob.glob(os.path.join(comfy_host.REPO, "testbed", "workflows", "*.json")))
# The world demo's workflows run on the built-in world model (test_demo_* below), the SDXL ones on the full-size
# SDXL stand-in (test_sdxl_workflows_as_opened.py) and on the tiny SDXL testbed (the demo below), the rest on SD1.5.
SD15_WORKFLOWS = [p for p in WORKFLOWS if not os.path.basename(p).startswith(("world_", "sdxl_"))]


def _load(path):
    with open(path) as f:
        return json.load(f)


@pytest.mark.parametrize("path", WORKFLOWS, ids=os.path.basename)
def test_ui_json_links_are_consistent(path):
    workflow = _load(path)
    nodes = {n["id"]: n for n in workflow["nodes"]}
    for link_id, src, src_slot, dst, dst_slot, kind in workflow["links"]:
        assert link_id in nodes[src]["outputs"][src_slot]["links"]
        assert nodes[dst]["inputs"][dst_slot]["link"] == link_id
        assert nodes[src]["outputs"][src_slot]["type"] == kind
        assert nodes[dst]["inputs"][dst_slot]["type"] in (kind, "*")  # "*": an input of any type (Preview Any)
    assert workflow["last_node_id"] == max(nodes) and workflow["last_link_id"] == len(workflow["links"])


# Stock and pack nodes that read files a user would have to put into ComfyUI's input folder by hand.
READS_INPUT_FILES = {"LoadImage", "LoadImageMask", "LoadImageOutput", "LoadImageDataSetFromFolder",
                     "LoadImageTextDataSetFromFolder", "EDLoRADatasetFromFolder"}
# Loader inputs that name a model file the user places (the Note must name each).
MODEL_FILES = {"CheckpointLoaderSimple", "ControlNetLoader", "EDLoRALoader", "EDLoRAConceptList", "LoRAAsConcept",
               "LoraLoader", "CreateHookLora"}


@pytest.mark.parametrize("path", WORKFLOWS, ids=os.path.basename)
def test_needs_no_input_files_and_its_note_names_every_model(path):
    workflow = _load(path)
    assert not READS_INPUT_FILES & {n["type"] for n in workflow["nodes"]}
    notes = [n for n in workflow["nodes"] if n["type"] == "Note"]
    assert len(notes) == 1 and notes[0]["inputs"] == [] and notes[0]["outputs"] == []
    text = notes[0]["widgets_values"][0]
    assert "What it shows:" in text and "Models you place" in text and "Change first:" in text
    for node in workflow["nodes"]:
        if node["type"] in MODEL_FILES:
            assert node["widgets_values"][0] in text, (node["type"], node["widgets_values"][0])


@pytest.mark.parametrize("path", WORKFLOWS, ids=os.path.basename)
def test_region_boxes_leave_free_canvas_to_draw_another_box(path):
    """A drag on free canvas draws a box (on a box it moves it): each example leaves a 0.2 x 0.2 square free."""
    for node in _load(path)["nodes"]:
        if node["type"] != "RegionBoxes":
            continue
        boxes = json.loads(node["widgets_values"][0])["regions"]
        cells = [[not any(b["x"] - 1e-9 < (i + 0.5) / 20 < b["x"] + b["width"] + 1e-9
                          and b["y"] - 1e-9 < (j + 0.5) / 20 < b["y"] + b["height"] + 1e-9 for b in boxes)
                  for i in range(20)] for j in range(20)]  # free 0.05 cells, [row][column]
        assert any(all(cells[j + dj][i + di] for dj in range(4) for di in range(4))
                   for j in range(17) for i in range(17)), boxes


@pytest.mark.fullsize
@pytest.mark.parametrize("path", SD15_WORKFLOWS, ids=os.path.basename)
def test_workflow_runs_with_official_checkpoints(host, sd15, path, request):
    prompt = comfy_host.ui_to_api(_load(path))
    if any(node["class_type"] == "EDLoRATrain" for node in prompt.values()):
        request.getfixturevalue("trains")
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] == "CheckpointLoaderSimple":
            inputs["ckpt_name"] = sd15[3]
        elif node["class_type"] == "EDLoRALoader":
            stem = os.path.splitext(inputs["concept_name"])[0]
            name = f"{stem}_official.pth"
            test_assets.official_edlora_checkpoint(os.path.join(host.models("edloras"), name),
                                                   words=(f"<{stem}1>", f"<{stem}2>"), seed=len(stem))
            inputs["concept_name"] = name
        elif node["class_type"] == "EmptyLatentImage":
            inputs.update(width=64, height=64)
        elif node["class_type"] == "KSampler":
            inputs["steps"] = 1
        elif node["class_type"] == "GradientFusion":
            inputs.update(resolution=64, steps=1)
        elif node["class_type"] == "RegionalKSampler":
            inputs["steps"] = 1
        elif node["class_type"] == "EDLoRATrain":
            # every widget landed on its input (the UI list has no names)
            assert (inputs["mode"], inputs["crop"], inputs["validation_cfg"], inputs["resume"]) == (
                "edlora", "paper", 7.5, True)
            inputs.update(steps=2, batch_size=1, resolution=64, validation_steps=1, resume=False)
        elif node["class_type"] == "ControlNetLoader":
            control = test_assets.sd15_controlnet(os.path.join(comfy_host.REPO, ".cache", "test-assets"))
            link = os.path.join(host.models("controlnet"), inputs["control_net_name"])
            if not os.path.exists(link):
                os.symlink(control, link)
    result = comfy_host.run_prompt(prompt)
    assert result.success, result.error
    images = [i for out in result.outputs.values() for i in out.get("images", []) if i.get("type") == "output"]
    assert images and os.path.isfile(os.path.join(host.output(), images[0]["subfolder"], images[0]["filename"]))
    for saved in glob.glob(os.path.join(host.output(), "checkpoints", "*.safetensors")):
        os.remove(saved)  # the fused full-size checkpoint is 3.9 GB; its reload is tested in test_fusion_fullsize


def _demo(tmp_path, *args):
    out = subprocess.run([sys.executable, os.path.join(comfy_host.REPO, "scripts", "demo.py"), "--out", str(tmp_path),
                          *args], capture_output=True, text=True, timeout=600, env=os.environ.copy())
    assert out.returncode == 0, out.stderr[-2000:]
    images = [line.split("image: ", 1)[1] for line in out.stdout.splitlines() if "image: " in line]
    assert images and all(os.path.getsize(p) > 0 and p.endswith(".png") for p in images)
    return out.stdout, images


def test_demo_command_runs_a_workflow_on_the_random_testbed(tmp_path):
    stdout, _ = _demo(tmp_path, "--workflow", os.path.join(comfy_host.REPO, "example_workflows",
                                                            "edlora_single_concept.json"))
    assert "random weights" in stdout


def test_demo_command_runs_the_sdxl_regional_workflow_on_the_sdxl_testbed(tmp_path):
    stdout, images = _demo(tmp_path, "--workflow", os.path.join(comfy_host.REPO, "example_workflows",
                                                                 "sdxl_regional_two_characters_pose.json"))
    assert "checkpoint: built-in SDXL testbed model" in stdout and "controlnet: the testbed's" in stdout
    assert "concept alice: random demo concept with words <alice1> <alice2>" in stdout  # words from the boxes
    assert Image.open(images[-1]).size == (64, 64)


def test_demo_command_runs_the_lora_characters_workflow_on_the_sdxl_testbed(tmp_path):
    stdout, images = _demo(tmp_path, "--workflow", os.path.join(comfy_host.REPO, "example_workflows",
                                                                 "sdxl_two_lora_characters.json"), "--steps", "2")
    assert "lora miku.safetensors: random demo LoRA (kohya layout)" in stdout
    assert len(images) == 3  # fused in boxes, stacked, hook LoRAs: one saved image each


def test_default_demo_trains_fuses_places_and_scores(host, tmp_path, trains):
    """The README's main job (short training here): 3 concepts trained, fused, sampled in boxes, scored."""
    if not os.path.isfile(host.pack("testbed.nodes").WORLD_WEIGHTS):
        pytest.skip("the world testbed weights are not in this checkout")
    stdout, images = _demo(tmp_path, "--steps", "10")
    assert "trained 3 concepts" in stdout
    # progress in the terminal: training steps with loss and time left, fusion stages, sampling steps, total
    assert "EDLoRATrain (node" in stdout and "RegionalKSampler (node" in stdout and "KSampler (node" in stdout
    assert "[Mix-of-Show] training rubo: step 10/10, loss" in stdout
    assert "[Mix-of-Show] fusion stage: cross-attention K/V" in stdout and "[demo] total time" in stdout
    assert len(images) == 16  # 8 regional + 8 global-only samples
    pixels = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in images])
    # 3 boxes of 64 px each (recipe.BOX_CANVAS); real pictures, not a constant
    assert pixels.shape == (16, 128, 128, 3) and pixels.std() > 1.0
    report = (tmp_path / "report.md").read_text()
    assert "regional (RegionalKSampler)" in report and "global prompt only (KSampler)" in report
    assert "own body colour" in report
    # the right-concept share with its interval: 24 boxes per sampling, the interval brackets the share
    rows = [row for row in report.splitlines() if row.startswith(("| regional", "| global"))]
    assert len(rows) == 2
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        low, high = (float(v) for v in cells[2].split(" – "))
        assert low <= float(cells[1]) <= high and cells[-1] == "24"
