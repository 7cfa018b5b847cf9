"""The region-box widget in headless Chromium against the real ComfyUI server.

Both renderings of the current frontend (classic LiteGraph canvas, and Vue node rendering where the
frontend has it) and the 2024 legacy UI.

Driven through ChromeDriver's W3C protocol with real pointer input: draw a box, move it, type its
prompt, check the widget value and the prompt the frontend queues, then delete the box.
"""
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest
from integration.host_support import running_server

pytestmark = pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")),
                                reason="needs Debian chromium and chromium-driver (installed by .ci/run)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1400,1000"]


class Browser:
    def __init__(self, driver_url):
        self.base = driver_url
        caps = {"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": shutil.which("chromium"), "args": FLAGS + [f"--user-data-dir={tempfile.mkdtemp()}"]}}}}
        self.session = self._call("POST", "/session", caps)["sessionId"]

    def _call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())["value"]

    def call(self, method, path, body=None):
        return self._call(method, f"/session/{self.session}{path}", body)

    def js(self, script, *args):
        return self.call("POST", "/execute/sync", {"script": script, "args": list(args)})

    def js_async(self, script, *args):
        return self.call("POST", "/execute/async", {"script": script, "args": list(args)})

    def drag(self, points):
        moves = [{"type": "pointerMove", "x": int(points[0][0]), "y": int(points[0][1]), "origin": "viewport"},
                 {"type": "pointerDown", "button": 0}]
        moves += [{"type": "pointerMove", "duration": 50, "x": int(x), "y": int(y), "origin": "viewport"}
                  for x, y in points[1:]]
        moves.append({"type": "pointerUp", "button": 0})
        self.call("POST", "/actions", {"actions": [{"type": "pointer", "id": "mouse",
                                                     "parameters": {"pointerType": "mouse"}, "actions": moves}]})

    def close(self):
        self.call("DELETE", "")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    driver = subprocess.Popen(["chromedriver", f"--port={port}"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2)
                break
            except OSError:
                time.sleep(0.1)
        with running_server(tmp_path_factory.mktemp("browser")) as url:
            b = Browser(f"http://127.0.0.1:{port}")
            b.url = url
            yield b
            b.close()
    finally:
        driver.terminate()


def _value(browser, node_id):
    return json.loads(browser.js("return app.graph.getNodeById(arguments[0]).widgets"
                                 ".find(w => w.name === 'regions_json').value", node_id))


@pytest.mark.parametrize("rendering", ["canvas", "vue_nodes"])
def test_draw_move_prompt_queue_and_delete_a_box(browser, rendering):
    browser.call("POST", "/url", {"url": browser.url})  # a fresh page per rendering mode
    for _ in range(100):
        if browser.js("return !!(window.app && window.app.graph && window.LiteGraph && "
                      "LiteGraph.registered_node_types['RegionBoxes'])"):
            break
        time.sleep(0.2)
    has_vue = browser.js("return !!(app.ui?.settings?.getSettingValue && "
                         "app.ui.settings.getSettingValue('Comfy.VueNodes.Enabled') !== undefined)")
    if rendering == "vue_nodes" and not has_vue:
        pytest.skip("this ComfyUI's frontend has no Vue node rendering (the 2024 UI); run with a newer COMFYUI_PATH")
    if has_vue:
        browser.js_async("const done = arguments[arguments.length - 1];"
                         "app.ui.settings.setSettingValueAsync('Comfy.VueNodes.Enabled', arguments[0])"
                         ".then(() => done(1));",
                         rendering == "vue_nodes")
    # A node that is then removed while its id is reused (what loading another workflow does): the Vue
    # renderer may keep showing the removed node's editor, whose edits must reach the new node.
    browser.js("""
        app.graph.clear();
        const old = LiteGraph.createNode('RegionBoxes');
        old.pos = [60, 60];
        app.graph.add(old);
        old.widgets.find((w) => w.name === 'regions_json').value = JSON.stringify({version: 1, regions: [
          {x: 0.7, y: 0.7, width: 0.2, height: 0.2, prompt: 'old', negative: ''}]});
        app.canvas.setDirty(true, true);""")
    time.sleep(1.0)
    node_id = browser.js("""
        app.graph.clear();
        const node = LiteGraph.createNode('RegionBoxes');
        node.pos = [60, 60];
        app.graph.add(node);
        app.canvas.ds.offset = [0, 0]; app.canvas.ds.scale = 1;
        app.canvas.setDirty(true, true);
        return node.id;""")
    rect, previous = None, None
    for _ in range(100):  # the frontend mounts and lays out the node asynchronously: wait for a settled editor
        time.sleep(0.3)
        rect = browser.js_async("""
            const done = arguments[arguments.length - 1];
            requestAnimationFrame(() => requestAnimationFrame(() => {
              app.canvas.draw(true, true);
              const shown = [...document.querySelectorAll('.mixofshow-region-editor canvas')].filter((c) => {
                const b = c.getBoundingClientRect();  // the live editor: the element found at its own centre
                return b.width > 0 && document.elementFromPoint(b.left + b.width / 2, b.top + b.height / 2) === c;
              });
              if (!shown.length) return done(null);
              const r = shown[shown.length - 1].getBoundingClientRect();
              done({left: r.left, top: r.top, width: r.width, height: r.height});
            }));""")
        if rect is not None and rect == previous:
            break
        previous = rect
    assert rect["width"] > 100 and rect["height"] > 100

    def at(fx, fy):
        return rect["left"] + fx * rect["width"], rect["top"] + fy * rect["height"]

    # What the frontend gave the new node: empty, except that frontends since about 1.4x restore a reused id's
    # widget values in graph.add (stock widgets too, e.g. CLIPTextEncode's text), here the removed node's box.
    initial = _value(browser, node_id)["regions"]
    browser.drag([at(0.2, 0.2), at(0.4, 0.5), at(0.6, 0.7)])
    boxes = _value(browser, node_id)["regions"]
    assert boxes[:-1] == initial and len(boxes) == len(initial) + 1  # the drawn box reached the live node
    box = boxes[-1]
    assert box["prompt"] == ""
    assert abs(box["x"] - 0.2) < 0.03 and abs(box["y"] - 0.2) < 0.03
    assert abs(box["width"] - 0.4) < 0.03 and abs(box["height"] - 0.5) < 0.03

    browser.drag([at(0.4, 0.4), at(0.5, 0.45)])  # move it right and down by (0.1, 0.05)
    moved = _value(browser, node_id)["regions"][-1]
    assert abs(moved["x"] - box["x"] - 0.1) < 0.03 and abs(moved["y"] - box["y"] - 0.05) < 0.03

    element = browser.js("return [...document.querySelectorAll('.mixofshow-region-editor input')]"
                         ".filter((e) => e.offsetParent !== null)[0]")
    browser.call("POST", f"/element/{list(element.values())[0]}/value", {"text": "a <cat1> <cat2>"})
    assert _value(browser, node_id)["regions"][-1]["prompt"] == "a <cat1> <cat2>"

    sent = browser.js_async("""
        const done = arguments[arguments.length - 1];
        const original = window.fetch;
        window.fetch = function (url, options) {
          if (String(url).endsWith('/prompt') && options && options.method === 'POST') {
            window.fetch = original;
            done(JSON.parse(options.body).prompt);
          }
          return original.apply(this, arguments);
        };
        app.queuePrompt(0, 1);""")
    queued = json.loads(sent[str(node_id)]["inputs"]["regions_json"])
    assert queued["version"] == 1 and queued["regions"][-1]["prompt"] == "a <cat1> <cat2>"

    browser.drag([at(0.45, 0.5), at(0.45, 0.5)])  # click to select, then Delete
    canvas = browser.js("return [...document.querySelectorAll('.mixofshow-region-editor canvas')]"
                        ".filter((e) => e.offsetParent !== null).pop()")
    browser.call("POST", f"/element/{list(canvas.values())[0]}/value", {"text": "\ue017"})
    assert _value(browser, node_id)["regions"] == initial


def test_the_frontend_links_a_bounding_box_node_to_region_from_bounding_box(browser):
    """Newer frontends: core's BOUNDING_BOX output connects to the node's socket (not a widget)."""
    browser.call("POST", "/url", {"url": browser.url})
    for _ in range(100):
        if browser.js("return !!(window.app && window.app.graph && window.LiteGraph && "
                      "LiteGraph.registered_node_types['RegionFromBoundingBox'])"):
            break
        time.sleep(0.2)
    if not browser.js("return !!LiteGraph.registered_node_types['PrimitiveBoundingBox']"):
        pytest.skip("this ComfyUI has no BOUNDING_BOX nodes (added in 2026); check one with COMFYUI_PATH")
    linked = browser.js("""
        app.graph.clear();
        const source = LiteGraph.createNode('PrimitiveBoundingBox');
        app.graph.add(source);
        const node = LiteGraph.createNode('RegionFromBoundingBox');
        node.pos = [400, 0];
        app.graph.add(node);
        const slot = node.inputs.findIndex((i) => i.name === 'bboxes');
        source.connect(0, node, slot);
        return {link: node.inputs[slot].link, widgets: node.widgets.map((w) => w.name)};""")
    assert linked["link"] is not None
    assert "bboxes" not in linked["widgets"] and {"index", "order", "prompt", "image_width"} <= set(linked["widgets"])
