"""Regenerate example_workflows/<name>.jpg, the thumbnails ComfyUI's template browser shows.

The frontend (1.32.9, the one ComfyUI 0.3.75 pins) lists a custom node's templates from GET
/workflow_templates and gives each the fixed mediaType "image", mediaSubtype "jpg"; its thumbnail URL is
/api/workflow_templates/<pack folder>/<name>.jpg, which the host serves straight from the pack's
example_workflows/ folder. So every thumbnail is a JPEG with its workflow's base name, next to it.

Each workflow runs as a new user opens it, the way tests/integration/test_workflows_as_opened.py runs it: a
fresh ComfyUI (``main.py --cpu``, ``host_support.comfy_server``) on an empty base directory with the pack
linked into custom_nodes, the workflow fetched from the template route, converted by
``comfy_host.ui_to_api``, queued with POST /prompt and followed on /history. The thumbnail is a card of the
images its output nodes (SaveImage, PreviewImage) give, fetched with GET /view, under the workflow's title
(the first line of its Note), each captioned with the node that made it; nothing is drawn that the run did
not produce, and the card says which model files it ran on.

Model files: ``--models DIR`` supplies real ones (DIR/<folder>/<name> or DIR/<name>, e.g.
DIR/checkpoints/v1-5-pruned-emaonly.safetensors). Each file not found there is a generated stand-in, as in
the test (random SD1.5- or SDXL-shaped checkpoint and ControlNet, random concepts with the prompts' words), so its
pictures are noise; the card says so. With any stand-in the prompt is cheapened as in the test (1 step,
64 px, 2 training steps); ``--as-opened`` keeps the workflow's own settings.

    scripts/thumbnails.py                                   # every workflow, stand-in model files
    scripts/thumbnails.py edlora_single_concept --models ~/ComfyUI/models --as-opened
"""
from __future__ import annotations

import argparse
import io
import json
import os
import signal
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "scripts"), str(REPO / "tests")]

import comfy_host  # noqa: E402
import test_assets  # noqa: E402

PACK = "ComfyUI-Mix-of-Show"  # the folder name a user's custom_nodes/ gives the pack
WORKFLOWS = REPO / "example_workflows"
CACHE = Path(os.environ.get("MOS_CACHE", REPO / ".cache"))
FOLDERS = test_assets.WORKFLOW_MODEL_FOLDERS
CHEAPER = {  # class_type -> inputs set after conversion (CPU time only), as the as-opened test does
    "KSampler": {"steps": 1},
    "RegionalKSampler": {"steps": 1},
    "EmptyLatentImage": {"width": 64, "height": 64, "batch_size": 1},
    "GradientFusion": {"steps": 1, "resolution": 64},
    "EDLoRATrain": {"steps": 2, "batch_size": 1, "resolution": 64, "validation_steps": 1},
}
SIZE = 512  # the browser shows a square card (object-cover)
MAX_BYTES = 60_000
MAX_PANELS = 4
BACKGROUND, ACCENT, TEXT, MUTED, FRAME = "#1d2230", "#2bb5a5", "#f2f2f2", "#9aa3b5", "#3a4154"
PACK_NODE, HOST_NODE, NODE_BODY = "#1f8a7e", "#4a5066", "#2a3040"
# the frontend's default (dark) link colours by type
LINK = {"CLIP": "#FFD500", "CONDITIONING": "#FFA931", "CONTROL_NET": "#6EE7B7", "IMAGE": "#64B5F6",
        "LATENT": "#FF9CF9", "MASK": "#81C784", "MODEL": "#B39DDB", "VAE": "#FF6E6E"}
TITLE_H = 30  # litegraph draws a node's title bar above its pos


def _get(url: str, timeout: float = 60) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def _get_json(url: str):
    return json.loads(_get(url))


def place_models(base: Path, workflow: dict, models_dir: Path | None) -> list[str]:
    """Put the model files ``workflow`` names into base/models: from ``models_dir`` or as stand-ins.

    Returns the names that are stand-ins (also those an earlier workflow placed).
    """
    stand_ins = []
    assets = str(CACHE / "test-assets")
    for node in workflow["nodes"]:
        folder = FOLDERS.get(node["type"])
        if folder is None:
            continue
        name = node["widgets_values"][0]
        target = base / "models" / folder / name
        if target.exists():
            if target.resolve().is_relative_to((CACHE / "test-assets").resolve()) or not target.is_symlink():
                stand_ins.append(name)  # a generated stand-in (concepts are written in place)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        real = [p for p in ((models_dir / folder / name), (models_dir / name)) if p.is_file()] if models_dir else []
        if real:
            target.symlink_to(real[0].resolve())
            continue
        stand_ins.append(name)
        test_assets.place_stand_in(node["type"], str(target), test_assets.workflow_is_sdxl(workflow), assets)
    return stand_ins


