"""The SDXL example workflows run as opened, on a fresh ComfyUI over HTTP, as the SD1.5 ones do
(test_workflows_as_opened.py, whose runner this uses), with the generated full-size SDXL stand-ins: checkpoint
(6.8 GB), openpose ControlNet and concepts under the names their Notes give.

The server runs the UNet in bfloat16 (``--bf16-unet``) and the text encoders in float16 (``--fp16-text-enc``), as
a user with little memory would: in float32 the full-size SDXL takes 14 GB here before fusion's patches, and its
fusion went past this machine's 24 GB (measured: 19.2 GB in bfloat16). scripts/run_tests.sh runs this module in
a pytest process of its own (marker ``sdxl_fullsize``), so that nothing else the suite loaded shares the memory.
"""
import glob
import os
import subprocess
import sys

import pytest
from integration.host_support import fresh_server
from integration.test_workflows_as_opened import CACHE, EXAMPLES, fresh_base, run_as_opened

import comfy_host

pytestmark = pytest.mark.sdxl_fullsize
SDXL_WORKFLOWS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(EXAMPLES, "sdxl_*.json")))
FLAGS = ("--bf16-unet", "--fp16-text-enc")


@pytest.fixture(scope="module")
def server(host, tmp_path_factory):
    # the stand-ins first, in a process of their own: generating the checkpoint peaks at 8 GB, which this process
    # would keep while the server needs the memory
    script = os.path.join(comfy_host.REPO, "scripts", "test_assets.py")
    subprocess.run([sys.executable, script, "sdxl_checkpoint", "sdxl_controlnet", "--cache",
                    os.path.join(CACHE, "test-assets")], check=True, env=os.environ.copy())
    base = fresh_base(tmp_path_factory)
    with fresh_server(base, FLAGS) as url:
        yield url, base


def test_the_sdxl_examples_are_these_four():
    assert SDXL_WORKFLOWS == ["sdxl_fuse_two_characters.json", "sdxl_regional_two_characters_pose.json",
                              "sdxl_train_one_concept.json", "sdxl_two_lora_characters.json"]


@pytest.mark.parametrize("name", SDXL_WORKFLOWS)
def test_sdxl_example_workflow_runs_as_opened(server, name, request):
    run_as_opened(server, name, request)
