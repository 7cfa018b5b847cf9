"""The pack is ready for the Comfy Registry, and every example workflow has its template-browser thumbnail.

Registry (docs.comfy.org/registry/specifications, comfy-cli's config parser): [tool.comfy] has PublisherId,
DisplayName and Icon (SVG/PNG/JPG/GIF, square, at most 400 px; here a file of this repository, since the pack
has no public repository to link yet), requires-comfyui in the form comfy-cli accepts ([op]X.Y.Z, comma
separated) and admitting the CI host 0.3.75; no placeholder or example URL anywhere in pyproject.toml; ruff
selects the rules `comfy node validate` runs (S102 exec, S307 eval, E702 two statements on a line).

Thumbnails: the frontend (1.32.9) fetches /api/workflow_templates/<pack>/<name>.jpg for each custom-node
template, served from example_workflows/; so each <name>.json has a JPEG <name>.jpg (square, small, made by
scripts/thumbnails.py) and no image there lacks its workflow.

Each check is also run on a copy with one thing broken, and must report it.
"""
from __future__ import annotations

import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from PIL import Image

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[2]
CI_HOST = "0.3.75"
ICON_TYPES = {".svg", ".png", ".jpg", ".jpeg", ".gif"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".svg"}
THUMBNAIL_MAX_BYTES = 60_000
VALIDATE_RULES = ("S102", "S307", "E702")
# comfy-cli's registry/config_parser.validate_version: each comma-separated part is [operator][X.Y.Z[-suffix]]
VERSION_PART = re.compile(r"^(?:(==|>=|<=|!=|~=|>|<|<>|=)\s*)?(\d+\.\d+\.\d+(?:-[a-zA-Z0-9]+)?)?$")
PLACEHOLDER_URL = re.compile(
    r"example\.(com|org|net)|localhost|127\.0\.0\.1|username|your[-_]?(name|user|org|repo)|<[^>]*>|placeholder"
    r"|xxx|todo|github\.com/mixofshow/comfyui-mixofshow", re.IGNORECASE)


def _svg_size(path: Path) -> tuple[float, float]:
    root = ET.parse(path).getroot()
    if root.tag not in ("svg", "{http://www.w3.org/2000/svg}svg"):
        raise ValueError(f"root element is {root.tag}, not svg")
    if "viewBox" in root.attrib:
        _, _, width, height = (float(v) for v in re.split(r"[ ,]+", root.attrib["viewBox"].strip()))
    else:
        width, height = (float(re.match(r"[\d.]+", root.attrib[k]).group()) for k in ("width", "height"))
    return width, height


def icon_problems(icon: str, root: Path) -> list[str]:
    if not icon:
        return ["[tool.comfy] Icon is empty"]
    if re.match(r"https?://", icon):  # a raw URL of this repository's file: its path must end in a file here
        parts = icon.split("?")[0].split("/")
        local = next((root.joinpath(*parts[i:]) for i in range(3, len(parts)) if root.joinpath(*parts[i:]).is_file()),
                     None)
        if local is None:
            return [f"Icon URL {icon} names no file of this repository"]
    else:
        local = root / icon
    if local.suffix.lower() not in ICON_TYPES:
        return [f"Icon {icon} is not SVG, PNG, JPG or GIF"]
    if not local.is_file():
        return [f"Icon {icon} does not exist"]
    try:
        if local.suffix.lower() == ".svg":
            width, height = _svg_size(local)
        else:
            with Image.open(local) as image:
                image.verify()
                width, height = image.size
    except Exception as err:  # any parse failure means it is not an image
        return [f"Icon {icon} is not a readable image: {err}"]
    problems = []
    if abs(width - height) > 0.5:
        problems.append(f"Icon {icon} is not square ({width} x {height})")
    if max(width, height) > 400:
        problems.append(f"Icon {icon} is larger than 400 px ({width} x {height})")
    return problems


