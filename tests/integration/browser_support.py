"""Headless Chromium driven over ChromeDriver's W3C REST API with urllib (no browser package needed), and
the ComfyUI frontend in it. Used by the browser tests and by scripts/screenshots.py.
"""
import base64
import contextlib
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         "--force-device-scale-factor=1", "--window-size=1400,1000"]

# Frontend settings for a fresh user directory: no template browser on first run (1.2x-1.3x), no version
# notices, no minimap over the canvas. Notices kept in the browser's storage are dismissed by open_app.
QUIET_SETTINGS = {
    "Comfy.TutorialCompleted": True,
    "Comfy.Notification.ShowVersionUpdates": False,
    "Comfy.Minimap.Visible": False,
}


def available():
    return bool(shutil.which("chromium") and shutil.which("chromedriver"))


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

    def wait_for(self, script, *args, tries=100, pause=0.2):
        """Poll a script until it returns something truthy; returns that (or the last falsy value)."""
        for _ in range(tries):
            value = self.js(script, *args)
            if value:
                return value
            time.sleep(pause)
        return value

    def screenshot(self):
        """PNG bytes of the viewport."""
        return base64.b64decode(self.call("GET", "/screenshot"))

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


@contextlib.contextmanager
def chromedriver():
    """A ChromeDriver on a free port; yields a function that opens a Browser session on it."""
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
        yield lambda: Browser(f"http://127.0.0.1:{port}")
    finally:
        driver.terminate()
        driver.wait(timeout=30)


def open_app(browser, url):
    """Open the ComfyUI frontend at url and wait until this pack's nodes are registered."""
    browser.call("POST", "/url", {"url": url})
    # 1.3x notices kept per browser: the "Try Nodes 2.0" banner and the "Prefer the legacy design?" toast
    browser.js("localStorage.setItem('vueNodesBannerDismissed', 'true');"
               "localStorage.setItem('comfy.vueNodesMigration.dismissed', 'true');")
    browser.call("POST", "/refresh", {})
    return browser.wait_for("return !!(window.app && window.app.graph && window.LiteGraph && "
                            "LiteGraph.registered_node_types['RegionBoxes'])")


def has_vue_nodes(browser):
    """Whether this frontend offers Vue node rendering (the Comfy.VueNodes.Enabled setting, 1.27+)."""
    return browser.js("return !!app.ui?.settings?.getSettingValue && "
                      "app.ui.settings.getSettingValue('Comfy.VueNodes.Enabled') !== undefined")


def set_setting(browser, name, value):
    browser.js_async("const done = arguments[arguments.length - 1];"
                     "app.ui.settings.setSettingValueAsync(arguments[0], arguments[1]).then(() => done(1));",
                     name, value)


# nodeRect(id): on-screen rect {left, top, width, height} of a graph node, title bar included: the Vue node's
# element where Vue nodes render it, else the canvas position of the node at the current zoom.
NODE_RECT_FN = """
  function nodeRect(id) {
    const node = app.graph.getNodeById(id);
    const el = document.querySelector(`[data-node-id="${id}"]`);
    if (el && el.offsetParent !== null) {
      const r = el.getBoundingClientRect();
      return {left: r.left, top: r.top, width: r.width, height: r.height};
    }
    const ds = app.canvas.ds, c = app.canvas.canvas.getBoundingClientRect(), title = LiteGraph.NODE_TITLE_HEIGHT;
    return {left: c.left + (node.pos[0] + ds.offset[0]) * ds.scale,
            top: c.top + (node.pos[1] - title + ds.offset[1]) * ds.scale,
            width: node.size[0] * ds.scale, height: (node.size[1] + title) * ds.scale};
  }
"""
NODE_RECT_JS = NODE_RECT_FN + "return nodeRect(arguments[0]);"


def load_workflow(browser, workflow):
    """Load a UI workflow as the frontend does for a dropped file (its saved view, or the frontend's default)."""
    browser.js_async("const done = arguments[arguments.length - 1];"
                     "Promise.resolve(app.loadGraphData(arguments[0])).then(() => done(1));", workflow)


def with_loaded_image(workflow, node_id, image_name):
    """A copy of a UI workflow with a Load Image node of ``image_name`` linked to node ``node_id``'s image input."""
    workflow = json.loads(json.dumps(workflow))
    loader_id = max(n["id"] for n in workflow["nodes"]) + 1
    link_id = max([link[0] for link in workflow["links"]] + [0]) + 1
    target = next(n for n in workflow["nodes"] if n["id"] == node_id)
    slot = next(i for i, inp in enumerate(target["inputs"]) if inp["name"] == "image")
    target["inputs"][slot]["link"] = link_id
    workflow["nodes"].append({
        "id": loader_id, "type": "LoadImage", "pos": [target["pos"][0] - 360, target["pos"][1]], "size": [320, 320],
        "flags": {}, "order": 0, "mode": 0, "inputs": [], "properties": {}, "widgets_values": [image_name, "image"],
        "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [link_id]}, {"name": "MASK", "type": "MASK",
                                                                             "links": []}]})
    workflow["links"].append([link_id, loader_id, 0, node_id, slot, "IMAGE"])
    workflow["last_node_id"], workflow["last_link_id"] = loader_id, link_id
    return workflow


def upload_input(url, name, data):
    """Put a file in the server's input folder through its /upload/image endpoint."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"overwrite\"\r\n\r\ntrue\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(url + "/upload/image", data=body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())
