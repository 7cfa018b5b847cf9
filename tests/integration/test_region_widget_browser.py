"""The region-box editor in headless Chromium against the real ComfyUI server.

Both renderings of the current frontend: the classic LiteGraph canvas, and Vue node rendering where the
frontend has it (skipped, with the reason, where it does not). The server starts with a fresh user
directory whose settings keep first-run dialogs away, so no test depends on a used profile.

* Real pointer input: draw a box, move it, type its prompt, check the widget value and the prompt the
  frontend queues, then delete the box.
* The example workflow as a new user opens it (its own zoom, untouched): the editor keeps the aspect of the
  image being made, stays inside the node's frame, draws readable labels on a dark backing over a bright
  image, and shows no raw JSON text box while the value is still saved and queued.
"""
import io
import json
import pathlib
import time

import pytest
from integration.browser_support import (
    NODE_RECT_FN,
    QUIET_SETTINGS,
    available,
    chromedriver,
    has_vue_nodes,
    load_workflow,
    open_app,
    set_setting,
    upload_input,
    with_loaded_image,
)
from integration.host_support import running_server

pytestmark = pytest.mark.skipif(not available(),
                                reason="needs Debian chromium and chromium-driver (installed by .ci/run)")
RENDERINGS = ["canvas", "vue_nodes"]
EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "example_workflows"
EDITOR_NODE = 9  # the RegionBoxes node of the examples; the test links a Load Image (pose.png) to it
POSE_SIZE = (768, 512)
# the regional examples with the size of their canvas: SD1.5's and SDXL's (a pose image of that size behind)
REGIONAL_EXAMPLES = [("regional_two_concepts_pose.json", POSE_SIZE),
                     ("sdxl_regional_two_characters_pose.json", (1216, 832))]
GREEN = (40, 210, 60)


