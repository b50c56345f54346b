# Sourced by the detached GPU session drivers (scripts/gpu_x2_session.sh, gpu_x2_recipe.sh): strict mode, NVLink
# multicast off (the device machines' rule), results folder $R with stamp(), study folder $S, and the carried
# wheels installed into /tmp/site (the GPU machines have no package registry).
set -uo pipefail
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
R=/tmp/res; S=/tmp/study; mkdir -p $R/logs $S
stamp() { echo "[$(date +%T)] $*" | tee -a $R/summary.txt; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/plyfile*.whl
export PYTHONPATH=/tmp/site
