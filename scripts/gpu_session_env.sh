# Sourced by the detached GPU session drivers (scripts/gpu_x2_*.sh, gpu_x4_session.sh): strict mode, NVLink
# multicast off (the device machines' rule), results folder $R with stamp(), study folder $S, the carried wheels
# installed into /tmp/site (the GPU machines have no package registry), build_extensions, and RECIPE: the
# run-length and evaluation flags of the seed studies (the student's recipe: train.py's defaults; the flags of
# earlier sessions' studies are written out in docs/BENCHMARKS.md). SCENES (default bonsai lego) are linked as
# data/<scene> from .devdata/. DONE names the file that tells the poll the
# session ended (scripts/gpu_poll.sh waits for /tmp/x2.done).
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/peer_schedule.sh"  # PEER_FLAGS
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
R=/tmp/res; S=/tmp/study; mkdir -p $R/logs $S
DONE=${DONE:-/tmp/x2.done}
# (to the summary only: inside "{ ...; } >> summary" a copy to stdout was written twice)
stamp() { echo "[$(date +%T)] $*" >> $R/summary.txt; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site
nvidia-smi --query-gpu=index,name --format=csv,noheader | tee -a $R/summary.txt
mkdir -p data && for s in ${SCENES:-bonsai lego}; do ln -sfn ../.devdata/$s data/$s; done  # the carried scenes
RECIPE="--eval --data_device cuda --quiet --views_per_step 1 --steps_scale 0.25 --test_iterations 30000"

build_extensions() {  # our CUDA extensions into /tmp/prebuilt (a carried .devdata/prebuilt/prebuilt.tgz of the same
  # sources is used instead, see scripts/gpu_bonsai.sh); a fresh build is kept as /tmp/prebuilt.tgz for the poll to
  # bring back (not a carried one reused: 8 MB each poll delays the reply, and the machine goes back 30 s after a call)
  stamp build
  if [ -f .devdata/prebuilt/prebuilt.tgz ]; then tar xzf .devdata/prebuilt/prebuilt.tgz -C /tmp; fi
  PREBUILT=/tmp/prebuilt SAVE_BUILD=/tmp/prebuilt_new LOG=$R/logs bash scripts/gpu_bonsai.sh > $R/logs/build.txt 2>&1 \
    || { stamp "BUILD FAILED"; tail -40 $R/logs/build.txt >> $R/summary.txt; touch $DONE; exit 1; }
  if [ -d /tmp/prebuilt_new ]; then
    rm -rf /tmp/prebuilt && mv /tmp/prebuilt_new /tmp/prebuilt && tar czf /tmp/prebuilt.tgz -C /tmp prebuilt
  fi
  export PYTHONPATH=/tmp/prebuilt:/tmp/site
}
