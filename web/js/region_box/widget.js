// The region-box editor on a RegionBoxes node: a canvas (draw, move, resize, select, delete) shaped like
// the image being made, two fields for the selected box's prompt and negative, and a "show JSON" toggle.
// Its only state is the node's `regions_json` widget value, so saved workflows and API prompts carry the
// boxes; that widget stays serialised but shows no text box of its own.
//
// `liveNode()` names the node the editor edits. The current frontend's Vue node renderer can keep
// showing this element for a *new* node that reuses the id of a removed one (e.g. after loading another
// workflow); edits must then reach the node now in the graph, not the removed one.
import { EMPTY_VALUE, parseRegionValue, serializeRegionValue } from "./value.js";
import { boxFromDrag, hitTest, isUsable, moveBox, resizeBox, toFraction } from "./geometry.js";
import { drawRegions } from "./draw.js";
import { chromeHeight, editorHeight, fitAspect, regionAspect } from "./layout.js";
import { createEditorElements } from "./elements.js";

const MARGIN = 10;  // the host's DOM widget margin (current frontend and 2024 UI)

function readBoxes(widget) {
  try {
    return parseRegionValue(widget.value || EMPTY_VALUE).regions;
  } catch (err) {
    return [];
  }
}

const widgetOf = (node, name) => node?.widgets?.find((w) => w.name === name) ?? null;

/** The image shown by the node linked to `image`, looked up in the node's own graph (works in subgraphs). */
function linkedImage(node) {
  const slot = node.inputs?.findIndex((i) => i.name === "image") ?? -1;
  if (slot < 0 || node.inputs[slot].link == null) return null;
  return node.getInputNode?.(slot)?.imgs?.[0] ?? null;
}

/** Keep the value widget (serialised, sent in the prompt) but show no text box for it. */
function hideValueWidget(widget) {
  widget.hidden = true;  // canvas rendering, current frontend
  widget.options = widget.options ?? {};
  widget.options.hidden = true;  // Vue node rendering
  widget.computeSize = () => [0, -4];  // the 2024 UI's layout, and layout passes that count hidden widgets
}

