#!/usr/bin/env bash
# The full-schedule bonsai runs of issue 13 (--steps_scale 1, one view per step, the default student recipe) on a
# 2-GPU machine (device kind nvidia-h200-x2), run detached with setsid so they outlast one device command
# (SCRIPT=scripts/gpu_x2_full.sh bash .devdata/x2_call.sh 570, then polls); results under /tmp/res.
# Needs .devdata/bonsai and plyfile's wheel in .whl/ (as scripts/gpu_x2_student.sh). Seeds 0 and 1, one whole
# pipeline per GPU (about 11 minutes each on an H200), then scripts/seed_study.py's table of student - G_std.
SCENES=bonsai source "$(dirname "$0")/gpu_session_env.sh"
build_extensions
stamp "full-schedule pipelines, bonsai seeds 0 (GPU 0) and 1 (GPU 1)"
python3 scripts/seed_study.py -s data/bonsai -o $S/bonsai_full --seeds 0 1 --parallel 2 --gpus 0 1 --label bonsai_full \
  -- --eval --data_device cuda --quiet --views_per_step 1 --imp_metric indoor --test_iterations 7000 30000 \
  > $R/logs/bonsai_full.txt 2>&1
tail -14 $R/logs/bonsai_full.txt >> $R/summary.txt
cp $S/bonsai_full/seed_study.json $R/studies.json 2>/dev/null
stamp done
touch $DONE
