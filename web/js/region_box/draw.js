// Canvas drawing of the region boxes. Sizes are screen pixels (the caller scales the context for the
// device pixel ratio), so labels read the same at every graph zoom. Every stroke has a dark outline and
// every label a dark backing: a box shows on any image.

const COLORS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45"];
const LABEL_FONT_PX = 11;
const LINE_PX = 14;
const PAD = 4;
const BAR = 3;  // the label's colour bar, left of its text
const OUTLINE = "rgba(0, 0, 0, 0.85)";
const LABEL_BACKING = "rgba(16, 16, 16, 0.82)";

export function colorOf(index) {
  return COLORS[index % COLORS.length];
}

/** Text wrapped at spaces into at most maxLines lines of measured width <= maxWidth; a word too long for a
 * line is cut, and text that does not fit ends in an ellipsis. */
export function wrapText(text, maxWidth, measure, maxLines) {
  const lines = [];
  let rest = text.trim();
  while (rest && lines.length < maxLines) {
    let end = rest.length;
    while (end > 1 && measure(rest.slice(0, end)) > maxWidth) {
      const space = rest.lastIndexOf(" ", end - 1);
      end = space > 0 ? space : end - 1;
    }
    lines.push(rest.slice(0, end));
    rest = rest.slice(end).trim();
  }
  if (rest && lines.length) {
    let last = lines[lines.length - 1];
    while (last && measure(last + "…") > maxWidth) last = last.slice(0, -1);
    lines[lines.length - 1] = last.trimEnd() + "…";
  }
  return lines;
}

export function labelText(box, index) {
  return `${index + 1}: ${box.prompt || "(no prompt)"}`;
}

function roundRect(ctx, x, y, w, h, r) {
  ctx.beginPath();
  ctx.moveTo(x + r, y);
  ctx.arcTo(x + w, y, x + w, y + h, r);
  ctx.arcTo(x + w, y + h, x, y + h, r);
  ctx.arcTo(x, y + h, x, y, r);
  ctx.arcTo(x, y, x + w, y, r);
  ctx.closePath();
}

function outlinedRect(ctx, x, y, w, h, color, width) {
  ctx.lineWidth = width + 2;
  ctx.strokeStyle = OUTLINE;
  ctx.strokeRect(x, y, w, h);
  ctx.lineWidth = width;
  ctx.strokeStyle = color;
  ctx.strokeRect(x, y, w, h);
}

/** Label at (x, y), wrapped into maxWidth x maxHeight (at least one line): dark rounded backing, colour bar,
 * white text. Returns its rect and line count. */
function drawLabel(ctx, text, color, x, y, maxWidth, maxHeight) {
  ctx.font = `600 ${LABEL_FONT_PX}px sans-serif`;
  const measure = (t) => ctx.measureText(t).width;
  const maxLines = Math.max(1, Math.floor((maxHeight - 2 * PAD) / LINE_PX));
  const lines = wrapText(text, Math.max(LABEL_FONT_PX, maxWidth - BAR - 2 * PAD), measure, maxLines);
  const width = BAR + 2 * PAD + Math.max(0, ...lines.map(measure));
  const height = lines.length * LINE_PX + 2 * PAD - 2;
  ctx.fillStyle = LABEL_BACKING;
  roundRect(ctx, x, y, width, height, 4);
  ctx.fill();
  ctx.fillStyle = color;
  ctx.fillRect(x + 2, y + 3, BAR, height - 6);
  ctx.fillStyle = "#fff";
  ctx.textBaseline = "middle";
  lines.forEach((line, i) => ctx.fillText(line, x + BAR + PAD + 1, y + PAD - 1 + (i + 0.5) * LINE_PX));
  return { x, y, width, height, lines: lines.length };
}

/** Draw image, boxes, labels and the box being drawn; returns the label rects (screen pixels). */
export function drawRegions(ctx, state, width, height) {
  ctx.clearRect(0, 0, width, height);
  ctx.fillStyle = "#222";
  ctx.fillRect(0, 0, width, height);
  if (state.image?.naturalWidth) ctx.drawImage(state.image, 0, 0, width, height);  // loaded (a broken one throws)
  const labels = [];
  state.boxes.forEach((b, i) => {
    const x = b.x * width, y = b.y * height, w = b.width * width, h = b.height * height;
    const color = colorOf(i);
    ctx.fillStyle = color + "2e";
    ctx.fillRect(x, y, w, h);
    outlinedRect(ctx, x, y, w, h, color, i === state.selected ? 3 : 2);
    ctx.fillStyle = OUTLINE;
    ctx.fillRect(x + w - 9, y + h - 9, 9, 9);
    ctx.fillStyle = color;
    ctx.fillRect(x + w - 8, y + h - 8, 7, 7);
    labels.push(drawLabel(ctx, labelText(b, i), color, x + 3, y + 3, w - 6, h / 2));  // half the box stays clear
  });
  if (state.draft) {
    const d = state.draft;
    ctx.setLineDash([4, 3]);
    outlinedRect(ctx, d.x * width, d.y * height, d.width * width, d.height * height, "#fff", 1.5);
    ctx.setLineDash([]);
  }
  return labels;
}
