#!/usr/bin/env bash
# Install what the tests need into .venv, compile the CUDA extensions when nvcc is there
# (BUILD_CUDA=0 skips that), then run the test suite (GPU tests skip without a GPU).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
if [ "${BUILD_CUDA:-1}" = "1" ] && ! python -c "import diff_gaussian_rasterization._C, simple_knn._C" 2>/dev/null; then
  bash scripts/build_extensions.sh
fi
python -m pytest tests -q "$@"
