#!/usr/bin/env bash
# Compile and install our CUDA extensions (submodules/) into the active Python. Needs nvcc; a GPU is
# not needed to compile. TORCH_CUDA_ARCH_LIST defaults to the local GPU's, or 9.0 without a GPU.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then export CUDA_HOME=/usr/local/cuda; fi
if [ -z "${CUDA_HOME:-}" ] || [ ! -x "$CUDA_HOME/bin/nvcc" ]; then
  echo "CUDA toolkit not found (set CUDA_HOME): skipping the CUDA extensions; the PyTorch rasterizer is used"
  exit 0
fi
if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ] && ! python -c "import torch,sys; sys.exit(not torch.cuda.is_available())"; then
  export TORCH_CUDA_ARCH_LIST="9.0"
fi
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
echo "building the CUDA extensions (CUDA_HOME=$CUDA_HOME, arch ${TORCH_CUDA_ARCH_LIST:-local GPU}); this takes a few minutes"
python -m pip install -q --no-build-isolation --no-deps "$ROOT/submodules/diff-gaussian-rasterization" \
  "$ROOT/submodules/simple-knn"
python -c "import diff_gaussian_rasterization._C, simple_knn._C; print('CUDA extensions built and importable')"
