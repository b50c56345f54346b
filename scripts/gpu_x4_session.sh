#!/usr/bin/env bash
# The GPU session behind docs/BENCHMARKS.md's 2026-11-29 tables, on a 4-GPU machine (device kind
# nvidia-h200-x4), run detached with setsid so it can outlast one device command; results under /tmp/res.
# Needs, in the git-ignored .devdata/: bonsai, fern, lego (from ../shared/data), peer_gsplat_train.py (from
# ../shared/bench), prebuilt/gsplat_cuda.so.gz (gsplat 1.5.3's compiled extension); and the wheels of plyfile
# and gsplat 1.5.3 in .whl/. Phases: build + GPU tests; A: four bonsai pipelines, one per GPU (timed);
# B: the gsplat peer and ours on its 7,000-step schedule (GPU 0), the peer's 7,500-step run and the step
# profile (GPU 1), four lego pipelines (GPUs 2, 3); C: fern 7k + profile (GPU 0) and the --student_init std
# students on the teachers of phase A and B (GPUs 1-3).
DONE=/tmp/x4.done SCENES="bonsai fern lego"
source "$(dirname "$0")/gpu_session_env.sh"
mkdir -p /tmp/gs && gunzip -c .devdata/prebuilt/gsplat_cuda.so.gz > /tmp/gs/gsplat_cuda.so
export GSPLAT_PREBUILT_SO=/tmp/gs/gsplat_cuda.so
build_extensions
stamp "GPU tests"
CUDA_VISIBLE_DEVICES=0 python3 -m pytest -q -rfE -p no:cacheprovider tests/test_cuda_rasterizer.py tests/test_optim.py \
  tests/test_fused_loss.py tests/test_simple_knn.py tests/test_gsplat_backend.py > $R/logs/gpu_tests.txt 2>&1
tail -6 $R/logs/gpu_tests.txt >> $R/summary.txt
if ! grep -q " passed" $R/logs/gpu_tests.txt || grep -qE "[0-9]+ failed|error" $R/logs/gpu_tests.txt; then
  stamp "GPU TESTS FAILED: stopping"; grep -E "^(FAILED|ERROR)" $R/logs/gpu_tests.txt | head -20 >> $R/summary.txt; touch $DONE; exit 1; fi
stamp "phase A: bonsai pipelines, one per GPU (timed)"
python3 scripts/seed_study.py -s data/bonsai -o $S/bonsai_sfm --seeds 0 1 2 3 --parallel 4 --gpus 0 1 2 3 --label bonsai_sfm -- $RECIPE > $R/logs/bonsai_sfm.txt 2>&1
tail -22 $R/logs/bonsai_sfm.txt >> $R/summary.txt
stamp "phase B: peer 7000 + ours (GPU0), peer 7500 + profile (GPU1), lego pipelines (GPU2, 3)"
( export CUDA_VISIBLE_DEVICES=0; LOG=$R/logs/peer MODELS=/tmp/models0 PREBUILT=/tmp/prebuilt bash scripts/gpu_bonsai.sh peer > $R/logs/peer_step.txt 2>&1 ) &
( export CUDA_VISIBLE_DEVICES=1
  python3 - .devdata/peer_gsplat_train.py data/bonsai 7500 0 > $R/logs/peer7500.txt 2>&1 <<'PY'
import runpy, sys
from gaussian_renderer.gsplat_backend import load_gsplat
load_gsplat()
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
PY
  LOG=$R/logs/prof MODELS=/tmp/models1 PREBUILT=/tmp/prebuilt bash scripts/gpu_bonsai.sh profile > /dev/null 2>&1 ) &
python3 scripts/seed_study.py -s data/lego -o $S/lego_sfm --seeds 0 1 2 3 --parallel 4 --gpus 2 3 --label lego_sfm -- $RECIPE -w > $R/logs/lego_sfm.txt 2>&1
wait
tail -8 $R/logs/peer_step.txt >> $R/summary.txt; tail -1 $R/logs/peer7500.txt >> $R/summary.txt
tail -4 $R/logs/prof/profile_bonsai.txt >> $R/summary.txt; tail -22 $R/logs/lego_sfm.txt >> $R/summary.txt
stamp "phase C: fern 7k + profile (GPU0), G_std-start students (GPU1-3)"
( export CUDA_VISIBLE_DEVICES=0; SCENE=data/fern LOG=$R/logs/fern MODELS=/tmp/models0 PREBUILT=/tmp/prebuilt bash scripts/gpu_bonsai.sh small:data/fern profile > /dev/null 2>&1 ) &
if python3 train.py --help | grep -q student_init; then
  i=0
  for scene in bonsai lego; do
    extra=""; [ $scene = lego ] && extra="-w"
    for s in 0 1 2 3; do
      g=$(( 1 + i % 3 )); i=$((i + 1))
      python3 scripts/seed_study.py -s data/$scene -o $S/${scene}_std_$s --students_only $S/${scene}_sfm/seed_$s --seeds $s \
        --gpus $g --label ${scene}_std -- $RECIPE $extra --student_init std > $R/logs/${scene}_std_$s.txt 2>&1 &
    done
  done
fi
wait
tail -3 $R/logs/fern/small_fern.txt >> $R/summary.txt; tail -4 $R/logs/fern/profile_fern.txt >> $R/summary.txt
for f in $R/logs/*_std_*.txt; do tail -12 $f >> $R/summary.txt; done
python3 - <<'PY'
import glob, json
out = {f.split("/")[3]: json.load(open(f)) for f in sorted(glob.glob("/tmp/study/*/seed_study.json"))}
for f in sorted(glob.glob("/tmp/study/*/seed_*/distill.json")):
    out.setdefault("distill", {})[f.split("/")[3] + "/" + f.split("/")[4]] = json.load(open(f))
json.dump(out, open("/tmp/res/studies.json", "w"), indent=1)
PY
stamp done
touch $DONE