def registry_problems(text: str, root: Path) -> list[str]:
    """What keeps pyproject.toml ``text`` (of the repository at ``root``) from being registry-ready."""
    data = tomllib.loads(text)
    comfy = data.get("tool", {}).get("comfy", {})
    problems = [f"[tool.comfy] {key} is missing or empty" for key in ("PublisherId", "DisplayName")
                if not str(comfy.get(key, "")).strip()]
    problems += icon_problems(str(comfy.get("Icon", "")), root)
    problems += [f"placeholder or example URL: {url}" for url in re.findall(r"https?://[^\s\"'>]+", text)
                 if PLACEHOLDER_URL.search(url)]
    requires = str(comfy.get("requires-comfyui", "")).strip()
    if not requires:
        problems.append("[tool.comfy] requires-comfyui is missing")
    elif not all(VERSION_PART.match(part.strip()) for part in requires.split(",")):
        problems.append(f"requires-comfyui {requires!r} is not in the form comfy-cli accepts ([op]X.Y.Z, ...)")
    else:
        from packaging.specifiers import SpecifierSet

        if CI_HOST not in SpecifierSet(requires):
            problems.append(f"requires-comfyui {requires!r} excludes {CI_HOST}, the host every CI run checks")
    selected = data.get("tool", {}).get("ruff", {}).get("lint", {}).get("select", [])
    for rule in VALIDATE_RULES:
        if not any(rule.startswith(prefix) for prefix in selected):
            problems.append(f"ruff does not select {rule} (comfy node validate checks it)")
    return problems


def thumbnail_problems(folder: Path) -> list[str]:
    workflows = {p.stem for p in folder.glob("*.json")}
    images = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
    problems = [f"{name}.json has no thumbnail {name}.jpg" for name in sorted(workflows)
                if not (folder / f"{name}.jpg").is_file()]
    for image in sorted(images):
        if image.suffix != ".jpg":
            problems.append(f"{image.name}: the template browser asks for <name>.jpg only")
        elif image.stem not in workflows:
            problems.append(f"{image.name} has no workflow {image.stem}.json")
        else:
            try:
                with Image.open(image) as opened:
                    kind, size = opened.format, opened.size
            except Exception as err:  # any parse failure means it is not an image
                problems.append(f"{image.name} is not a readable image: {err}")
                continue
            if kind != "JPEG":
                problems.append(f"{image.name} is {kind}, not JPEG")
            if size[0] != size[1]:
                problems.append(f"{image.name} is not square {size} (the browser crops to a square)")
            if image.stat().st_size > THUMBNAIL_MAX_BYTES:
                problems.append(f"{image.name} has {image.stat().st_size} bytes (over {THUMBNAIL_MAX_BYTES})")
    return problems


def test_pyproject_is_registry_ready():
    assert registry_problems((REPO / "pyproject.toml").read_text(), REPO) == []


def test_every_example_workflow_has_its_thumbnail():
    assert list((REPO / "example_workflows").glob("*.json"))
    assert thumbnail_problems(REPO / "example_workflows") == []


def _drop(key):
    return lambda text: re.sub(rf"(?m)^{re.escape(key)}\s*=.*\n", "", text)


def _set(key, value):
    return lambda text: re.sub(rf"(?m)^{re.escape(key)}\s*=.*$", lambda _: f"{key} = {value}", text)


