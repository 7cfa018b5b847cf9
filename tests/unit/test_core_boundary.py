"""mixofshow_core must never import the host (STYLE decision 3)."""
import ast
import pathlib
import subprocess
import sys

CORE = pathlib.Path(__file__).resolve().parents[2] / "mixofshow_core"
REPO = CORE.parent
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


def _imported_modules(path: pathlib.Path) -> list[tuple[int, str]]:
    """(relative level, dotted module) of every import in ``path``, `from . import x` giving '.x' names."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(0, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            found += [(node.level, f"{base}.{a.name}".strip(".")) for a in node.names]
    return found


def _resolve(path: pathlib.Path, level: int, module: str) -> str:
    """Repo-relative dotted name of an import written in ``path`` (absolute imports are returned as written)."""
    if level == 0:
        return module
    package = list(path.relative_to(REPO).parent.parts)
    package = package[: len(package) - (level - 1)]
    return ".".join(package + ([module] if module else []))



def test_the_product_imports_nothing_from_the_testbed():
    """STYLE decision 7: mixofshow_core/ (the method) and nodes/ (the product) never reach into testbed/."""
    offenders = []
    for root in (CORE, REPO / "nodes"):
        for path in root.rglob("*.py"):
            for level, module in _imported_modules(path):
                target = _resolve(path, level, module)
                if target.split(".")[0] == "testbed":
                    offenders.append(f"{path.relative_to(REPO)}: {'.' * level}{module}")
    assert offenders == []
    assert any((REPO / "testbed").rglob("*.py")), "the testbed package is where this test expects it"


def test_the_boundary_check_sees_a_relative_import_of_the_testbed():
    """The resolver above must catch `from ...testbed import x` written inside nodes/ (else the check is empty)."""
    inside = REPO / "nodes" / "regions" / "nodes.py"
    assert _resolve(inside, 3, "testbed.model") == "testbed.model"
    assert _resolve(inside, 2, "testbed.model") == "nodes.testbed.model"
    assert _resolve(inside, 0, "testbed.world") == "testbed.world"
