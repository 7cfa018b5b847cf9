"""mixofshow_core must never import the host (STYLE decision 3)."""
import ast
import pathlib
import subprocess
import sys

CORE = pathlib.Path(__file__).resolve().parents[2] / "mixofshow_core"
HOST_MODULES = {"comfy", "comfy_api", "comfy_execution", "comfy_extras", "folder_paths", "server", "nodes",
                "node_helpers", "latent_preview", "execution"}


def test_importing_every_core_module_loads_no_host_module():
    modules = [".".join(p.relative_to(CORE.parent).with_suffix("").parts) for p in CORE.rglob("*.py")]
    modules = [m.removesuffix(".__init__") for m in modules]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(sorted(n for n in sys.modules if n.split('.')[0] in {HOST_MODULES!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=CORE.parent, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert len(modules) >= 10


def test_no_core_file_names_a_host_module_in_an_import():
    offenders = []
    for path in CORE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in HOST_MODULES]
    assert offenders == []
