// Editor layout, pure: the region canvas keeps the aspect of the image being made; the prompt fields and
// the JSON toggle below it have fixed heights (CSS pixels, unscaled by the graph's zoom).

export const FIELD_HEIGHT = 24;
export const TOGGLE_HEIGHT = 18;
export const JSON_HEIGHT = 96;
export const GAP = 4;
const MAX_ASPECT = 8;

/** Width / height of the region canvas: the linked image's natural size once it is shown, else the node's
 * image_width x image_height, else square. Clamped to 1:8 .. 8:1. */
export function regionAspect(width, height, imageWidth = 0, imageHeight = 0) {
  let aspect = 1;
  if (imageWidth > 0 && imageHeight > 0) aspect = imageWidth / imageHeight;
  else if (width > 0 && height > 0) aspect = width / height;
  return Math.min(MAX_ASPECT, Math.max(1 / MAX_ASPECT, aspect));
}

/** Height of everything below the canvas: prompt, negative, the JSON toggle and, when shown, the JSON. */
export function chromeHeight(showJson = false) {
  return 2 * FIELD_HEIGHT + TOGGLE_HEIGHT + 3 * GAP + (showJson ? JSON_HEIGHT + GAP : 0);
}

/** Largest width x height of the given aspect inside maxWidth x maxHeight (whole pixels, at least 1). */
export function fitAspect(aspect, maxWidth, maxHeight = Infinity) {
  let width = Math.max(1, maxWidth);
  let height = width / aspect;
  if (height > maxHeight) {
    height = Math.max(1, maxHeight);
    width = height * aspect;
  }
  return { width: Math.max(1, Math.floor(width)), height: Math.max(1, Math.floor(height)) };
}

/** Height the editor needs at a given width: the canvas at full width plus the fields below it. */
export function editorHeight(width, aspect, showJson = false) {
  return fitAspect(aspect, width).height + chromeHeight(showJson);
}
