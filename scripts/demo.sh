#!/usr/bin/env bash
# The main job on a CPU: make the synthetic scene, train the three teachers and the student,
# render the student's test views and print the metrics. Output in output/demo. About 3 min on 2 cores.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
SCENE="${SCENE:-output/demo_scene}"
OUT="${OUT:-output/demo}"
python scripts/make_synthetic_scene.py -o "$SCENE" --num_views 24 --width 96 --height 72 --num_points 1500
rm -rf "$OUT"
python train.py -s "$SCENE" -m "$OUT" --eval --num_models 4 --steps_scale 0.01 --views_per_step 1 \
  --densification_interval 2500 --opacity_reset_interval 100000 \
  --test_iterations 30000 --save_iterations 30000 --quiet
python render.py -m "$OUT" --skip_train --quiet
python metrics.py -m "$OUT"
