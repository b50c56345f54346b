#!/usr/bin/env bash
# The second 2-GPU call of the 2026-11-29 evening session (device kind nvidia-h200-x2), run detached with setsid;
# results under /tmp/res. Needs .devdata/bonsai and plyfile's wheel in .whl/ (as scripts/gpu_x2_session.sh).
# GPU 0: build, then the GPU tests (rasterizer stages against the reference, invariance, fuzz, syncs, fused loss,
# optimizer, the 2-GPU data-parallel test). GPU 1: one bonsai pipeline (seed 0, the recipe's flags) and
# scripts/gpu_resume_check.py. Then on both GPUs (side by side: quality only): students on that pipeline's
# teachers, four student seeds per variant: the baseline, --novel_views 2 (prob 0.5) and --novel_views 4
# --novel_view_prob 1.
source "$(dirname "$0")/gpu_session_env.sh"
build_extensions
stamp "GPU tests (GPU 0; the 2-GPU test on both) | bonsai pipeline seed 0 + resume check (GPU 1)"
( export CUDA_VISIBLE_DEVICES=1
  python3 scripts/seed_study.py -s data/bonsai -o $S/bonsai_t --seeds 0 --label bonsai_t -- $RECIPE > $R/logs/teachers.txt 2>&1
  python3 scripts/gpu_resume_check.py -s data/bonsai -o /tmp/resume > $R/logs/resume.txt 2>&1 ) &
CUDA_VISIBLE_DEVICES=0 python3 -m pytest -q -rfE -p no:cacheprovider tests/test_cuda_rasterizer.py tests/test_raster_invariance.py \
  tests/test_raster_fuzz.py tests/test_step_syncs.py tests/test_fused_loss.py tests/test_optim.py tests/test_simple_knn.py \
  > $R/logs/gpu_tests.txt 2>&1
python3 -m pytest -q -rfE -p no:cacheprovider tests/test_distributed.py -k gpu > $R/logs/gpu_dist.txt 2>&1
tail -3 $R/logs/gpu_tests.txt >> $R/summary.txt; grep -E "^(FAILED|ERROR)" $R/logs/gpu_tests.txt | head -20 >> $R/summary.txt
tail -3 $R/logs/gpu_dist.txt >> $R/summary.txt
wait
tail -8 $R/logs/teachers.txt >> $R/summary.txt; tail -5 $R/logs/resume.txt >> $R/summary.txt
stamp "students on the seed-0 teachers: baseline, novel 2 x 0.5, novel 4 x 1 (4 seeds each, both GPUs)"
T=$S/bonsai_t/seed_0
python3 scripts/seed_study.py -s data/bonsai -o $S/s_base --students_only $T --seeds 0 1 2 3 --parallel 4 --gpus 0 1 \
  --label base -- $RECIPE > $R/logs/s_base.txt 2>&1 &
python3 scripts/seed_study.py -s data/bonsai -o $S/s_novel2 --students_only $T --seeds 0 1 2 3 --parallel 4 --gpus 1 0 \
  --label novel2 -- $RECIPE --novel_views 2 > $R/logs/s_novel2.txt 2>&1 &
python3 scripts/seed_study.py -s data/bonsai -o $S/s_novel4 --students_only $T --seeds 0 1 2 3 --parallel 4 --gpus 0 1 \
  --label novel4 -- $RECIPE --novel_views 4 --novel_view_prob 1 > $R/logs/s_novel4.txt 2>&1
wait
for v in base novel2 novel4; do tail -9 $R/logs/s_$v.txt | head -6 >> $R/summary.txt; done
for v in novel2 novel4; do python3 scripts/seed_study.py --compare $S/s_base $S/s_$v | tee -a $R/summary.txt; done
python3 - <<'PY'
import glob, json
out = {f: json.load(open(f)) for f in sorted(glob.glob("/tmp/study/*/seed_study.json"))}
json.dump(out, open("/tmp/res/studies.json", "w"), indent=1)
PY
stamp done
touch $DONE
