#!/usr/bin/env bash
# Build both CUDA extensions (submodules/) and run their GPU tests, in one command on a GPU machine:
#   bash scripts/gpu_check.sh            [extra pytest args]
# Environment: PYTHON (default python3), CUDA_HOME (default /usr/local/cuda when it exists), TORCH_CUDA_ARCH_LIST (default:
# the local GPU's), MAX_JOBS (default: all cores). Set SKIP_BUILD=1 to test already installed builds.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ -z "${CUDA_HOME:-}" ] && [ -d /usr/local/cuda ]; then export CUDA_HOME=/usr/local/cuda; fi
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
if [ "${SKIP_BUILD:-0}" != "1" ]; then
  echo "== building diff_gaussian_rasterization and simple_knn (MAX_JOBS=$MAX_JOBS, arch ${TORCH_CUDA_ARCH_LIST:-auto})"
  # the two packages build in parallel; each log is printed if its build fails
  $PY -m pip install --no-build-isolation --no-deps ./submodules/diff-gaussian-rasterization >/tmp/build_dgr.log 2>&1 &
  p1=$!
  $PY -m pip install --no-build-isolation --no-deps ./submodules/simple-knn >/tmp/build_knn.log 2>&1 &
  p2=$!
  ok=1
  wait $p1 || { echo "diff_gaussian_rasterization build FAILED:"; tail -60 /tmp/build_dgr.log; ok=0; }
  wait $p2 || { echo "simple_knn build FAILED:"; tail -60 /tmp/build_knn.log; ok=0; }
  [ $ok = 1 ] || exit 1
fi
echo "== tests"
$PY -m pytest -q -rfE -p no:cacheprovider tests/test_cuda_rasterizer.py tests/test_gsplat_backend.py tests/test_simple_knn.py tests/test_optim.py \
  tests/test_fused_loss.py tests/test_step_syncs.py tests/test_raster_fuzz.py tests/test_raster_invariance.py \
  tests/test_capacity_mode.py tests/test_graph_step.py tests/test_pair_budget.py \
  tests/test_distill.py::test_reinitialise_keeps_positions_and_dc_only \
  tests/test_distill.py::test_on_the_gpu_the_teachers_wait_there_and_each_stage_reports_its_own_peak "$@"
