#!/usr/bin/env bash
# The 2-GPU session (device kind nvidia-h200-x2) behind the 2026-11-29 (second session) tables in
# docs/BENCHMARKS.md, run detached with setsid so it can outlast one device command; results under /tmp/res.
# Needs, in the git-ignored .devdata/: bonsai and lego (from ../shared/data); plyfile's wheel in .whl/.
# Phases: build (the built extensions are kept as /tmp/prebuilt.tgz); A: the bonsai pipeline sequential on
# GPU 0 (timed, seed 0; GPU 1 meanwhile runs the sync test and the GPU resume check), then under torchrun on
# both GPUs (timed, alone); B: the baseline pipelines of bonsai seeds 1-3 and lego seeds 0-3 (quality only:
# several runs share each GPU); C: students with --novel_views on each seed's teachers, compared seed by seed.
source "$(dirname "$0")/gpu_session_env.sh"
build_extensions
stamp "phase A: bonsai sequential on GPU 0 (timed); GPU 1: sync test + resume check"
( export CUDA_VISIBLE_DEVICES=1
  python3 -m pytest -q -rfE -p no:cacheprovider tests/test_step_syncs.py > $R/logs/syncs.txt 2>&1
  python3 scripts/gpu_resume_check.py -s data/bonsai -o /tmp/resume > $R/logs/resume.txt 2>&1 ) &
python3 scripts/seed_study.py -s data/bonsai -o $S/bonsai_sfm --seeds 0 --gpus 0 --label bonsai_sfm -- $RECIPE > $R/logs/seq.txt 2>&1
wait
tail -4 $R/logs/syncs.txt >> $R/summary.txt; tail -6 $R/logs/resume.txt >> $R/summary.txt
stamp "phase A: bonsai under torchrun on 2 GPUs (timed)"
t0=$(date +%s.%N)
python3 -m torch.distributed.run --standalone --nproc_per_node 2 train.py -s data/bonsai -m /tmp/tr2 --num_models 4 --seed 0 $RECIPE > $R/logs/torchrun2.txt 2>&1
rc=$?; t1=$(date +%s.%N)
echo "torchrun2 wall_s $(python3 -c "print(round($t1 - $t0, 1))") rc $rc" | tee -a $R/summary.txt
tail -8 $R/logs/torchrun2.txt >> $R/summary.txt
stamp "phase B: baseline pipelines, bonsai seeds 1-3 and lego seeds 0-3 (shared GPUs)"
python3 scripts/seed_study.py -s data/bonsai -o $S/bonsai_sfm --seeds 0 1 2 3 --resume --parallel 3 --gpus 0 1 \
  --label bonsai_sfm -- $RECIPE > $R/logs/bonsai_sfm.txt 2>&1 &
python3 scripts/seed_study.py -s data/lego -o $S/lego_sfm --seeds 0 1 2 3 --parallel 4 --gpus 1 0 \
  --label lego_sfm -- $RECIPE -w > $R/logs/lego_sfm.txt 2>&1
wait
tail -14 $R/logs/bonsai_sfm.txt >> $R/summary.txt; tail -14 $R/logs/lego_sfm.txt >> $R/summary.txt
stamp "phase C: students with ${NOVEL:---novel_views 2} on the same teachers (paired by seed)"
python3 scripts/seed_study.py -s data/bonsai -o $S/bonsai_novel --students_only $S/bonsai_sfm --seeds 0 1 2 3 \
  --parallel 4 --gpus 0 1 --label bonsai_novel -- $RECIPE ${NOVEL:---novel_views 2} > $R/logs/bonsai_novel.txt 2>&1 &
python3 scripts/seed_study.py -s data/lego -o $S/lego_novel --students_only $S/lego_sfm --seeds 0 1 2 3 \
  --parallel 4 --gpus 1 0 --label lego_novel -- $RECIPE -w ${NOVEL:---novel_views 2} > $R/logs/lego_novel.txt 2>&1
wait
for scene in bonsai lego; do
  tail -12 $R/logs/${scene}_novel.txt >> $R/summary.txt
  python3 scripts/seed_study.py --compare $S/${scene}_sfm $S/${scene}_novel | tee -a $R/summary.txt
done
python3 - <<'PY'
import glob, json
out = {}
for f in sorted(glob.glob("/tmp/study/*/seed_*/distill.json")) + ["/tmp/tr2/distill.json"]:
    try:
        out[f] = json.load(open(f))
    except OSError:
        pass
json.dump(out, open("/tmp/res/studies.json", "w"), indent=1)
PY
stamp done
touch $DONE
