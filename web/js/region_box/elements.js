// The editor's DOM: a stage holding the canvas, the prompt and negative fields, and the "show JSON" toggle
// with its text box. Their heights come from layout.js, so the element is as tall as the node reserves.
import { FIELD_HEIGHT, GAP, JSON_HEIGHT, TOGGLE_HEIGHT } from "./layout.js";

const FIELD_STYLE = "box-sizing:border-box;width:100%;min-width:0;margin:0;flex:none;font:12px sans-serif;"
  + "background:var(--comfy-input-bg,#222);color:var(--input-text,#ddd);border:1px solid var(--border-color,#555);"
  + "border-radius:4px;padding:2px 6px;";

function field(tag, placeholder, height) {
  const el = document.createElement(tag);
  el.placeholder = placeholder;
  el.style.cssText = FIELD_STYLE + `height:${height}px;`;
  return el;
}

export function createEditorElements() {
  // The host positions and shows/hides root (the 2024 UI resets its display); body holds the layout.
  const root = document.createElement("div");
  root.className = "mixofshow-region-editor";
  // contain: the canvas's pixel size never widens the host's layout (Vue nodes lay widgets out in flow)
  root.style.cssText = "width:100%;min-width:0;box-sizing:border-box;contain:inline-size;overflow:hidden;";
  const body = document.createElement("div");
  body.style.cssText = `display:flex;flex-direction:column;gap:${GAP}px;width:100%;height:100%;`;
  root.append(body);
  const stage = document.createElement("div");
  stage.style.cssText = "position:relative;flex:none;width:100%;";
  const canvas = document.createElement("canvas");
  canvas.tabIndex = 0;
  canvas.style.cssText = "position:absolute;top:0;display:block;cursor:crosshair;touch-action:none;background:#222;"
    + "outline:none;border-radius:2px;";
  stage.append(canvas);
  const prompt = field("input", "prompt of the selected box, e.g. a <cat1> <cat2>", FIELD_HEIGHT);
  const negative = field("input", "negative prompt of the selected box", FIELD_HEIGHT);
  const toggle = document.createElement("label");
  toggle.style.cssText = `display:flex;align-items:center;gap:4px;height:${TOGGLE_HEIGHT}px;flex:none;`
    + "font:11px sans-serif;color:var(--descrip-text,#999);cursor:pointer;user-select:none;";
  const toggleBox = document.createElement("input");
  toggleBox.type = "checkbox";
  toggleBox.style.margin = "0";
  toggle.append(toggleBox, "show JSON");
  const json = field("textarea", "", JSON_HEIGHT);
  json.spellcheck = false;
  json.style.cssText += "display:none;resize:none;font:10px monospace;";
  body.append(stage, prompt, negative, toggle, json);
  return { root, stage, canvas, prompt, negative, toggleBox, json };
}
