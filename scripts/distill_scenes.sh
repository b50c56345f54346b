#!/usr/bin/env bash
# Shared body of the run_*.sh wrappers: for each scene, train the 3 teachers + student, render the
# student's test views, compute metrics. Expects DATA_ROOT, OUT_ROOT, SCENES (array), FLAGS (array);
# extra arguments go to train.py.
#
# Several GPUs: `--gpus N` (first argument) or NGPUS=N trains each scene with
# `torchrun --standalone --nproc_per_node N`: the teachers spread over the GPUs, the student data-parallel over
# all of them. Scenes still run one after another, each on every GPU, rather than one scene per GPU at once:
# the same launch spans several machines (TORCHRUN below), each scene's outputs are the one-GPU run's, and
# its results (renders, metrics) come one scene at a time instead of all at the end.
# Several machines: TORCHRUN="torchrun --nnodes=2 --nproc_per_node=4 --rdzv_backend=c10d
# --rdzv_endpoint=HOST:PORT" on every machine (-m on a shared file system), and SKIP_EVAL=1 on all but one, so
# only one machine renders and measures each scene.
# DRY_RUN=1 prints the commands instead of running them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
NGPUS="${NGPUS:-1}"
if [ "${1:-}" = "--gpus" ]; then
  NGPUS="${2:-}"
  shift 2 || shift $#
elif [[ "${1:-}" == --gpus=* ]]; then
  NGPUS="${1#--gpus=}"
  shift
fi
if ! [[ "$NGPUS" =~ ^[1-9][0-9]*$ ]]; then
  echo "error: --gpus/NGPUS '$NGPUS' must be a whole number of GPUs, at least 1" >&2
  exit 2
fi
# (the -- ends torchrun's options: without it torchrun refuses train.py's --start as an abbreviation of its own
# --start-method)
if [ -n "${TORCHRUN:-}" ]; then
  read -r -a LAUNCH <<< "$TORCHRUN"
  LAUNCH+=(--)
elif [ "$NGPUS" -gt 1 ]; then
  LAUNCH=(torchrun --standalone --nproc_per_node "$NGPUS" --)
  if [ "${DRY_RUN:-0}" != 1 ]; then
    HAVE="$(python -c 'import torch; print(torch.cuda.device_count())')"
    if [ "$NGPUS" -gt "$HAVE" ]; then
      echo "error: --gpus/NGPUS $NGPUS is more than the $HAVE GPU(s) of this machine: pass at most $HAVE" >&2
      exit 2
    fi
  fi
else
  LAUNCH=(python)
fi
run() {
  if [ "${DRY_RUN:-0}" = 1 ]; then
    printf '%q ' "$@"
    echo
  else
    "$@"
  fi
}
for s in "${SCENES[@]}"; do
  if [ ! -d "$DATA_ROOT/$s" ]; then
    echo "error: scene folder $DATA_ROOT/$s does not exist (set DATA_ROOT at the top of the script)" >&2
    exit 2
  fi
  run "${LAUNCH[@]}" train.py -s "$DATA_ROOT/$s" -m "$OUT_ROOT/$s" --eval --num_models 4 "${FLAGS[@]}" "$@"
  if [ "${SKIP_EVAL:-0}" != 1 ]; then
    run python render.py -m "$OUT_ROOT/$s" --skip_train --itrain 3
    run python metrics.py -m "$OUT_ROOT/$s"
  fi
done
