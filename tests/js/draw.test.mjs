import { test } from "node:test";
import assert from "node:assert/strict";
import { labelText, wrapText } from "../../web/js/region_box/draw.js";

const chars = (t) => t.length;  // one unit per character

test("labels wrap at spaces, cut long words, and end in an ellipsis when cut short", () => {
  assert.deepEqual(wrapText("1: a <cat1> <cat2>, sitting", 10, chars, 5), ["1: a", "<cat1>", "<cat2>,", "sitting"]);
  assert.deepEqual(wrapText("1: a <cat1> <cat2>, sitting", 10, chars, 2), ["1: a", "<cat1>…"]);
  assert.deepEqual(wrapText("abcdefghijklmnop", 10, chars, 2), ["abcdefghij", "klmnop"]);
  assert.deepEqual(wrapText("short", 10, chars, 1), ["short"]);
  assert.deepEqual(wrapText("", 10, chars, 3), []);
  for (const line of wrapText("a long prompt with many words in it", 7, chars, 3)) assert.ok(line.length <= 7);
});

test("a label names the box by number and prompt", () => {
  assert.equal(labelText({ prompt: "a <cat1>" }, 0), "1: a <cat1>");
  assert.equal(labelText({}, 2), "3: (no prompt)");
});
