#!/usr/bin/env bash
# Shared body of the run_*.sh wrappers: for each scene, train the 3 teachers + student, render the
# student's test views, compute metrics. Expects DATA_ROOT, OUT_ROOT, SCENES (array), FLAGS (array);
# extra arguments go to train.py.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
for s in "${SCENES[@]}"; do
  if [ ! -d "$DATA_ROOT/$s" ]; then
    echo "error: scene folder $DATA_ROOT/$s does not exist (set DATA_ROOT at the top of the script)" >&2
    exit 2
  fi
  python train.py -s "$DATA_ROOT/$s" -m "$OUT_ROOT/$s" --eval --num_models 4 "${FLAGS[@]}" "$@"
  python render.py -m "$OUT_ROOT/$s" --skip_train --itrain 3
  python metrics.py -m "$OUT_ROOT/$s"
done
