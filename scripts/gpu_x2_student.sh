#!/usr/bin/env bash
# A 2-GPU session (device kind nvidia-h200-x2) for the student's recipe (issue 13), run detached with setsid so
# it can outlast one device command (.devdata/x2_call.sh polls it); results under /tmp/res.
# Needs, in the git-ignored .devdata/: bonsai and lego (from ../shared/data); plyfile's wheel in .whl/.
# Both GPUs: the 2-GPU data-parallel test. GPU 0: the baseline pipelines (the defaults) of bonsai seeds 0-3,
# then students on each seed's own teachers (paired by seed), one variant at a time, four seeds at once (quality
# only), and between them G_std and students timed alone on the GPU. GPU 1: the GPU tests, the lego baseline
# pipelines and lego variants, then the last bonsai variants. Each variant's table and paired comparison is
# appended to summary.txt as soon as it ends. (The 2026-11-30 night's variants: docs/BENCHMARKS.md; the ones
# below target a student stage no longer than G_std's: cheaper growth phases, extra steps only after the prune.)
source "$(dirname "$0")/gpu_session_env.sh"
build_extensions
stamp "2-GPU data-parallel test"
python3 -m pytest -q -rfE -p no:cacheprovider tests/test_distributed.py -k gpu > $R/logs/gpu_dist.txt 2>&1
tail -3 $R/logs/gpu_dist.txt >> $R/summary.txt

collect() {  # every finished study's JSON in one file (fetched by each poll)
  python3 - <<'PY'
import glob, json
out = {}
for f in sorted(glob.glob("/tmp/study/*/seed_study.json")) + sorted(glob.glob("/tmp/timed*/distill.json")):
    try:
        out[f] = json.load(open(f))
    except (OSError, ValueError):
        pass
json.dump(out, open("/tmp/res/studies.json.tmp", "w"), indent=1)
PY
  mv /tmp/res/studies.json.tmp /tmp/res/studies.json
}

base() {  # scene gpu [train.py flags]: the baseline pipelines of seeds 0-3
  local scene=$1 gpu=$2; shift 2
  python3 scripts/seed_study.py -s data/$scene -o $S/${scene}_base --seeds 0 1 2 3 --parallel 4 --gpus $gpu \
    --label ${scene}_base -- $RECIPE "$@" > $R/logs/${scene}_base.txt 2>&1
  stamp "$scene baseline pipelines done"; tail -14 $R/logs/${scene}_base.txt >> $R/summary.txt; collect
}

variant() {  # scene name gpu [train.py flags]: students on each seed's baseline teachers, compared seed by seed
  local scene=$1 name=$2 gpu=$3; shift 3
  local extra=""; [ $scene = lego ] && extra=-w
  python3 scripts/seed_study.py -s data/$scene -o $S/${scene}_$name --students_only $S/${scene}_base \
    --seeds 0 1 2 3 --parallel 4 --gpus $gpu --label ${scene}_$name -- $RECIPE $extra "$@" > $R/logs/${scene}_$name.txt 2>&1
  { stamp "$scene $name: $*"; tail -12 $R/logs/${scene}_$name.txt | head -9
    python3 scripts/seed_study.py --compare $S/${scene}_base $S/${scene}_$name; } >> $R/summary.txt 2>&1
  rm -rf $S/${scene}_$name/seed_*/point_cloud_[012]; collect  # (hard links to the baseline's teachers)
}