def run(url: str, prompt: dict, timeout_s: float = 1800) -> dict:
    """Queue ``prompt`` and wait for its history entry; raises with the host's errors on failure."""
    request = urllib.request.Request(url + "/prompt", data=json.dumps({"prompt": prompt}).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        prompt_id = json.loads(_get_url(request))["prompt_id"]
    except urllib.error.HTTPError as err:
        raise RuntimeError(f"the server refused the prompt: {err.read().decode()[:3000]}") from err
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            entry = _get_json(f"{url}/history/{prompt_id}").get(prompt_id)
        except (TimeoutError, urllib.error.URLError):  # a busy server on a loaded machine: ask again
            entry = None
        status = (entry or {}).get("status", {}).get("status_str")
        if status == "success":
            return entry
        if status == "error":
            errors = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_error"]
            raise RuntimeError(f"the prompt failed: {json.dumps(errors)[:3000]}")
        time.sleep(0.5)
    raise RuntimeError(f"prompt {prompt_id} did not finish in {timeout_s} s")


def _get_url(request: urllib.request.Request) -> bytes:
    with urllib.request.urlopen(request, timeout=60) as r:
        return r.read()


def output_images(url: str, workflow: dict, prompt: dict, entry: dict, object_info: dict):
    """[(image, caption)] of the run's output nodes: saved images first, then previews, in graph order."""
    order = {str(node["id"]): i for i, node in enumerate(workflow["nodes"])}
    keys = sorted(entry["outputs"], key=lambda k: (prompt[k]["class_type"] != "SaveImage", order.get(k, 0)))
    panels = []
    for key in keys:
        if not entry["outputs"][key].get("images") or "images" not in prompt[key]["inputs"]:
            continue  # an output node that shows text or saves files (bundle, checkpoint)
        source_id, source_slot = prompt[key]["inputs"]["images"]
        source = prompt[source_id]["class_type"]
        info = object_info.get(source, {})
        source_name = info.get("display_name") or source
        names = info.get("output_name") or info.get("output") or []
        output = names[source_slot] if source_slot < len(names) else "IMAGE"
        kind = "saved" if prompt[key]["class_type"] == "SaveImage" else "preview"
        caption = source_name if output in ("IMAGE", "image") else f"{source_name}: {output}"
        for image in entry["outputs"][key].get("images", []):
            query = urllib.parse.urlencode({k: image[k] for k in ("filename", "subfolder", "type")})
            picture = Image.open(io.BytesIO(_get(f"{url}/view?{query}"))).convert("RGB")
            panels.append((picture, f"{caption} ({kind}, {picture.width}x{picture.height})"))
    return panels[:MAX_PANELS]


def _font(size: int):
    return ImageFont.load_default(size=size)


def _fit(picture: Image.Image, width: int, height: int) -> Image.Image:
    """Scale to fit (width, height); whole-number enlargements keep the pixels (nearest), others Lanczos."""
    scale = min(width / picture.width, height / picture.height)
    if scale >= 2:
        scale = int(scale)
        return picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    return picture.resize(size, Image.LANCZOS)


def graph_miniature(workflow: dict, object_info: dict, width: int, height: int) -> Image.Image:
    """The workflow's graph as saved (positions, sizes, links; the Note left out), scaled into the box:
    this pack's nodes teal, the host's grey, links in the frontend's colours."""
    nodes = {n["id"]: n for n in workflow["nodes"] if n["type"] != "Note"}
    left = min(n["pos"][0] for n in nodes.values())
    top = min(n["pos"][1] - TITLE_H for n in nodes.values())
    right = max(n["pos"][0] + n["size"][0] for n in nodes.values())
    bottom = max(n["pos"][1] + n["size"][1] for n in nodes.values())
    scale = min(width / (right - left), height / (bottom - top))
    ox = (width - (right - left) * scale) / 2 - left * scale
    oy = (height - (bottom - top) * scale) / 2 - top * scale
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)

    def at(x, y):
        return ox + x * scale, oy + y * scale

    for _, source, out_slot, target, in_slot, kind in workflow["links"]:
        if source not in nodes or target not in nodes:
            continue
        a, b = nodes[source], nodes[target]
        x0, y0 = at(a["pos"][0] + a["size"][0], a["pos"][1] + 14 + 20 * out_slot)
        x1, y1 = at(b["pos"][0], b["pos"][1] + 14 + 20 * in_slot)
        bend = max(abs(x1 - x0) / 2, 12)
        points = [((1 - t) ** 3 * x0 + 3 * (1 - t) ** 2 * t * (x0 + bend) + 3 * (1 - t) * t ** 2 * (x1 - bend)
                   + t ** 3 * x1, (1 - t) ** 3 * y0 + 3 * (1 - t) ** 2 * t * y0 + 3 * (1 - t) * t ** 2 * y1
                   + t ** 3 * y1) for t in (i / 24 for i in range(25))]
        draw.line(points, fill=LINK.get(kind, MUTED), width=2)
    font = _font(max(7, min(14, round(TITLE_H * scale * 0.8))))
    for node in nodes.values():
        info = object_info.get(node["type"], {})
        ours = str(info.get("category", "")).startswith("Mix-of-Show") or "custom_nodes" in str(
            info.get("python_module", ""))
        x0, y0 = at(node["pos"][0], node["pos"][1] - TITLE_H)
        x1, y1 = at(node["pos"][0] + node["size"][0], node["pos"][1] + node["size"][1])
        bar = at(0, node["pos"][1])[1]
        radius = max(2, round(8 * scale))
        draw.rounded_rectangle((x0, y0, x1, y1), radius=radius, fill=NODE_BODY)
        draw.rounded_rectangle((x0, y0, x1, bar), radius=radius, fill=PACK_NODE if ours else HOST_NODE)
        name = (node.get("title") or info.get("display_name") or node["type"]).removesuffix(" (Mix-of-Show)")
        while name and draw.textlength(name, font=font) > x1 - x0 - 4:
            name = name[:-2] + "…" if len(name) > 2 else ""
        draw.text((x0 + 3, (y0 + bar) / 2), name, font=font, fill=TEXT, anchor="lm")
    return image


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> list[str]:
    for chars in range(80, 10, -2):
        lines = textwrap.wrap(text, chars)
        if all(draw.textlength(line, font=font) <= width for line in lines):
            return lines
    return textwrap.wrap(text, 10)


