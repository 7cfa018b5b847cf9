// Canvas drawing of the region boxes only: (ctx, state, size) -> void.

const COLORS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45"];

export function colorOf(index) {
  return COLORS[index % COLORS.length];
}

export function drawRegions(ctx, state, width, height) {
  ctx.clearRect(0, 0, width, height);
  ctx.fillStyle = "#222";
  ctx.fillRect(0, 0, width, height);
  if (state.image) ctx.drawImage(state.image, 0, 0, width, height);
  state.boxes.forEach((b, i) => {
    const x = b.x * width, y = b.y * height, w = b.width * width, h = b.height * height;
    ctx.fillStyle = colorOf(i) + "33";
    ctx.fillRect(x, y, w, h);
    ctx.lineWidth = i === state.selected ? 3 : 1.5;
    ctx.strokeStyle = colorOf(i);
    ctx.strokeRect(x, y, w, h);
    ctx.fillStyle = colorOf(i);
    ctx.fillRect(x + w - 6, y + h - 6, 6, 6);
    ctx.font = "12px sans-serif";
    ctx.fillText(`${i + 1}: ${(b.prompt || "(no prompt)").slice(0, 40)}`, x + 4, y + 14);
  });
  if (state.draft) {
    const d = state.draft;
    ctx.setLineDash([4, 3]);
    ctx.strokeStyle = "#fff";
    ctx.strokeRect(d.x * width, d.y * height, d.width * width, d.height * height);
    ctx.setLineDash([]);
  }
}
