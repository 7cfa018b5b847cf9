import { test } from "node:test";
import assert from "node:assert/strict";
import { boxFromDrag, hitTest, isUsable, moveBox, resizeBox, toFraction, MIN_BOX_SIZE } from "../../web/js/region_box/geometry.js";

test("a drag in any direction gives a clamped box", () => {
  assert.deepEqual(boxFromDrag({ x: 0.6, y: 0.9 }, { x: 0.2, y: 1.3 }), { x: 0.2, y: 0.9, width: 0.4, height: 0.1 });
  assert.equal(isUsable(boxFromDrag({ x: 0.5, y: 0.5 }, { x: 0.505, y: 0.9 })), false);
});

test("hit-testing prefers the corner handle and the topmost box", () => {
  const boxes = [{ x: 0, y: 0, width: 0.5, height: 0.5 }, { x: 0.25, y: 0.25, width: 0.5, height: 0.5 }];
  assert.deepEqual(hitTest(boxes, { x: 0.3, y: 0.3 }), { index: 1, mode: "move" });
  assert.deepEqual(hitTest(boxes, { x: 0.1, y: 0.1 }), { index: 0, mode: "move" });
  assert.deepEqual(hitTest(boxes, { x: 0.75, y: 0.75 }), { index: 1, mode: "resize" });
  assert.equal(hitTest(boxes, { x: 0.9, y: 0.1 }), null);
});

test("moving and resizing keep the box inside the image", () => {
  const box = { x: 0.5, y: 0.5, width: 0.3, height: 0.3, prompt: "p" };
  assert.deepEqual(moveBox(box, 0.5, -0.9), { x: 0.7, y: 0, width: 0.3, height: 0.3, prompt: "p" });
  assert.deepEqual(resizeBox(box, { x: 2, y: 0.1 }), { x: 0.5, y: 0.5, width: 0.5, height: MIN_BOX_SIZE, prompt: "p" });
  assert.deepEqual(toFraction(150, 50, { left: 100, top: 0, width: 200, height: 100 }), { x: 0.25, y: 0.5 });
});
