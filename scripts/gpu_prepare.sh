#!/usr/bin/env bash
# Lay out, in this checkout's git-ignored folders, what the GPU session scripts carry to the device machine (which
# receives the checkout only and has no package registry): .devdata/<scene> from ../shared/data (default: bonsai
# lego), .devdata/peer_gsplat_train.py from ../shared/bench, and in .whl/ the wheels of plyfile and gsplat 1.5.3 for
# the machine's Python 3.12, and pytest-xdist and execnet (gpu_x2_student.sh PLAN=suite runs the suite on 12 workers). A new checkout has none of it (ignored files do not travel between sessions).
# Usage: bash scripts/gpu_prepare.sh [scene ...]; then carry [".devdata/bonsai", ".devdata/lego", ".whl", ...].
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
[ -d "$SHARED/data" ] || { echo "gpu_prepare.sh: no $SHARED/data: set SHARED to the shared folder"; exit 2; }
mkdir -p .devdata .whl
for s in "${@:-bonsai lego}"; do
  for scene in $s; do
    [ -d "$SHARED/data/$scene" ] || { echo "gpu_prepare.sh: no scene $SHARED/data/$scene"; exit 2; }
    [ -d ".devdata/$scene" ] || cp -r "$SHARED/data/$scene" ".devdata/$scene"
  done
done
cp "$SHARED/bench/peer_gsplat_train.py" .devdata/
PY=${PYTHON:-python3}
for w in plyfile gsplat==1.5.3 pytest_xdist execnet; do
  ls .whl/"${w%%=*}"-*.whl > /dev/null 2>&1 || "$PY" -m pip download -q --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "$w"
done
for d in .devdata .whl; do
  git check-ignore -q "$d" || { echo "gpu_prepare.sh: $d is not git-ignored (it must not be committed)"; exit 1; }
done
du -sh .devdata .whl
