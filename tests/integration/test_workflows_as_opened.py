"""Every example workflow runs as a new user opens it, on a fresh ComfyUI, over HTTP.

The real server (``main.py --cpu``) starts on an empty base directory (``--base-directory``) with an
empty input folder (``--input-directory``), the pack linked into its custom_nodes, and nothing else but
what a user places before opening a workflow: the model files its Note names, as stand-ins under the same
names (the generated full-size random SD1.5-shaped checkpoint as the named checkpoint, the generated SD1.5
ControlNet as the openpose ControlNet, ED-LoRA concept files in this pack's format with the words the
prompts use; for the SDXL workflows the generated full-size SDXL checkpoint, SDXL ControlNet and SDXL concepts;
these cases are marked ``fullsize``). Nothing is ever copied into the input folder. The testbed's
world workflows (``testbed/workflows``) use the pack's built-in world model and need nothing; world_1 runs before
world_2, which loads the concepts world_1 wrote (the order their Notes give).

Each example workflow is fetched from the server's template route (what the frontend's template browser opens;
the testbed's are read from their files, as a user drags them in),
converted to an API prompt as the frontend's graphToPrompt does (``comfy_host.ui_to_api``; the Note is
skipped), queued with POST /prompt and followed on /history/<id> until it finishes with an image.

For CPU time only, the API prompt is then cheapened without adding or replacing any node or input file:
samplers (KSampler, RegionalKSampler) 1 step; Empty Latent Image 64x64, batch 1; Gradient Fusion 1 step at
64 px; ED-LoRA Train 2 steps at 64 px, batch 1, validation images with 1 step.
"""
import glob
import json
import os
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from integration.host_support import PACK_FOLDER, fresh_server
from PIL import Image

import comfy_host
import test_assets

PACK = PACK_FOLDER
EXAMPLES = os.path.join(comfy_host.REPO, "example_workflows")
TESTBED = os.path.join(comfy_host.REPO, "testbed", "workflows")
WORKFLOWS = sorted(os.path.basename(p) for folder in (EXAMPLES, TESTBED) for p in glob.glob(os.path.join(folder,
                                                                                                       "*.json")))
# The world workflows run on the built-in world model; the others on the full-size SD1.5 stand-in (slow); the
# SDXL ones in test_sdxl_workflows_as_opened.py, on the full-size SDXL stand-in in a process of their own.
CASES = [pytest.param(name, marks=() if name.startswith("world_") else pytest.mark.fullsize) for name in WORKFLOWS
         if not name.startswith("sdxl_")]
CACHE = os.environ.get("MOS_CACHE", os.path.join(comfy_host.REPO, ".cache"))
CHEAPER = {  # class_type -> inputs set after conversion (CPU time only)
    "KSampler": {"steps": 1},
    "RegionalKSampler": {"steps": 1},
    "EmptyLatentImage": {"width": 64, "height": 64, "batch_size": 1},
    "GradientFusion": {"steps": 1, "resolution": 64},
    "EDLoRATrain": {"steps": 2, "batch_size": 1, "resolution": 64, "validation_steps": 1},
}
_SUCCEEDED: set[str] = set()  # workflows that ran in this module's server


