"""Every shipped front-end file parses as a JavaScript module (node --check)."""
import pathlib
import shutil
import subprocess

import pytest

WEB = pathlib.Path(__file__).resolve().parents[2] / "web" / "js"


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
@pytest.mark.parametrize("path", sorted(WEB.rglob("*.js")), ids=lambda p: p.name)
def test_js_module_parses(path, tmp_path):
    module = tmp_path / (path.stem + ".mjs")  # --check treats .mjs as an ES module
    module.write_text(path.read_text())
    result = subprocess.run(["node", "--check", str(module)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_js_unit_tests_pass():
    tests = pathlib.Path(__file__).resolve().parents[1] / "js"
    result = subprocess.run(["node", "--experimental-default-type=module", "--test", str(tests)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "# fail 0" in result.stdout and "# pass 0" not in result.stdout
