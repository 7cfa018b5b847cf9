// The region-box editor on a RegionBoxes node: a canvas (draw, move, resize, select, delete) and two
// fields for the selected box's prompt and negative. Its only state is the node's `regions_json`
// widget value, so saved workflows and API prompts carry the boxes.
//
// `liveNode()` names the node the editor edits. The current frontend's Vue node renderer can keep
// showing this element for a *new* node that reuses the id of a removed one (e.g. after loading another
// workflow); edits must then reach the node now in the graph, not the removed one.
import { EMPTY_VALUE, parseRegionValue, serializeRegionValue } from "./value.js";
import { boxFromDrag, hitTest, isUsable, moveBox, resizeBox, toFraction } from "./geometry.js";
import { drawRegions } from "./draw.js";

const EDITOR_HEIGHT = 260;

function readBoxes(widget) {
  try {
    return parseRegionValue(widget.value || EMPTY_VALUE).regions;
  } catch (err) {
    return [];
  }
}

const valueWidgetOf = (node) => node?.widgets?.find((w) => w.name === "regions_json") ?? null;

export function attachRegionEditor(node, liveNode = () => node) {
  if (!valueWidgetOf(node)) return null;
  const target = () => {
    const live = liveNode();
    return valueWidgetOf(live) ? live : node;
  };
  const root = document.createElement("div");
  root.className = "mixofshow-region-editor";
  root.style.cssText = "display:flex;flex-direction:column;gap:4px;width:100%;";
  const canvas = document.createElement("canvas");
  canvas.tabIndex = 0;
  canvas.style.cssText = "width:100%;aspect-ratio:1/1;cursor:crosshair;touch-action:none;background:#222;";
  const prompt = document.createElement("input");
  prompt.placeholder = "prompt of the selected box, e.g. a <cat1> <cat2>";
  const negative = document.createElement("input");
  negative.placeholder = "negative prompt of the selected box";
  for (const el of [prompt, negative]) el.style.cssText = "width:100%;box-sizing:border-box;";
  root.append(canvas, prompt, negative);

  const state = { boxes: readBoxes(valueWidgetOf(node)), selected: -1, draft: null, image: null, drag: null };
  let bound = node;

  const rebind = () => {  // follow the live node; take its boxes when it changed under us
    const current = target();
    if (current !== bound) {
      bound = current;
      state.boxes = readBoxes(valueWidgetOf(current));
      state.selected = -1;
    }
  };
  const commit = () => {
    const valueWidget = valueWidgetOf(bound);
    valueWidget.value = serializeRegionValue(state.boxes);
    valueWidget.callback?.(valueWidget.value);
    bound.setDirtyCanvas?.(true, true);
  };
  const render = () => {
    rebind();
    if (!state.drag) state.boxes = readBoxes(valueWidgetOf(bound));  // the widget value is the truth
    const rect = canvas.getBoundingClientRect();
    canvas.width = Math.max(1, Math.round(rect.width));
    canvas.height = Math.max(1, Math.round(rect.height));
    drawRegions(canvas.getContext("2d"), state, canvas.width, canvas.height);
    const box = state.boxes[state.selected];
    prompt.disabled = negative.disabled = !box;
    prompt.value = box?.prompt ?? "";
    negative.value = box?.negative ?? "";
  };
  const point = (e) => toFraction(e.clientX, e.clientY, canvas.getBoundingClientRect());

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
  prompt.addEventListener("input", () => {
    rebind();
    if (state.selected < 0) return;
    state.boxes[state.selected].prompt = prompt.value;
    commit();
  });
  negative.addEventListener("input", () => {
    rebind();
    if (state.selected < 0) return;
    state.boxes[state.selected].negative = negative.value;
    commit();
  });

  const widget = node.addDOMWidget("region_editor", "mixofshow_region_editor", root, {
    serialize: false,
    getValue: () => valueWidgetOf(bound)?.value,
    setValue: () => {},
    getMinHeight: () => EDITOR_HEIGHT,
  });
  widget.computeSize = (width) => [width, EDITOR_HEIGHT];
  const sync = () => {
    state.boxes = readBoxes(valueWidgetOf(bound));
    render();
  };
  const onConfigure = node.onConfigure;
  node.onConfigure = function () {
    const r = onConfigure?.apply(this, arguments);
    sync();
    return r;
  };
  const resizeObserver = typeof ResizeObserver === "undefined" ? null : new ResizeObserver(render);
  resizeObserver?.observe(canvas);
  requestAnimationFrame(render);
  return { widget, state, setImage(img) { state.image = img; render(); }, sync };
}
