"""Screenshots of the Region Boxes editor as a new user first sees it.

Starts ComfyUI with this pack (tests/integration/host_support.py running_server, fresh user directory),
loads example_workflows/regional_two_concepts_pose.json in headless Chromium at the zoom it opens at, with a
Load Image of the pose Region Pose Skeleton draws for its boxes linked to the editor (as a user shows their own
pose behind the boxes), and writes the editor node cropped from the page, in both renderings of the frontend:

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
sys.path[:0] = [str(REPO / "tests"), str(REPO / "scripts"), str(REPO)]

from integration.browser_support import (  # noqa: E402
    NODE_RECT_JS,
    QUIET_SETTINGS,
    chromedriver,
    has_vue_nodes,
    load_workflow,
    open_app,
    set_setting,
    upload_input,
    with_loaded_image,
)
from integration.host_support import running_server  # noqa: E402
from PIL import Image  # noqa: E402

WORKFLOW = REPO / "example_workflows" / "regional_two_concepts_pose.json"
EDITOR_NODE = 9


def pose_image(workflow, width=768, height=512):
    """The pose Region Pose Skeleton draws for the example's boxes (PNG bytes), to show behind them."""
    from mixofshow_core import pose_skeleton

    node = next(n for n in workflow["nodes"] if n["id"] == EDITOR_NODE)
    boxes = [(r["x"], r["y"], r["width"], r["height"]) for r in json.loads(node["widgets_values"][0])["regions"]]
    out = io.BytesIO()
    Image.fromarray(pose_skeleton.pose_image(boxes, width, height)).save(out, "PNG")
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
        upload_input(url, "pose.png", pose_image(workflow))
        browser = open_browser()
        try:
            open_app(browser, url)
            for rendering, vue in (("canvas", False), ("vue", True)):
                if vue and not has_vue_nodes(browser):
                    print(f"skipped {rendering}: this frontend has no Vue node rendering")
                    continue
                if has_vue_nodes(browser):
                    set_setting(browser, "Comfy.VueNodes.Enabled", vue)
                load_workflow(browser, with_loaded_image(workflow, EDITOR_NODE, "pose.png"))
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
