#!/usr/bin/env bash
# Create (or reuse) .venv with the pinned requirements. Sourced by demo.sh and test.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
if [ ! -x "$ROOT/.venv/bin/python" ]; then
  "$PY" -m venv "$ROOT/.venv"
fi
if ! "$ROOT/.venv/bin/python" -c "import torch, torchvision, scipy, plyfile, cv2, tqdm, lpips, pycolmap, pytest, xdist, ninja, viser, matplotlib" 2>/dev/null; then
  # no wheel cache: torch's CUDA build is ~5.5 GB installed, and a cached copy of its wheels would add GBs more on a
  # machine whose disk may be tight (a CI run once failed with "No space left on device" while installing)
  "$ROOT/.venv/bin/python" -m pip install -q --no-cache-dir --upgrade pip
  "$ROOT/.venv/bin/python" -m pip install -q --no-cache-dir -r "$ROOT/requirements.txt"
fi
export PATH="$ROOT/.venv/bin:$PATH"
