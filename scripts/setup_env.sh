#!/usr/bin/env bash
# Create (or reuse) .venv with the pinned requirements. Sourced by demo.sh and test.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
if [ ! -x "$ROOT/.venv/bin/python" ]; then
  "$PY" -m venv "$ROOT/.venv"
fi
if ! "$ROOT/.venv/bin/python" -c "import torch, torchvision, scipy, plyfile, cv2, tqdm, lpips, pycolmap, pytest, xdist, ninja, viser, matplotlib" 2>/dev/null; then
  "$ROOT/.venv/bin/python" -m pip install -q --upgrade pip
  "$ROOT/.venv/bin/python" -m pip install -q -r "$ROOT/requirements.txt"
fi
export PATH="$ROOT/.venv/bin:$PATH"
