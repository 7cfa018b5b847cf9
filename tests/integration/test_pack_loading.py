"""The pack loads under any folder name, exports what ComfyUI looks for, and declares itself in pyproject."""
import os
import subprocess
import sys

import pytest
import tomllib

import comfy_host

SCRIPT = """
import os, sys, comfy_host
host = comfy_host.boot(sys.argv[2], pack_dir=sys.argv[1])
import nodes
mod = host.pack_module
assert set(mod.NODE_CLASS_MAPPINGS) <= set(nodes.NODE_CLASS_MAPPINGS)
assert set(mod.NODE_CLASS_MAPPINGS) == set(mod.NODE_DISPLAY_NAME_MAPPINGS)
assert mod.WEB_DIRECTORY == "./web"  # served at /extensions/<folder>/: js/ (front end), docs/ (node help pages)
web = os.path.join(sys.argv[1], mod.WEB_DIRECTORY)
assert os.path.isfile(os.path.join(web, "js", "mixofshow.js"))
assert os.path.isdir(os.path.join(web, "docs"))  # each node's page: tests/integration/test_node_help.py
print("LOADED", host.pack_name.replace("_x_", ".").rsplit("/", 1)[-1], sorted(mod.NODE_CLASS_MAPPINGS))
"""


@pytest.mark.parametrize("folder", ["ComfyUI-Mix-of-Show", "mix of show (copy)", "mixofshow"])
def test_pack_loads_under_any_folder_name(tmp_path, folder):
    target = tmp_path / folder
    os.symlink(comfy_host.REPO, target)
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(target), str(tmp_path / "work")],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": os.path.join(comfy_host.REPO, "scripts")})
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"LOADED {folder} " in out.stdout and "EDLoRALoader" in out.stdout


def test_pyproject_declares_project_and_comfy_registry_fields():
    with open(os.path.join(comfy_host.REPO, "pyproject.toml"), "rb") as f:
        meta = tomllib.load(f)
    assert meta["project"]["name"] and meta["project"]["version"]
    assert meta["tool"]["comfy"]["DisplayName"] == "Mix-of-Show"
    assert "web" not in meta["tool"]["comfy"]  # WEB_DIRECTORY is the one registration path (STYLE)
