#!/usr/bin/env bash
# A 2-GPU session (device kind nvidia-h200-x2) for the student's recipe (issue 13) and the pipeline's wall time
# (issue 12), run detached with setsid so it can outlast one device command (.devdata/x2_call.sh polls it:
# SCRIPT=scripts/gpu_x2_student.sh bash .devdata/x2_call.sh 570, then bash .devdata/x2_call.sh 575); results
# under /tmp/res. Needs, in the git-ignored .devdata/: bonsai and lego (from ../shared/data), the gsplat peer
# script and gsplat's prebuilt extension (prebuilt/gsplat_cuda.so.gz); plyfile's and gsplat's wheels in .whl/.
# In order of priority (the budget may end the session first):
#   both GPUs: the full-schedule bonsai pipelines (--steps_scale 1, one view per step), seeds 0 and 1;
#   GPU 0: the default recipe's bonsai pipelines on four new seeds (4-7: a replicate of the 2026-11-30 study,
#          whose seeds 0-3 chose it), then G_std and the default student timed alone, the student twice, then
#          students with novel views from the start, and growing to 0.6x G_std (the default's parts);
#   GPU 1: lego on seeds 4-7, lego students that keep the whole 12% budget (--prune_importance_fraction 0: the
#          cap alone sets the second prune's count), then the issue-12 pipeline step alone (gsplat's 7,500 steps
#          and the four-model pipeline with the default recipe).
source "$(dirname "$0")/gpu_session_env.sh"
build_extensions
mkdir -p /tmp/gs && gunzip -c .devdata/prebuilt/gsplat_cuda.so.gz > /tmp/gs/gsplat_cuda.so
export GSPLAT_PREBUILT_SO=/tmp/gs/gsplat_cuda.so

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

base() {  # scene gpu [train.py flags]: the default pipelines of seeds 4-7
  local scene=$1 gpu=$2; shift 2
  python3 scripts/seed_study.py -s data/$scene -o $S/${scene}_base --seeds 4 5 6 7 --parallel 4 --gpus $gpu \
    --label ${scene}_base -- $RECIPE "$@" > $R/logs/${scene}_base.txt 2>&1
  stamp "$scene default pipelines, seeds 4-7"; tail -14 $R/logs/${scene}_base.txt >> $R/summary.txt; collect
}

variant() {  # scene name gpu [train.py flags]: students on each seed's teachers, compared seed by seed
  local scene=$1 name=$2 gpu=$3; shift 3
  local extra=""; [ $scene = lego ] && extra=-w
  python3 scripts/seed_study.py -s data/$scene -o $S/${scene}_$name --students_only $S/${scene}_base \
    --seeds 4 5 6 7 --parallel 4 --gpus $gpu --label ${scene}_$name -- $RECIPE $extra "$@" > $R/logs/${scene}_$name.txt 2>&1
  { stamp "$scene $name: $*"; tail -12 $R/logs/${scene}_$name.txt | head -9
    python3 scripts/seed_study.py --compare $S/${scene}_base $S/${scene}_$name; } >> $R/summary.txt 2>&1
  rm -rf $S/${scene}_$name/seed_*/point_cloud_[012]; collect  # (hard links to the baseline's teachers)
}

timed() {  # alone on GPU 0 (seed 4's teachers): G_std, then the default student twice (the stage times' noise)
  cp -al $S/bonsai_base/seed_4 /tmp/timed && rm -rf /tmp/timed/point_cloud_[23]
  CUDA_VISIBLE_DEVICES=0 python3 train.py -s data/bonsai -m /tmp/timed --num_models 4 --start 2 --seed 4 $RECIPE \
    > $R/logs/timed.txt 2>&1
  cp -al /tmp/timed /tmp/timed_again && rm -rf /tmp/timed_again/point_cloud_3
  CUDA_VISIBLE_DEVICES=0 python3 train.py -s data/bonsai -m /tmp/timed_again --num_models 4 --start 3 --seed 4 \
    $RECIPE >> $R/logs/timed.txt 2>&1
  { stamp "timed alone on GPU 0 (seed 4): stage seconds"
    python3 - <<'PY'
import json
for name in ("/tmp/timed", "/tmp/timed_again"):
    try:
        m = json.load(open(name + "/distill.json"))["models"]
    except (OSError, ValueError) as exc:
        print(name, "missing", exc); continue
    for k in ("G_std", "student") if name == "/tmp/timed" else ("student",):
        r = m[k]
        print(f"{name:<16} {k:<8} stage {r.get('stage_seconds')} s  train {r.get('train_seconds')} s  "
              f"iterations {r.get('iterations')}  PSNR {r.get('psnr')}  Gaussians {r.get('gaussians')}")
PY
  } >> $R/summary.txt 2>&1
  collect
}

stamp "full-schedule bonsai pipelines: seed 0 on GPU 0, seed 1 on GPU 1"
python3 scripts/seed_study.py -s data/bonsai -o $S/bonsai_full --seeds 0 1 --parallel 2 --gpus 0 1 --label bonsai_full \
  -- --eval --data_device cuda --quiet --views_per_step 1 --test_iterations 7000 30000 > $R/logs/bonsai_full.txt 2>&1
tail -14 $R/logs/bonsai_full.txt >> $R/summary.txt; collect

gpu0() {
  base bonsai 0
  timed
  # the default's components one at a time (on the CPU demo scene novel views from the start were +0.7 dB)
  variant bonsai nvs0 0 --novel_view_start 0
  variant bonsai nmr06 0 --num_max_ratio 0.6
}

gpu1() {
  base lego 1 -w
  variant lego fill 1 --prune_importance_fraction 0
  ( export CUDA_VISIBLE_DEVICES=1 LOG=$R/logs/i12 MODELS=/tmp/models1 PREBUILT=/tmp/prebuilt
    bash scripts/gpu_bonsai.sh pipeline > $R/logs/i12_bonsai.txt 2>&1 )
  { stamp "issue 12 pipeline (GPU 1 alone)"; grep -A2 "^| four-model" $R/logs/i12_bonsai.txt; } >> $R/summary.txt 2>&1
}

stamp "GPU 0: bonsai seeds 4-7, timed | GPU 1: lego seeds 4-7, lego fill, issue-12 pipeline"
gpu0 & gpu1 & wait
stamp done
touch $DONE