timed() {  # the stage times alone on GPU 0 (seed 0): G_std and its student, then the same student and variants
  # trained again on those teachers
  cp -al $S/bonsai_base/seed_0 /tmp/timed && rm -rf /tmp/timed/point_cloud_[23]
  CUDA_VISIBLE_DEVICES=0 python3 train.py -s data/bonsai -m /tmp/timed --num_models 4 --start 2 --seed 0 $RECIPE \
    > $R/logs/timed.txt 2>&1
  local v name flags
  for v in default: tail:--student_steps_scale,1,--student_extra_steps,12000 cheap:$CHEAP; do  # name:flags
    name=${v%%:*}; flags=${v#*:}
    cp -al /tmp/timed /tmp/timed_$name && rm -rf /tmp/timed_$name/point_cloud_3
    CUDA_VISIBLE_DEVICES=0 python3 train.py -s data/bonsai -m /tmp/timed_$name --num_models 4 --start 3 --seed 0 \
      $RECIPE ${flags//,/ } >> $R/logs/timed.txt 2>&1
  done
  { stamp "timed alone on GPU 0 (seed 0): stage seconds"
    python3 - <<'PY'
import glob, json
for name in ["/tmp/timed"] + sorted(glob.glob("/tmp/timed_*")):
    try:
        m = json.load(open(name + "/distill.json"))["models"]
    except (OSError, ValueError) as exc:
        print(name, "missing", exc); continue
    for k in ("G_std", "student"):
        r = m.get(k)
        if r and (k == "student" or name == "/tmp/timed"):
            print(f"{name:<16} {k:<8} stage {r.get('stage_seconds')} s  train {r.get('train_seconds')} s  "
                  f"iterations {r.get('iterations')}  PSNR {r.get('psnr')}  Gaussians {r.get('gaussians')}")
PY
  } >> $R/summary.txt 2>&1
  collect
}

gpu0() {  # in order of priority: the budget may end the session before the last ones
  base bonsai 0
  variant bonsai tail 0 --student_steps_scale 1 --student_extra_steps 12000  # as many steps as the 1.4 stretch
  variant bonsai median 0 --teacher_combine median
  timed
  variant bonsai cheap 0 ${CHEAP//,/ }
  variant bonsai nvs16 0 --novel_view_start 16000
  variant bonsai ld1 0 --lambda_distill 1.0
}

gpu1() {
  CUDA_VISIBLE_DEVICES=1 python3 -m pytest -q -rfE -p no:cacheprovider tests/test_cuda_rasterizer.py \
    tests/test_raster_invariance.py tests/test_raster_fuzz.py tests/test_step_syncs.py tests/test_fused_loss.py \
    tests/test_optim.py tests/test_simple_knn.py > $R/logs/gpu_tests.txt 2>&1
  CUDA_VISIBLE_DEVICES=1 python3 -m pytest -q -rfE -p no:cacheprovider tests/test_distill.py tests/test_training.py \
    tests/test_bad_input.py -k cuda > $R/logs/gpu_tests_k.txt 2>&1
  { stamp "GPU tests"; for f in gpu_tests gpu_tests_k; do tail -1 $R/logs/$f.txt
      grep -E "^(FAILED|ERROR)" $R/logs/$f.txt | head -20; done; } >> $R/summary.txt
  # issue 12 on the final kernels, each run alone on GPU 1: the peer table, the pipeline against the peer's
  # 7,500 steps, the rasterizer against gsplat, lego's step profile
  ( export CUDA_VISIBLE_DEVICES=1 LOG=$R/logs/i12 MODELS=/tmp/models1 PREBUILT=/tmp/prebuilt
    bash scripts/gpu_bonsai.sh peer pipeline bench > $R/logs/i12_bonsai.txt 2>&1
    SCENE=data/lego bash scripts/gpu_bonsai.sh profile > $R/logs/i12_lego.txt 2>&1 )
  { stamp "issue 12 (GPU 1 alone)"; grep -A7 "^| 7000 steps" $R/logs/i12_bonsai.txt
    grep -A2 "^| four-model" $R/logs/i12_bonsai.txt; tail -12 $R/logs/i12/benchmark.txt
    tail -25 $R/logs/i12_lego.txt; } >> $R/summary.txt 2>&1
  base lego 1 -w
  variant lego tail 1 --student_steps_scale 1 --student_extra_steps 12000
  variant lego cheap 1 ${CHEAP//,/ }
  variant lego median 1 --teacher_combine median
  while [ ! -f $S/bonsai_base/seed_study.json ]; do sleep 5; done
  variant bonsai nv4 1 --novel_views 4 --novel_view_prob 1
}

# the candidate whose student stage should not exceed G_std's: growth capped at 0.4x G_std, novel views only after
# the prune, no stretch, and the saved time spent in a fine-tuning tail at the pruned size
CHEAP=--student_steps_scale,1,--student_extra_steps,12000,--novel_view_start,16000,--num_max_ratio,0.4
mkdir -p /tmp/gs && gunzip -c .devdata/prebuilt/gsplat_cuda.so.gz > /tmp/gs/gsplat_cuda.so
export GSPLAT_PREBUILT_SO=/tmp/gs/gsplat_cuda.so
stamp "GPU 0: bonsai | GPU 1: GPU tests, issue 12, lego"
gpu0 & gpu1 & wait
stamp done
touch $DONE