def compose(title: str, panels: list[tuple[Image.Image, str]], footer: str, graph: Image.Image | None = None,
            size: int = SIZE) -> Image.Image:
    """A square card: the pack's name and the workflow's title; ``graph`` (if given) above a row of the images,
    else the images side by side (2 x 2 for 3-4); each image captioned; a footer saying what they were
    rendered on."""
    card = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(card)
    margin = size // 28
    inner = size - 2 * margin
    small, caption_font, title_font = _font(size // 36), _font(size // 40), _font(size // 22)
    line_h = size // 40 + size // 128
    y = margin
    draw.text((margin, y), "MIX-OF-SHOW", font=small, fill=ACCENT)
    y += size // 36 + size // 64
    for line in _wrap(draw, title, title_font, inner)[:2]:
        draw.text((margin, y), line, font=title_font, fill=TEXT)
        y += size // 22 + size // 128
    footer_lines = _wrap(draw, footer, caption_font, inner)[:3]
    footer_top = size - margin - len(footer_lines) * line_h
    for i, line in enumerate(footer_lines):
        draw.text((margin, footer_top + i * line_h), line, font=caption_font, fill=MUTED)
    top, bottom = y + size // 48, footer_top - size // 48
    gap = size // 32
    if graph is not None:
        graph_h = (bottom - top) * 11 // 20
        card.paste(graph, (margin + (inner - graph.width) // 2, top + (graph_h - graph.height) // 2))
        top += graph_h + gap // 2
    columns = len(panels) if len(panels) <= 2 or graph is not None else 2
    rows = 1 if len(panels) <= 2 or graph is not None else 2
    cell_w = (inner - (columns - 1) * gap) // columns
    cell_h = (bottom - top - (rows - 1) * gap) // rows
    caption_h = 2 * line_h + size // 64
    for i, (picture, caption) in enumerate(panels):
        x0 = margin + (i % columns) * (cell_w + gap)
        y0 = top + (i // columns) * (cell_h + gap)
        shown = _fit(picture, cell_w - 4, cell_h - caption_h - 4)
        px = x0 + (cell_w - shown.width) // 2
        py = y0 + (cell_h - caption_h - shown.height) // 2
        draw.rectangle((px - 2, py - 2, px + shown.width + 1, py + shown.height + 1), outline=FRAME, width=2)
        card.paste(shown, (px, py))
        for j, line in enumerate(_wrap(draw, caption, caption_font, cell_w)[:2]):
            line_w = draw.textlength(line, font=caption_font)
            draw.text((x0 + (cell_w - line_w) / 2, py + shown.height + size // 64 + j * line_h), line,
                      font=caption_font, fill=TEXT)
    return card


def graph_box(size: int = SIZE) -> tuple[int, int]:
    """The room compose() gives the graph with a two-line title and a three-line footer."""
    margin, line_h = size // 28, size // 40 + size // 128
    body = size - 2 * margin - (size // 36 + size // 64) - 2 * (size // 22 + size // 128) - 3 * line_h - size // 24
    return size - 2 * margin, body * 11 // 20


def save_jpeg(card: Image.Image, path: Path, max_bytes: int = MAX_BYTES) -> int:
    """Save as JPEG under ``max_bytes`` (lowering the quality as needed); returns the size."""
    for quality in range(90, 30, -5):
        buffer = io.BytesIO()
        card.save(buffer, "JPEG", quality=quality, optimize=True, progressive=True)
        if buffer.tell() <= max_bytes:
            break
    path.write_bytes(buffer.getvalue())
    return buffer.tell()


def thumbnail(url: str, base: Path, name: str, models_dir: Path | None, as_opened: bool, object_info: dict,
              out_dir: Path) -> Path:
    workflow = _get_json(f"{url}/api/workflow_templates/{PACK}/{name}.json")  # what the template browser opens
    notes = [n for n in workflow["nodes"] if n["type"] == "Note"]
    title = notes[0]["widgets_values"][0].splitlines()[0].strip() if notes else name.replace("_", " ")
    stand_ins = place_models(base, workflow, models_dir)
    prompt = comfy_host.ui_to_api(workflow)
    cheap = stand_ins and not as_opened
    if cheap:
        for node in prompt.values():
            node["inputs"].update(CHEAPER.get(node["class_type"], {}))
    started = time.monotonic()
    entry = run(url, prompt)
    panels = output_images(url, workflow, prompt, entry, object_info)
    if not panels:
        raise RuntimeError(f"{name}: the run gave no image ({list(entry['outputs'])})")
    graph = None
    if stand_ins:  # pictures from random weights say little: show the graph that made them, too
        graph = graph_miniature(workflow, object_info, *graph_box())
        footer = ("The graph, and what it output on stand-in model files (random weights, so the pictures show "
                  "nothing of a real model)" + (", 1 step at 64 px" if cheap else "")
                  + ". Real ones: scripts/thumbnails.py with --models DIR.")
    else:
        footer = "What this workflow output" + (", 1 step at 64 px" if cheap else " as opened") + "."
    path = out_dir / f"{name}.jpg"
    size = save_jpeg(compose(title, panels, footer, graph), path)
    print(f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}: {size} bytes, "
          f"{len(panels)} image(s), ran {time.monotonic() - started:.0f} s")
    for saved in (base / "output" / "checkpoints").glob("*.safetensors"):
        saved.unlink()  # the fused full-size checkpoint (GBs)
    free = urllib.request.Request(url + "/free", data=json.dumps({"unload_models": True, "free_memory": True}).encode(),
                                  headers={"Content-Type": "application/json"})
    _get_url(free)  # the next workflow starts as on a fresh server, not beside this one's models (GBs on CPU)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="workflow base names (default: every example workflow)")
    parser.add_argument("--models", type=Path, help="folder with real model files (DIR/<folder>/<name> or DIR/<name>)")
    parser.add_argument("--as-opened", action="store_true", help="keep the workflows' own steps and sizes")
    parser.add_argument("--out", type=Path, default=WORKFLOWS, help="where the .jpg files go (default: beside them)")
    parser.add_argument("--server-flags", default="", help="extra main.py flags, e.g. '--bf16-unet --fp16-text-enc' "
                                                          "for the SDXL workflows on a 24 GB CPU machine")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the server on the way out
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background
    names = args.names or sorted(p.stem for p in WORKFLOWS.glob("*.json"))
    args.out.mkdir(parents=True, exist_ok=True)
    failed = []
    with tempfile.TemporaryDirectory(prefix="mos-thumbs-") as tmp:
        # ComfyUI in this process too, as in the test: ui_to_api reads the nodes' INPUT_TYPES, and the stand-ins
        # are generated from the host's model classes
        comfy_host.boot(str(Path(tmp) / "host"))
        base = Path(tmp) / "comfyui"
        from integration.host_support import fresh_server

        with fresh_server(base, args.server_flags.split()) as url:
            listed = _get_json(url + "/workflow_templates").get(PACK, [])
            object_info = _get_json(url + "/object_info")
            for name in names:
                if name not in listed:
                    print(f"{name}: not among the pack's templates {sorted(listed)}", file=sys.stderr)
                    failed.append(name)
                    continue
                try:
                    thumbnail(url, base, name, args.models, args.as_opened, object_info, args.out)
                except (RuntimeError, OSError, KeyError) as err:
                    print(f"{name}: {err}", file=sys.stderr)
                    failed.append(name)
            if failed:
                print(f"server log: {(base / 'server.log').read_text()[-3000:]}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