def _green_png(size=POSE_SIZE):
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, GREEN).save(out, "PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with chromedriver() as open_browser, \
            running_server(tmp_path_factory.mktemp("browser"), settings=QUIET_SETTINGS) as url:
        for name, size in REGIONAL_EXAMPLES:  # each example's pose: a bright image, as a box may sit on
            upload_input(url, f"pose_{size[0]}x{size[1]}.png", _green_png(size))
        b = open_browser()
        b.url = url
        try:
            yield b
        finally:
            b.close()


# Whether this frontend's Vue nodes show an extension's DOM widget: a plain <div> on a stock node, polled.
VUE_SHOWS_DOM_WIDGETS_JS = """
  const done = arguments[arguments.length - 1];
  app.graph.clear();
  const node = LiteGraph.createNode('EmptyLatentImage');
  const probe = document.createElement('div');
  probe.style.height = '20px';
  node.addDOMWidget('probe', 'probe', probe, {});
  app.graph.add(node);
  let tries = 0;
  const poll = () => {
    if (probe.closest('[data-node-id]') || ++tries > 30) { app.graph.clear(); done(!!probe.closest('[data-node-id]')); }
    else setTimeout(poll, 100);
  };
  poll();
"""


def _open(browser, rendering):
    """A fresh page in the given rendering; skips where this frontend cannot show it."""
    open_app(browser, browser.url)
    vue = has_vue_nodes(browser)
    version = browser.js("return window.__COMFYUI_FRONTEND_VERSION__ || 'unknown'")
    if rendering == "vue_nodes" and not vue:
        pytest.skip(f"this ComfyUI's frontend ({version}) has no Vue node rendering (Comfy.VueNodes.Enabled); "
                    "run with a newer COMFYUI_PATH")
    if vue:
        set_setting(browser, "Comfy.VueNodes.Enabled", rendering == "vue_nodes")
    if rendering == "vue_nodes" and not browser.js_async(VUE_SHOWS_DOM_WIDGETS_JS):
        pytest.skip(f"this frontend's Vue node rendering ({version}) shows no DOM widgets of extensions, so no "
                    "box editor; classic rendering is tested")


def _value(browser, node_id):
    return json.loads(browser.js("return app.graph.getNodeById(arguments[0]).widgets"
                                 ".find(w => w.name === 'regions_json').value", node_id))


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_draw_move_prompt_queue_and_delete_a_box(browser, rendering):
    _open(browser, rendering)
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


# What the editor of node arguments[0] shows, in screen pixels: its rects, its node's frame, label rects and
# pixel statistics of the canvas (labels, the image between the boxes, across the first box's right edge).
MEASURE_JS = NODE_RECT_FN + """
  const node = app.graph.getNodeById(arguments[0]);
  const editor = node.mixofshowEditor;
  const root = node.widgets.find((w) => w.name === 'region_editor').element;
  const canvas = root.querySelector('canvas');
  const rect = (el) => {
    const b = el.getBoundingClientRect();
    return {left: b.left, top: b.top, right: b.right, bottom: b.bottom};
  };
  const c = canvas.getBoundingClientRect();
  const sx = canvas.width / c.width, sy = canvas.height / c.height;
  const pixels = (x, y, w, h) => {  // screen-pixel rect inside the canvas -> share of dark, white and green pixels
    const data = canvas.getContext('2d').getImageData(Math.round(x * sx), Math.round(y * sy),
                                                      Math.max(1, Math.round(w * sx)),
                                                      Math.max(1, Math.round(h * sy))).data;
    let dark = 0, white = 0, green = 0;
    for (let i = 0; i < data.length; i += 4) {
      const [r, g, b] = [data[i], data[i + 1], data[i + 2]];
      if (Math.max(r, g, b) < 80) dark++;
      if (Math.min(r, g, b) > 200) white++;
      if (g > 150 && r < 120 && b < 120) green++;
    }
    const n = data.length / 4;
    return {dark: dark / n, white: white / n, green: green / n};
  };
  const first = editor.state.boxes[0];
  return {
    ready: !!(editor.state.image && editor.state.image.naturalWidth && editor.state.labels.length),
    node: (({left, top, width, height}) => ({left, top, right: left + width, bottom: top + height}))(nodeRect(node.id)),
    canvas: {...rect(canvas), width: c.width, height: c.height},
    parts: [root, canvas, ...root.querySelectorAll('input, label, textarea')]
      .filter((e) => e.getClientRects().length && getComputedStyle(e).display !== 'none').map(rect),
    labels: editor.state.labels,
    label_pixels: editor.state.labels.map((l) => pixels(l.x, l.y, l.width, l.height)),
    between_boxes: pixels(c.width * 0.84, c.height * 0.45, 1, c.height * 0.1),  // the example's free canvas
    box_edge: first && pixels((first.x + first.width) * c.width - 5, (first.y + first.height / 2) * c.height, 10, 1),
    json_shown: [...document.querySelectorAll('textarea, input')].filter((e) => e.getClientRects().length
      && getComputedStyle(e).visibility !== 'hidden' && String(e.value).includes('"regions"')).length,
    value_widget_visible: node.isWidgetVisible?.(node.widgets.find((w) => w.name === 'regions_json')) ?? null,
  };
"""


def _settled(browser, node_id):
    """Measure the editor once it shows the image and its labels and has stopped moving."""
    previous = None
    for _ in range(60):
        time.sleep(0.4)
        m = browser.js(MEASURE_JS, node_id)
        if m["ready"] and previous and (m["canvas"], m["node"], m["parts"]) == (
                previous["canvas"], previous["node"], previous["parts"]):
            return m
        previous = m
    pytest.fail(f"the editor did not settle: {previous}")


def _assert_in_frame(m):
    frame = m["node"]
    for part in m["parts"]:
        assert (part["left"] >= frame["left"] - 1 and part["right"] <= frame["right"] + 1
                and part["top"] >= frame["top"] - 1 and part["bottom"] <= frame["bottom"] + 1), (part, frame)


def _assert_aspect(m, aspect):
    """The canvas has the aspect of the image being made and the editor's full width (the node fits it)."""
    assert abs(m["canvas"]["width"] / m["canvas"]["height"] / aspect - 1) < 0.02, (m["canvas"], aspect)
    root = m["parts"][0]
    assert m["canvas"]["width"] >= 0.97 * (root["right"] - root["left"]), (m["canvas"], root)


@pytest.mark.parametrize("example,size", REGIONAL_EXAMPLES, ids=["sd15", "sdxl"])
@pytest.mark.parametrize("rendering", RENDERINGS)
def test_the_example_workflow_opens_with_a_readable_editor_in_its_frame(browser, rendering, example, size):
    _open(browser, rendering)
    # the example with the user's pose image behind the boxes; the view the frontend picks: zoom untouched
    pose = f"pose_{size[0]}x{size[1]}.png"
    load_workflow(browser, with_loaded_image(json.loads((EXAMPLES / example).read_text()), EDITOR_NODE, pose))
    m = _settled(browser, EDITOR_NODE)
    _assert_aspect(m, size[0] / size[1])  # the linked image: 768x512 on SD1.5, 1216x832 on SDXL
    _assert_in_frame(m)

    # Readable at this zoom: labels of at least one 11 px line on a dark backing with white text, over a
    # bright green image that shows between the boxes; box strokes have a dark outline.
    assert len(m["labels"]) == 2
    for label, pixels in zip(m["labels"], m["label_pixels"]):
        assert label["height"] >= 16 and label["width"] >= 20, label  # at least "1: a" on one 11 px line
        assert pixels["dark"] > 0.4 and pixels["white"] > 0.03, pixels
    assert m["between_boxes"]["green"] > 0.5, m["between_boxes"]
    assert m["box_edge"]["dark"] > 0, m["box_edge"]

    # The value is no text box of its own, but the workflow and the queued prompt carry it.
    assert m["json_shown"] == 0 and m["value_widget_visible"] is False
    saved = browser.js_async("""
        const done = arguments[arguments.length - 1];
        const node = app.graph.serialize().nodes.find((n) => n.id === arguments[0]);
        app.graphToPrompt().then((p) => done({saved: node.widgets_values,
                                              queued: p.output[String(arguments[0])].inputs}));""",
                             EDITOR_NODE)
    value = _value(browser, EDITOR_NODE)
    assert len(value["regions"]) == 2
    assert json.loads(saved["saved"][0]) == value and json.loads(saved["queued"]["regions_json"]) == value

    # "show JSON" shows the value inside the frame; hiding it again leaves no text box.
    browser.js("app.graph.getNodeById(arguments[0]).widgets.find((w) => w.name === 'region_editor')"
               ".element.querySelector('input[type=checkbox]').click()", EDITOR_NODE)
    m = _settled(browser, EDITOR_NODE)
    assert m["json_shown"] == 1
    _assert_aspect(m, size[0] / size[1])
    _assert_in_frame(m)
    browser.js("app.graph.getNodeById(arguments[0]).widgets.find((w) => w.name === 'region_editor')"
               ".element.querySelector('input[type=checkbox]').click()", EDITOR_NODE)

    # At 100 % zoom (the node brought into view) the editor keeps its shape and frame as well.
    browser.js("""
        const node = app.graph.getNodeById(arguments[0]);
        app.canvas.ds.scale = 1;
        app.canvas.ds.offset = [80 - node.pos[0], 120 - node.pos[1]];
        app.canvas.setDirty(true, true);""", EDITOR_NODE)
    m = _settled(browser, EDITOR_NODE)
    _assert_aspect(m, size[0] / size[1])
    _assert_in_frame(m)
    assert all(label["height"] >= 16 for label in m["labels"])

    # Without the image, the node's image_width x image_height shape the editor, and it still fits the frame.
    browser.js("""
        const node = app.graph.getNodeById(arguments[0]);
        node.disconnectInput(node.inputs.findIndex((i) => i.name === 'image'));
        for (const [name, value] of [['image_width', 512], ['image_height', 1024]]) {
          const w = node.widgets.find((w) => w.name === name);
          w.value = value;
          w.callback?.(value);
        }""", EDITOR_NODE)
    previous, m = None, None
    for _ in range(60):
        time.sleep(0.4)
        m = browser.js(MEASURE_JS, EDITOR_NODE)
        if abs(m["canvas"]["width"] / m["canvas"]["height"] - 0.5) < 0.01 and m == previous:
            break
        previous = m
    _assert_aspect(m, 0.5)
    _assert_in_frame(m)


def test_the_frontend_links_a_bounding_box_node_to_region_from_bounding_box(browser):
    """Newer frontends: core's BOUNDING_BOX output connects to the node's socket (not a widget)."""
    open_app(browser, browser.url)
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
