// Pure box geometry in image fractions: normalising drags, clamping, hit-testing, moving, resizing.

export const MIN_BOX_SIZE = 0.02;
export const HANDLE_SIZE = 0.04;
const round = (v) => Math.round(v * 10000) / 10000;

export function clamp01(v) {
  return Math.min(1, Math.max(0, v));
}

/** Box from a drag between two points (any direction), clamped to the image. */
export function boxFromDrag(a, b) {
  const x0 = clamp01(Math.min(a.x, b.x)), x1 = clamp01(Math.max(a.x, b.x));
  const y0 = clamp01(Math.min(a.y, b.y)), y1 = clamp01(Math.max(a.y, b.y));
  return { x: round(x0), y: round(y0), width: round(x1 - x0), height: round(y1 - y0) };
}

export function isUsable(box) {
  return box.width >= MIN_BOX_SIZE && box.height >= MIN_BOX_SIZE;
}

/** Topmost box under a point: {index, mode: "resize" | "move"} or null. Later boxes are on top. */
export function hitTest(boxes, p, handle = HANDLE_SIZE) {
  for (let i = boxes.length - 1; i >= 0; i--) {
    const b = boxes[i];
    const right = b.x + b.width, bottom = b.y + b.height;
    if (Math.abs(p.x - right) <= handle && Math.abs(p.y - bottom) <= handle) return { index: i, mode: "resize" };
    if (p.x >= b.x && p.x <= right && p.y >= b.y && p.y <= bottom) return { index: i, mode: "move" };
  }
  return null;
}

/** Move a box by (dx, dy), kept inside the image. */
export function moveBox(box, dx, dy) {
  const x = Math.min(1 - box.width, Math.max(0, box.x + dx));
  const y = Math.min(1 - box.height, Math.max(0, box.y + dy));
  return { ...box, x: round(x), y: round(y) };
}

/** Resize from the bottom-right corner to point p, keeping a minimum size. */
export function resizeBox(box, p) {
  const width = Math.max(MIN_BOX_SIZE, Math.min(1 - box.x, p.x - box.x));
  const height = Math.max(MIN_BOX_SIZE, Math.min(1 - box.y, p.y - box.y));
  return { ...box, width: round(width), height: round(height) };
}

/** Pixel point inside a canvas rectangle -> image fractions. */
export function toFraction(px, py, rect) {
  return { x: clamp01((px - rect.left) / rect.width), y: clamp01((py - rect.top) / rect.height) };
}
