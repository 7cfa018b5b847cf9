// The region-box widget value: versioned JSON, validated by the same rules (and error codes) as
// mixofshow_core/regions.py. Shared fixtures in tests/fixtures/region_spec keep the two identical.

export const SPEC_VERSION = 1;
export const EMPTY_VALUE = JSON.stringify({ version: SPEC_VERSION, regions: [] });
const EPS = 1e-6;
const BOX_KEYS = ["x", "y", "width", "height"];
const OPTIONAL = { prompt: ["string"], negative: ["string"], weight: ["number"], id: ["string", "number"], strength: ["number"] };

/** @typedef {{x: number, y: number, width: number, height: number, prompt?: string, negative?: string, weight?: number}} RegionBox */

export class RegionSpecError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

function isNumber(v) {
  return typeof v === "number" && Number.isFinite(v);
}

/** Parse and validate a value; returns {version, regions: RegionBox[]} or throws RegionSpecError. */
export function parseRegionValue(input) {
  let data = input;
  if (typeof input === "string") {
    try {
      data = JSON.parse(input);
    } catch (err) {
      throw new RegionSpecError("bad_json", `Region value is not valid JSON (${err.message}).`);
    }
  }
  if (data === null || typeof data !== "object" || Array.isArray(data) || !Array.isArray(data.regions)) {
    throw new RegionSpecError("bad_shape", 'Region value must be an object {"version": 1, "regions": [...]}.');
  }
  if (data.version !== SPEC_VERSION) {
    throw new RegionSpecError("unknown_version", `Region value has version ${JSON.stringify(data.version)}; this pack reads version ${SPEC_VERSION}.`);
  }
  const regions = data.regions.map((item, i) => {
    if (item === null || typeof item !== "object" || Array.isArray(item)) {
      throw new RegionSpecError("bad_shape", `region ${i}: expected an object.`);
    }
    const missing = BOX_KEYS.filter((k) => !(k in item));
    if (missing.length) throw new RegionSpecError("missing_key", `region ${i}: missing ${missing.join(", ")}.`);
    const unknown = Object.keys(item).filter((k) => !BOX_KEYS.includes(k) && !(k in OPTIONAL));
    if (unknown.length) throw new RegionSpecError("unknown_key", `region ${i}: unknown keys ${unknown.join(", ")}.`);
    for (const k of BOX_KEYS) {
      if (!isNumber(item[k])) throw new RegionSpecError("bad_type", `region ${i}: '${k}' must be a finite number.`);
    }
    for (const [k, kinds] of Object.entries(OPTIONAL)) {
      if (k in item && !kinds.includes(typeof item[k])) throw new RegionSpecError("bad_type", `region ${i}: '${k}' has the wrong type.`);
      if (k in item && typeof item[k] === "number" && !Number.isFinite(item[k])) throw new RegionSpecError("bad_type", `region ${i}: '${k}' must be finite.`);
    }
    const { x, y, width, height } = item;
    if (width <= 0 || height <= 0) throw new RegionSpecError("zero_size", `region ${i}: width and height must be > 0.`);
    if (x < -EPS || y < -EPS || x + width > 1 + EPS || y + height > 1 + EPS) {
      throw new RegionSpecError("out_of_range", `region ${i}: the box leaves the image (fractions, x + width <= 1).`);
    }
    const weight = item.weight ?? 1.0;
    if (!(weight > 0)) throw new RegionSpecError("bad_weight", `region ${i}: weight must be > 0.`);
    return { ...item };
  });
  return { version: SPEC_VERSION, regions };
}

/** Serialize boxes to the widget value. */
export function serializeRegionValue(regions) {
  return JSON.stringify({ version: SPEC_VERSION, regions });
}