export function attachRegionEditor(node, liveNode = () => node) {
  if (!widgetOf(node, "regions_json")) return null;
  hideValueWidget(widgetOf(node, "regions_json"));
  const target = () => {
    const live = liveNode();
    return widgetOf(live, "regions_json") ? live : node;
  };
  const { root, stage, canvas, prompt, negative, toggleBox, json } = createEditorElements();

  const state = { boxes: readBoxes(widgetOf(node, "regions_json")), selected: -1, draft: null, image: null, drag: null,
                  aspect: null, labels: [] };
  let bound = node;
  let drawn = "";  // viewKey() of the last drawing
  let shown = "";  // aspect and image of the last drawing

  const rebind = () => {  // follow the live node; take its boxes when it changed under us
    const current = target();
    if (current !== bound) {
      bound = current;
      state.boxes = readBoxes(widgetOf(current, "regions_json"));
      state.selected = -1;
    }
  };
  const commit = () => {
    const valueWidget = widgetOf(bound, "regions_json");
    valueWidget.value = serializeRegionValue(state.boxes);
    valueWidget.callback?.(valueWidget.value);
    bound.setDirtyCanvas?.(true, true);
  };
  const showJson = () => toggleBox.checked;
  // Classic rendering: the host gives this element a height, the canvas fits inside it. Vue nodes: the
  // element is in the node's flow, and its height follows the canvas.
  const inFlow = () => !!root.closest("[data-node-id]");
  const layout = () => {
    const room = inFlow() ? Infinity : root.clientHeight - chromeHeight(showJson());
    const size = fitAspect(state.aspect ?? 1, stage.clientWidth, room);
    stage.style.height = `${size.height}px`;
    canvas.style.width = `${size.width}px`;
    canvas.style.height = `${size.height}px`;
    canvas.style.left = `${Math.floor((stage.clientWidth - size.width) / 2)}px`;
  };
  const render = () => {
    rebind();
    if (!state.drag) state.boxes = readBoxes(widgetOf(bound, "regions_json"));  // the widget value is the truth
    layout();
    // The pixel buffer matches the canvas on screen (graph zoom included): labels stay sharp and readable.
    const rect = canvas.getBoundingClientRect();
    const ratio = window.devicePixelRatio || 1;
    canvas.width = Math.max(1, Math.round(rect.width * ratio));
    canvas.height = Math.max(1, Math.round(rect.height * ratio));
    const ctx = canvas.getContext("2d");
    ctx.setTransform(canvas.width / Math.max(1, rect.width), 0, 0, canvas.height / Math.max(1, rect.height), 0, 0);
    state.labels = drawRegions(ctx, state, Math.max(1, rect.width), Math.max(1, rect.height));
    drawn = viewKey();
    const box = state.boxes[state.selected];
    prompt.disabled = negative.disabled = !box;
    if (document.activeElement !== prompt) prompt.value = box?.prompt ?? "";
    if (document.activeElement !== negative) negative.value = box?.negative ?? "";
    if (showJson() && document.activeElement !== json) json.value = widgetOf(bound, "regions_json").value;
  };
  const point = (e) => toFraction(e.clientX, e.clientY, canvas.getBoundingClientRect());
  // What the drawing depends on besides the boxes: the element's room, the canvas on screen (zoom included).
  const viewKey = () => {
    const r = canvas.getBoundingClientRect();
    return `${root.clientWidth}x${root.clientHeight} ${r.width}x${r.height} ${window.devicePixelRatio} ${showJson()}`;
  };

  // Height the editor needs at the node's width (the element's margins included).
  const neededHeight = () =>
    editorHeight((node.size?.[0] ?? 320) - 2 * MARGIN, state.aspect ?? 1, showJson()) + 2 * MARGIN;
  const fitNode = () => {  // the node's height follows the editor (classic rendering; Vue nodes grow by themselves)
    const size = node.computeSize?.();
    if (size && node.size) node.setSize?.([node.size[0], size[1]]);
    node.setDirtyCanvas?.(true, true);
  };
  // Once a frame: take the linked image and the aspect of the image being made; lay out and redraw on any
  // change, including a new zoom (which no resize event reports) and the host resizing the element.
  const refresh = () => {
    rebind();
    const image = linkedImage(bound);
    const aspect = regionAspect(widgetOf(bound, "image_width")?.value, widgetOf(bound, "image_height")?.value,
                                image?.naturalWidth, image?.naturalHeight);
    if (aspect !== state.aspect) {
      state.aspect = aspect;
      fitNode();
    }
    state.image = image;
    const content = `${aspect} ${image?.src ?? ""} ${image?.naturalWidth ?? 0}`;  // a new or newly loaded image
    if (root.isConnected && (content !== shown || drawn !== viewKey())) {
      shown = content;
      render();
    }
  };
  let frame = null;
  const loop = () => {
    refresh();
    frame = node.graph || root.isConnected ? requestAnimationFrame(loop) : null;
  };

  // Move/up are followed on window: a host element may capture the pointer (the Vue node renderer does).
  const onMove = (e) => {
    if (!state.drag) return;
    const p = point(e);
    const d = state.drag;
    if (d.mode === "draw") state.draft = boxFromDrag(d.start, p);
    else if (d.mode === "move") state.boxes[state.selected] = moveBox(d.box, p.x - d.start.x, p.y - d.start.y);
    else state.boxes[state.selected] = resizeBox(d.box, p);
    render();
  };
  const finish = () => {
    window.removeEventListener("pointermove", onMove, true);
    window.removeEventListener("pointerup", finish, true);
    window.removeEventListener("pointercancel", finish, true);
    if (!state.drag) return;
    if (state.drag.mode === "draw" && state.draft && isUsable(state.draft)) {
      state.boxes.push({ ...state.draft, prompt: "", negative: "" });
      state.selected = state.boxes.length - 1;
    }
    state.drag = null;
    state.draft = null;
    commit();
    render();
  };
  canvas.addEventListener("pointerdown", (e) => {
    rebind();
    canvas.focus();
    window.addEventListener("pointermove", onMove, true);
    window.addEventListener("pointerup", finish, true);
    window.addEventListener("pointercancel", finish, true);
    const p = point(e);
    const hit = hitTest(state.boxes, p);
    if (hit) {
      state.selected = hit.index;
      state.drag = { mode: hit.mode, start: p, box: { ...state.boxes[hit.index] } };
    } else {
      state.selected = -1;
      state.drag = { mode: "draw", start: p };
      state.draft = boxFromDrag(p, p);
    }
    render();
    e.preventDefault();
    e.stopPropagation();
  });
  canvas.addEventListener("keydown", (e) => {
    if ((e.key === "Delete" || e.key === "Backspace") && state.selected >= 0) {
      state.boxes.splice(state.selected, 1);
      state.selected = -1;
      commit();
      render();
      e.preventDefault();
    }
    e.stopPropagation(); // keys typed in the editor are not graph shortcuts (Delete would remove the node)
  });
  for (const [el, key] of [[prompt, "prompt"], [negative, "negative"]]) {
    el.addEventListener("input", () => {
      rebind();
      if (state.selected < 0) return;
      state.boxes[state.selected][key] = el.value;
      commit();
      render();
    });
  }
  for (const el of [prompt, negative, json]) el.addEventListener("keydown", (e) => e.stopPropagation());
  toggleBox.addEventListener("change", () => {
    json.style.display = showJson() ? "block" : "none";
    fitNode();
    render();
  });
  json.addEventListener("input", () => {  // a valid value replaces the boxes; an invalid one is only flagged
    rebind();
    try {
      state.boxes = parseRegionValue(json.value).regions;
      state.selected = -1;
      json.style.borderColor = "";
      json.title = "";
      commit();
      render();
    } catch (err) {
      json.style.borderColor = "#e6194b";
      json.title = err.message;
    }
  });

  const widget = node.addDOMWidget("region_editor", "mixofshow_region_editor", root, {
    serialize: false,
    hideOnZoom: false,  // the default zoom of a loaded workflow is often below the host's detail threshold
    getValue: () => widgetOf(bound, "regions_json")?.value,
    setValue: () => {},
    getMinHeight: neededHeight,
    getMaxHeight: neededHeight,
  });
  const sync = () => {
    state.boxes = readBoxes(widgetOf(bound, "regions_json"));
    render();
  };
  const onConfigure = node.onConfigure;
  node.onConfigure = function () {
    const r = onConfigure?.apply(this, arguments);
    state.aspect = null;  // fit the loaded node to its editor on the next frame
    sync();
    return r;
  };
  const onAdded = node.onAdded;
  node.onAdded = function () {
    const r = onAdded?.apply(this, arguments);
    if (frame == null) frame = requestAnimationFrame(loop);
    return r;
  };
  frame = requestAnimationFrame(loop);
  return { widget, state, sync, neededHeight, render };
}
