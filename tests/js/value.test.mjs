// The JS validator accepts and rejects the shared fixtures exactly as the Python one (same codes).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { parseRegionValue, serializeRegionValue } from "../../web/js/region_box/value.js";

const dir = join(dirname(fileURLToPath(import.meta.url)), "..", "fixtures", "region_spec");

for (const name of readdirSync(dir).filter((f) => f.endsWith(".json")).sort()) {
  test(`fixture ${name}`, () => {
    const { expect, text } = JSON.parse(readFileSync(join(dir, name), "utf8"));
    if (expect === "valid") {
      const value = parseRegionValue(text);
      assert.deepEqual(parseRegionValue(serializeRegionValue(value.regions)), value);
    } else {
      assert.throws(() => parseRegionValue(text), (err) => err.code === expect && err.message.length > 10);
    }
  });
}