def _get(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def _place_models(base, workflow):
    """The model files ``workflow`` names, placed as a user would: stand-ins under the same names."""
    sdxl = test_assets.workflow_is_sdxl(workflow)
    for node in workflow["nodes"]:
        folder = test_assets.WORKFLOW_MODEL_FOLDERS.get(node["type"])
        if folder is None or (base / "models" / folder / node["widgets_values"][0]).exists():
            continue
        (base / "models" / folder).mkdir(parents=True, exist_ok=True)
        test_assets.place_stand_in(node["type"], str(base / "models" / folder / node["widgets_values"][0]), sdxl,
                                   os.path.join(CACHE, "test-assets"))


def fresh_base(tmp_path_factory):
    """An empty ComfyUI base directory, or a skip on hosts without --base-directory."""
    cli = open(os.path.join(comfy_host.comfy_path(), "comfy", "cli_args.py")).read()
    if "--base-directory" not in cli:
        pytest.skip("this ComfyUI has no --base-directory (fresh-install layout); the default host 0.3.75 has")
    return tmp_path_factory.mktemp("fresh_comfyui")


@pytest.fixture(scope="module")
def server(host, tmp_path_factory):
    """(url, base): a fresh ComfyUI (empty models and input folders; each test places its workflow's models)."""
    base = fresh_base(tmp_path_factory)
    with fresh_server(base) as url:
        yield url, base


def _queue(url, prompt):
    request = urllib.request.Request(url + "/prompt", data=json.dumps({"prompt": prompt}).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return json.loads(r.read())["prompt_id"]
    except urllib.error.HTTPError as err:
        pytest.fail(f"the server refused the prompt: {err.read().decode()[:3000]}")


def _finished(url, prompt_id, timeout_s=900):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            entry = _get(f"{url}/history/{prompt_id}").get(prompt_id)
        except (TimeoutError, urllib.error.URLError):  # a busy server on a loaded machine: ask again
            entry = None
        if entry and entry.get("status", {}).get("status_str") in ("success", "error"):
            return entry
        time.sleep(0.5)
    pytest.fail(f"prompt {prompt_id} did not finish in {timeout_s} s")


@pytest.mark.parametrize("name", CASES)
def test_example_workflow_runs_as_opened(server, name, request):
    run_as_opened(server, name, request)


def run_as_opened(server, name, request):
    """Open ``name`` from the template route (world workflows: from their file), place its models, queue it
    cheapened, and check its images (and the pose drawn from the boxes)."""
    url, base = server
    placed = [f for _, _, files in os.walk(base / "input") for f in files]  # (newer hosts make an empty input/3d)
    assert not placed  # nothing was put in place for the workflow
    if name == "world_2_fuse_and_regions.json" and "world_1_train_concepts.json" not in _SUCCEEDED:
        pytest.fail("world_2 loads the concepts world_1 trains: run both, in order (as its Note says)")
    templates = _get(url + "/workflow_templates")[PACK]
    assert sorted(templates) == sorted(n.removesuffix(".json") for n in os.listdir(EXAMPLES) if n.endswith(".json"))
    if name.startswith("world_"):  # the testbed's: dragged in from testbed/workflows, not a template
        with open(os.path.join(TESTBED, name)) as f:
            workflow = json.load(f)
    else:
        workflow = _get(f"{url}/api/workflow_templates/{PACK}/{name}")  # what the template browser opens
    notes = [n for n in workflow["nodes"] if n["type"] == "Note"]
    assert len(notes) == 1 and "Change first:" in notes[0]["widgets_values"][0]
    prompt = comfy_host.ui_to_api(workflow)
    if any(node["class_type"] == "EDLoRATrain" for node in prompt.values()):
        request.getfixturevalue("trains")
    _place_models(base, workflow)
    for node in prompt.values():
        if node["class_type"] == "EDLoRATrain":  # every widget landed on its input (the UI list has no names)
            inputs = node["inputs"]
            assert (inputs["mode"], inputs["validation_cfg"], inputs["resume"]) == ("edlora", 7.5, True)
            assert inputs["crop"] in ("paper", "center") and inputs["precision"] == "auto"
        node["inputs"].update(CHEAPER.get(node["class_type"], {}))
    entry = _finished(url, _queue(url, prompt))
    errors = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert entry["status"]["status_str"] == "success", errors
    images = [(key, i) for key, out in entry["outputs"].items() for i in out.get("images", [])]
    assert images, entry["outputs"]
    for _, image in images:
        folder = base / ("output" if image["type"] == "output" else image["type"])
        assert Image.open(folder / image["subfolder"] / image["filename"]).size[0] > 0
    for key, image in images:
        if prompt[key]["class_type"] == "PreviewImage" and prompt[prompt[key]["inputs"]["images"][0]][
                "class_type"] == "RegionPoseSkeleton":  # the pose drawn from the boxes: a figure in each box
            pose = np.asarray(Image.open(base / "temp" / image["subfolder"] / image["filename"]).convert("RGB"))
            boxes = json.loads(next(n["inputs"]["regions_json"] for n in prompt.values()
                                    if n["class_type"] == "RegionBoxes"))["regions"]
            height, width = pose.shape[:2]
            outside = np.ones((height, width), dtype=bool)
            for box in boxes:
                rows = slice(int(box["y"] * height), int((box["y"] + box["height"]) * height))
                cols = slice(int(box["x"] * width), int((box["x"] + box["width"]) * width))
                assert (pose[rows, cols].max(axis=2) > 100).mean() > 0.01
                outside[rows, cols] = False
            assert pose[outside].max() == 0  # black wherever no box is (the free canvas too)
    _SUCCEEDED.add(name)
    for saved in (base / "output" / "checkpoints").glob("*.safetensors"):
        saved.unlink()  # the fused full-size checkpoint (GBs); its reload is tested in test_fusion_fullsize
