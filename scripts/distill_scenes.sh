#!/usr/bin/env bash
# Shared body of the run_*.sh wrappers: for each scene, train the 3 teachers + student, render the
# student's test views, compute metrics. Expects DATA_ROOT, OUT_ROOT, SCENES (array), FLAGS (array);
# extra arguments go to train.py.
#
# Several GPUs, two ways (the wrapper's own options come first):
# `--gpus N` (or NGPUS=N) trains each scene with `torchrun --standalone --nproc_per_node N`: the teachers spread
# over the GPUs, the student data-parallel over all of them; scenes one after another, each on every GPU. The same
# launch spans several machines (TORCHRUN below), and each scene's results come as soon as it ends.
# `--gpus N --one_scene_per_gpu` (or also SCENE_PER_GPU=1) runs N scenes at once instead, each in one process on
# its own GPU (GPU g takes scenes g, g+N, ...; its output goes to OUT_ROOT/<scene>.log): with one view per step,
# where torchrun can only run the teachers side by side (about 1.3x faster on two GPUs), a study of several scenes
# is about N times faster this way. A failed scene does not stop the others; the script names it and exits 1.
# Several machines: TORCHRUN="torchrun --nnodes=2 --nproc_per_node=4 --rdzv_backend=c10d
# --rdzv_endpoint=HOST:PORT" on every machine (-m on a shared file system), and SKIP_EVAL=1 on all but one, so
# only one machine renders and measures each scene.
# DRY_RUN=1 prints the commands instead of running them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
NGPUS="${NGPUS:-1}"
PER_GPU="${SCENE_PER_GPU:-0}"
while [ $# -gt 0 ]; do
  case "$1" in
    --gpus) NGPUS="${2:-}"; shift 2 || shift $# ;;
    --gpus=*) NGPUS="${1#--gpus=}"; shift ;;
    --one_scene_per_gpu) PER_GPU=1; shift ;;
    *) break ;;
  esac
done
if ! [[ "$NGPUS" =~ ^[1-9][0-9]*$ ]]; then
  echo "error: --gpus/NGPUS '$NGPUS' must be a whole number of GPUs, at least 1" >&2
  exit 2
fi
if [ "$PER_GPU" = 1 ] && [ -n "${TORCHRUN:-}" ]; then
  echo "error: --one_scene_per_gpu runs one process per GPU and TORCHRUN a torchrun launch: use one of the two" >&2
  exit 2
fi
for s in "${SCENES[@]}"; do  # all of them before any trains
  if [ ! -d "$DATA_ROOT/$s" ]; then
    echo "error: scene folder $DATA_ROOT/$s does not exist (set DATA_ROOT at the top of the script)" >&2
    exit 2
  fi
done
if [ "$NGPUS" -gt 1 ] && [ -z "${TORCHRUN:-}" ] && [ "${DRY_RUN:-0}" != 1 ]; then
  HAVE="$(python -c 'import torch; print(torch.cuda.device_count())')"
  if [ "$NGPUS" -gt "$HAVE" ]; then
    echo "error: --gpus/NGPUS $NGPUS is more than the $HAVE GPU(s) of this machine: pass at most $HAVE" >&2
    exit 2
  fi
fi
# (the -- ends torchrun's options: without it torchrun refuses train.py's --start as an abbreviation of its own
# --start-method)
if [ -n "${TORCHRUN:-}" ]; then
  read -r -a TRAIN_LAUNCH <<< "$TORCHRUN"
  TRAIN_LAUNCH+=(--)
elif [ "$NGPUS" -gt 1 ] && [ "$PER_GPU" != 1 ]; then
  TRAIN_LAUNCH=(torchrun --standalone --nproc_per_node "$NGPUS" --)
else
  TRAIN_LAUNCH=(python)
fi
run() {
  if [ "${DRY_RUN:-0}" = 1 ]; then
    printf '%q ' "$@"
    echo
  else
    "$@"
  fi
}
scene() {  # name: train, render and metrics of one scene, launched by TRAIN_LAUNCH and EVAL_LAUNCH; stops at the
  # first failure with its status (explicitly: set -e does not apply where a caller tests the status)
  run "${TRAIN_LAUNCH[@]}" train.py -s "$DATA_ROOT/$1" -m "$OUT_ROOT/$1" --eval --num_models 4 "${FLAGS[@]}" \
    "${EXTRA[@]}" || return
  if [ "${SKIP_EVAL:-0}" != 1 ]; then
    run "${EVAL_LAUNCH[@]}" render.py -m "$OUT_ROOT/$1" --skip_train --itrain 3 || return
    run "${EVAL_LAUNCH[@]}" metrics.py -m "$OUT_ROOT/$1" || return
  fi
}
EXTRA=("$@")
if [ "$PER_GPU" != 1 ]; then
  EVAL_LAUNCH=(python)  # (render and metrics: one process)
  for s in "${SCENES[@]}"; do
    scene "$s"
  done
  exit 0
fi
gpu_lane() {  # GPU index: its scenes one after another, each alone on that GPU; fails if any of them failed
  local g=$1 i s failed=0
  TRAIN_LAUNCH=(env CUDA_VISIBLE_DEVICES="$g" python)
  EVAL_LAUNCH=("${TRAIN_LAUNCH[@]}")
  for ((i = g; i < ${#SCENES[@]}; i += NGPUS)); do
    s=${SCENES[$i]}
    if [ "${DRY_RUN:-0}" = 1 ]; then
      scene "$s"
    elif scene "$s" > "$OUT_ROOT/$s.log" 2>&1; then
      echo "GPU $g: $s done (log $OUT_ROOT/$s.log)"
    else
      echo "error: scene $s failed on GPU $g: see $OUT_ROOT/$s.log" >&2
      failed=1
    fi
  done
  return $failed
}
if [ "${DRY_RUN:-0}" = 1 ]; then  # (in order, so the printed commands do not interleave)
  for ((g = 0; g < NGPUS; g++)); do gpu_lane "$g"; done
  exit 0
fi
mkdir -p "$OUT_ROOT"
pids=()
for ((g = 0; g < NGPUS && g < ${#SCENES[@]}; g++)); do
  gpu_lane "$g" & pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done
exit $status