PYPROJECT_BREAKAGES = {
    "no PublisherId": (_drop("PublisherId"), "PublisherId"),
    "empty DisplayName": (_set("DisplayName", '""'), "DisplayName"),
    "no Icon": (_drop("Icon"), "Icon is empty"),
    "Icon missing": (_set("Icon", '"docs/images/no_such_icon.svg"'), "does not exist"),
    "Icon not an image": (_set("Icon", '"pyproject.toml"'), "not SVG, PNG"),
    "Icon URL elsewhere": (_set("Icon", '"https://raw.githubusercontent.com/a/b/main/nothing.png"'), "names no file"),
    "placeholder URL": (lambda t: t + '\n[project.urls]\nRepository = "https://github.com/username/repository"\n',
                        "placeholder"),
    "old placeholder repository": (
        lambda t: t + '\n[project.urls]\nRepository = "https://github.com/mixofshow/comfyui-mixofshow"\n',
        "placeholder"),
    "example URL in a comment": (lambda t: t + "\n# see https://example.com/docs\n", "placeholder"),
    "no requires-comfyui": (_drop("requires-comfyui"), "requires-comfyui is missing"),
    "requires-comfyui not a version": (_set("requires-comfyui", '"latest"'), "not in the form"),
    "requires-comfyui excludes CI host": (_set("requires-comfyui", '">=1.0.0"'), "excludes"),
    "validate rules not selected": (_set("select", '["E", "F"]'), "S102"),
}


@pytest.mark.parametrize("breakage", PYPROJECT_BREAKAGES)
def test_broken_pyproject_is_caught(breakage):
    text = (REPO / "pyproject.toml").read_text()
    change, expected = PYPROJECT_BREAKAGES[breakage]
    broken = change(text)
    assert broken != text, "the breakage did not apply"
    problems = registry_problems(broken, REPO)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize("size, message", [((400, 300), "not square"), ((512, 512), "larger than 400")])
def test_bad_raster_icon_is_caught(tmp_path, size, message):
    Image.new("RGB", size).save(tmp_path / "icon.png")
    assert any(message in p for p in icon_problems("icon.png", tmp_path))


def test_svg_that_is_not_svg_is_caught(tmp_path):
    (tmp_path / "icon.svg").write_text("<html><body>not an icon</body></html>")
    assert any("not a readable image" in p for p in icon_problems("icon.svg", tmp_path))
    (tmp_path / "icon.svg").write_text("not xml at all")
    assert any("not a readable image" in p for p in icon_problems("icon.svg", tmp_path))


def _missing(folder):
    next(folder.glob("*.jpg")).unlink()


def _stray(folder):
    shutil.copy(next(folder.glob("*.jpg")), folder / "no_such_workflow.jpg")


def _png(folder):
    first = next(folder.glob("*.jpg"))
    first.rename(first.with_suffix(".png"))


def _not_jpeg(folder):
    first = next(folder.glob("*.jpg"))
    Image.open(first).convert("RGB").save(first, "PNG")


def _not_square(folder):
    Image.new("RGB", (512, 256)).save(next(folder.glob("*.jpg")), "JPEG")


def _too_big(folder):
    import numpy as np

    noise = np.random.default_rng(0).integers(0, 256, (1024, 1024, 3), dtype=np.uint8)
    Image.fromarray(noise).save(next(folder.glob("*.jpg")), "JPEG", quality=95)


THUMBNAIL_BREAKAGES = {
    "missing": (_missing, "has no thumbnail"),
    "without workflow": (_stray, "has no workflow"),
    "png instead of jpg": (_png, "asks for <name>.jpg"),
    "not a JPEG inside": (_not_jpeg, "not JPEG"),
    "not square": (_not_square, "not square"),
    "too large": (_too_big, "bytes"),
}


@pytest.mark.parametrize("breakage", THUMBNAIL_BREAKAGES)
def test_broken_thumbnails_are_caught(tmp_path, breakage):
    folder = tmp_path / "example_workflows"  # two workflows with good thumbnails, then one thing broken
    folder.mkdir()
    for name in ("first", "second"):
        (folder / f"{name}.json").write_text("{}")
        Image.new("RGB", (256, 256), "teal").save(folder / f"{name}.jpg", "JPEG")
    assert thumbnail_problems(folder) == []
    change, expected = THUMBNAIL_BREAKAGES[breakage]
    change(folder)
    problems = thumbnail_problems(folder)
    assert any(expected in p for p in problems), problems
