import { test } from "node:test";
import assert from "node:assert/strict";
import { GAP, JSON_HEIGHT, chromeHeight, editorHeight, fitAspect, regionAspect }
  from "../../web/js/region_box/layout.js";

test("the aspect comes from the shown image, else the node's size, else square", () => {
  assert.equal(regionAspect(512, 1024, 768, 512), 1.5);
  assert.equal(regionAspect(768, 512, 0, 0), 1.5);
  assert.equal(regionAspect(768, 512), 1.5);
  assert.equal(regionAspect(0, 512), 1);
  assert.equal(regionAspect(undefined, undefined, undefined, undefined), 1);
  assert.equal(regionAspect(10000, 1), 8);  // clamped
});

test("the canvas keeps its aspect inside the room it gets", () => {
  assert.deepEqual(fitAspect(1.5, 300), { width: 300, height: 200 });
  assert.deepEqual(fitAspect(1.5, 300, 100), { width: 150, height: 100 });
  assert.deepEqual(fitAspect(0.5, 300, 1000), { width: 300, height: 600 });
  const tiny = fitAspect(2, 0, -5);  // an element not laid out yet still gets a drawable canvas
  assert.ok(tiny.width >= 1 && tiny.height >= 1);
});

test("the editor's height is the canvas at full width plus the fields below it", () => {
  assert.equal(editorHeight(300, 1.5), 200 + chromeHeight());
  assert.equal(chromeHeight(true) - chromeHeight(false), JSON_HEIGHT + GAP);
  assert.ok(editorHeight(600, 1.5) > editorHeight(300, 1.5));
});
