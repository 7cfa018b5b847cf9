"""Screenshots of the Region Boxes editor as a new user first sees it.

Starts ComfyUI with this pack (tests/integration/host_support.py running_server, fresh user directory),
loads example_workflows/regional_two_concepts_pose.json in headless Chromium at the zoom it opens at, and
writes the editor node cropped from the page, in both renderings of the current frontend:

    docs/images/region_editor_canvas.png   classic LiteGraph canvas
    docs/images/region_editor_vue.png      Vue node rendering (skipped where the frontend lacks it)

Run: $MOS_PYTHON scripts/screenshots.py [--out DIR]   (needs chromium and chromedriver, COMFYUI_PATH)
"""
import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "scripts")]

from integration.browser_support import (  # noqa: E402
    NODE_RECT_JS,
    QUIET_SETTINGS,
    chromedriver,
    has_vue_nodes,
    load_workflow,
    open_app,
    set_setting,
    upload_input,
)
from integration.host_support import running_server  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

WORKFLOW = REPO / "example_workflows" / "regional_two_concepts_pose.json"
EDITOR_NODE = 9
# OpenPose-style skeleton (18 keypoints, COCO order) of a person standing, in units of the figure's height.
POSE = [(0, -0.42), (0, -0.32), (-0.1, -0.31), (-0.14, -0.14), (-0.15, 0.02), (0.1, -0.31), (0.14, -0.14),
        (0.15, 0.02), (-0.06, 0.04), (-0.07, 0.26), (-0.07, 0.47), (0.06, 0.04), (0.07, 0.26), (0.07, 0.47),
        (-0.02, -0.44), (0.02, -0.44), (-0.05, -0.42), (0.05, -0.42)]
LIMBS = [(1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
         (1, 0), (0, 14), (14, 16), (0, 15), (15, 17)]


def pose_image(width=768, height=512):
    """Two standing figures, left and right, drawn as OpenPose skeletons on black (PNG bytes)."""
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    for cx in (0.25 * width, 0.75 * width):
        points = [(cx + x * height * 0.9, height * 0.5 + y * height * 0.9) for x, y in POSE]
        for i, (a, b) in enumerate(LIMBS):
            hue = int(255 * i / len(LIMBS))
            draw.line([points[a], points[b]], fill=(255 - hue, (hue * 3) % 256, hue), width=7)
        for x, y in points:
            draw.ellipse([x - 5, y - 5, x + 5, y + 5], fill=(255, 60, 60))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def settled_rect(browser, node_id):
    """The node's on-screen rect once the editor has drawn the pose and its boxes and stopped moving."""
    previous = None
    for _ in range(60):
        time.sleep(0.5)
        ready = browser.js("const e = app.graph.getNodeById(arguments[0])?.mixofshowEditor;"
                           "return !!(e && e.state.image && e.state.image.naturalWidth && e.state.labels.length)",
                           node_id)
        rect = browser.js(NODE_RECT_JS, node_id)
        if ready and rect == previous:
            return rect
        previous = rect
    raise RuntimeError("the editor did not settle (is pose.png shown by the Load Image node?)")


def crop(png, rect, pad=24):
    image = Image.open(io.BytesIO(png)).convert("RGB")
    box = (max(0, int(rect["left"]) - pad), max(0, int(rect["top"]) - pad),
           min(image.width, int(rect["left"] + rect["width"]) + pad),
           min(image.height, int(rect["top"] + rect["height"]) + pad))
    return image.crop(box)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "images"))
    out = Path(parser.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    workflow = json.loads(WORKFLOW.read_text())
    with chromedriver() as open_browser, running_server(Path(tempfile.mkdtemp()), settings=QUIET_SETTINGS) as url:
        upload_input(url, "pose.png", pose_image())
        browser = open_browser()
        try:
            open_app(browser, url)
            for rendering, vue in (("canvas", False), ("vue", True)):
                if vue and not has_vue_nodes(browser):
                    print(f"skipped {rendering}: this frontend has no Vue node rendering")
                    continue
                if has_vue_nodes(browser):
                    set_setting(browser, "Comfy.VueNodes.Enabled", vue)
                load_workflow(browser, workflow)
                rect = settled_rect(browser, EDITOR_NODE)
                path = out / f"region_editor_{rendering}.png"
                crop(browser.screenshot(), rect).save(path, optimize=True)
                zoom = browser.js("return app.canvas.ds.scale")
                print(f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}: "
                      f"{os.path.getsize(path) // 1024} KB, zoom {zoom:.2f}")
        finally:
            browser.close()


if __name__ == "__main__":
    main()
