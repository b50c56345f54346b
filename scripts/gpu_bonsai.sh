#!/usr/bin/env bash
# GPU acceptance runs on the bonsai scene (the numbers in the issues' closing notes). Builds the
# extensions once, then runs the named steps in order:
#   tests    GPU tests of the CUDA rasterizer and kNN
#   bench    scripts/benchmark_rasterizer.py (side by side with gsplat when importable)
#   std7k    one vanilla model, 7000 steps, 1 view per step (the gsplat peer's setting); std7k:FLAGS
#            adds the comma-separated train.py flags, e.g. std7k:--seed,1
#   peer7k   std7k as the gsplat peer trains in effect: --no_opacity_reset --position_lr_max_steps -1 (its
#            DefaultStrategy never resets opacities; its trainer run for 7000 steps decays the position LR
#            over those 7000); peer7k:FLAGS adds flags, e.g. peer7k:--backend,gsplat trains it on gsplat's
#            rasterizer (gsplat installed; GSPLAT_PREBUILT_SO=<gsplat_cuda .so> skips its first-use compile)
#   std      the G_std stage alone (one vanilla model with the distill step's schedule), for the
#            pipeline's wall-time ratio
#   distill  the four-model pipeline at --steps_scale 0.25, 1 view per step, with the default student recipe;
#            distill:FLAGS adds flags, e.g. distill:--seed,1 for a replicate
#   pipeline the gsplat peer's 7,500-step run (PEER as for peer) and the distill step, each alone, then the
#            ratio of the pipeline's wall time to the peer's (issue 12's pipeline target)
#   views6   a short four-model pipeline (--steps_scale 0.05) with --views_per_step 6, then with 1
#   student:FLAGS  another student on the teachers of the distill step (run it first), with the
#            comma-separated extra train.py flags, e.g. student:--num_max,1500000
#   profile[:FLAGS]  scripts/profile_step.py on SCENE: 2000 vanilla steps, syncs, launches and the
#            profiler over iterations 1901-1930 (a Chrome trace in LOG)
#   peer     the gsplat peer (PEER, default .devdata/peer_gsplat_train.py; gsplat 1.5.3 installed) and ours
#            on the peer's 7000-step schedule (PEER_FLAGS below), each alone, then one table with the ratios
#   small:SCENE  one vanilla model on another scene folder, 7000 steps (ms/step of a small scene)
# e.g. bash scripts/gpu_bonsai.sh tests bench std7k
# SCENE (default data/bonsai), LOG (text logs) and MODELS (model folders) can be set; PROFILE=1 adds
# --profile (mean ms per step of each training phase in the logs and JSON summaries).
# SAVE_BUILD=<dir> copies the freshly built extensions there (e.g. under $OUT, to bring them back);
# PREBUILT=<dir> uses such a copy instead of compiling, when it was built from the same sources, torch and
# Python (checked with a hash), which saves about two minutes of a fresh GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
SCENE=${SCENE:-data/bonsai}
LOG=${LOG:-output/gpu_logs}
MODELS=${MODELS:-output/gpu_models}
mkdir -p "$LOG" "$MODELS"
export PYTHONUNBUFFERED=1
ext_hash() {  # CUDA sources, the packages' Python files, torch and Python versions: a prebuilt copy is valid only
  # for the same
  { find submodules -type f -not -path '*/build/*' -not -path '*.egg-info/*' \
      \( -path '*/csrc/*' -o -name setup.py -o -name '*.py' \) | sort | xargs cat
    python -c "import sys, torch; print(torch.__version__, torch.version.cuda, sys.version_info[:2])"; } \
    | sha256sum | cut -c1-16
}
if [ -n "${PREBUILT:-}" ] && [ "$(cat "$PREBUILT/SOURCES" 2>/dev/null)" = "$(ext_hash)" ]; then
  export PYTHONPATH="$(cd "$PREBUILT" && pwd)${PYTHONPATH:+:$PYTHONPATH}"
  echo "using the prebuilt extensions in $PREBUILT"
else
  bash scripts/gpu_check.sh --co -q >/dev/null  # build only (collects the tests, runs none)
  if [ -n "${SAVE_BUILD:-}" ]; then
    for m in diff_gaussian_rasterization simple_knn; do
      d=$(cd / && python -c "import $m, os; print(os.path.dirname($m.__file__))")
      mkdir -p "$SAVE_BUILD/$m" && cp "$d"/*.py "$d"/*.so "$SAVE_BUILD/$m/"
    done
    ext_hash > "$SAVE_BUILD/SOURCES"
  fi
fi
train() {  # name, then train.py flags; the log ends with the process's wall time (start-up included)
  local name=$1; shift
  local t0 ms; t0=$(date +%s%N)
  python train.py -s "$SCENE" -m "$MODELS/$name" --eval --views_per_step 1 --data_device cuda --quiet \
    ${PROFILE:+--profile} "$@" 2>&1 \
    | grep --line-buffered -v "^training" | tee "$LOG/$name.txt"
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  echo "process wall time $((ms / 1000)).$(printf %03d $((ms % 1000))) s" | tee -a "$LOG/$name.txt"
  if [ -f "$MODELS/$name/distill.json" ]; then cp "$MODELS/$name/distill.json" "$LOG/$name.json"; fi
}
# the four-model pipeline of the distill and pipeline steps (the default student recipe)
DISTILL_FLAGS=(--num_models 4 --steps_scale 0.25 --imp_metric indoor --test_iterations 30000)
source scripts/peer_schedule.sh  # (after the cd to the repo root above) PEER_FLAGS: the gsplat peer's 7000-step schedule
summary_field() {  # name, key: a field of the model folder's training_log.json
  python -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" \
    "$MODELS/$1/point_cloud/training_log.json" "$2"
}
run_peer() {  # peer script, scene, steps: the gsplat peer alone (seed 0)
  [ -f "$1" ] || { echo "error: peer script $1 not found (copy ../shared/bench/peer_gsplat_train.py there)" >&2; exit 2; }
  python - "$1" "$2" "$3" 0 <<'PY'
import runpy, sys
from gaussian_renderer.gsplat_backend import load_gsplat
load_gsplat()  # with GSPLAT_PREBUILT_SO, gsplat's compiled extension instead of its first-use compile
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
PY
}
extra_flags() {  # the comma-separated train.py flags after "step:" into the array extra (none without ":")
  extra=()
  case "$1" in *:*) IFS=, read -r -a extra <<< "${1#*:}" ;; esac
}
for step in "$@"; do
  extra_flags "$step"
  case "$step" in
    tests) SKIP_BUILD=1 bash scripts/gpu_check.sh 2>&1 | tail -5 | tee "$LOG/gpu_tests.txt" ;;
    bench) python scripts/benchmark_rasterizer.py --scene "$SCENE" 2>&1 | tee "$LOG/benchmark.txt" ;;
    std7k|std7k:*|peer7k|peer7k:*|distill|distill:*)
      kind=${step%%:*}; name=bonsai_$kind
      if [ "$kind" = peer7k ]; then extra=(--no_opacity_reset --position_lr_max_steps -1 ${extra[@]+"${extra[@]}"}); fi
      if [ ${#extra[@]} -gt 0 ]; then k=$(( ${k:-0} + 1 )); name=bonsai_${kind}_$k
        echo "== $name: ${extra[*]}" | tee "$LOG/$name.flags"; fi
      if [ "$kind" != distill ]; then
        train "$name" --overwrite --iterations 7000 --test_iterations 7000 --save_iterations 7000 ${extra[@]+"${extra[@]}"}
      else
        train "$name" --overwrite "${DISTILL_FLAGS[@]}" ${extra[@]+"${extra[@]}"}
      fi ;;
    std) train bonsai_std --overwrite --steps_scale 0.25 --test_iterations 30000 ;;
    views6) for v in 6 1; do  # the same short schedule with 6 and with 1 view per step
              train bonsai_views$v --overwrite --num_models 4 --steps_scale 0.05 --imp_metric indoor --test_iterations 30000 \
                --views_per_step $v; done ;;
    student:*)
      n=$(( ${n:-0} + 1 )); dst="$MODELS/bonsai_student$n"
      [ -d "$MODELS/bonsai_distill/point_cloud_2" ] || { echo "error: $step needs the distill step first" >&2; exit 2; }
      rm -rf "$dst"; mkdir -p "$dst"
      cp -r "$MODELS/bonsai_distill"/point_cloud_{0,1,2} "$MODELS/bonsai_distill/distill.json" "$dst/"
      echo "== student$n: ${extra[*]}" | tee "$LOG/bonsai_student$n.flags"
      train "bonsai_student$n" --num_models 4 --start 3 --steps_scale 0.25 --imp_metric indoor \
        --test_iterations 30000 ${extra[@]+"${extra[@]}"} ;;
    profile|profile:*)
      tag=$(basename "$SCENE")${extra[0]:+_$(( ${pk:-0} + 1 ))}; pk=$(( ${pk:-0} + 1 ))
      python scripts/profile_step.py -s "$SCENE" -m "$MODELS/profile_$tag" --eval --views_per_step 1 \
        --data_device cuda --iterations 2000 --window 1901 30 --trace "$LOG/trace_$tag.json.gz" \
        ${extra[@]+"${extra[@]}"} 2>&1 | tee "$LOG/profile_$tag.txt" ;;
    peer)
      run_peer "${PEER:-.devdata/peer_gsplat_train.py}" "$SCENE" 7000 2>&1 | tee "$LOG/peer.txt"
      train peer_ours "${PEER_FLAGS[@]}" --test_iterations 7000 --save_iterations 7000
      python - "$LOG/peer.txt" "$MODELS/peer_ours/point_cloud/training_log.json" <<'PY'
import json, sys
peer = json.loads([l for l in open(sys.argv[1]) if l.startswith("{")][-1])
ours = json.load(open(sys.argv[2]))
rows = [("PSNR", ours["psnr"], peer["psnr"]), ("SSIM", ours["ssim"], peer["ssim"]),
        ("Gaussians", ours["gaussians"], peer["n_gaussians"]), ("ms/step", ours["ms_per_step"], peer["ms_per_step"]),
        ("peak GiB", ours["peak_memory_gib"], peer["peak_mem_gib"])]
print("| 7000 steps, peer schedule | ours | gsplat peer | ours / peer |\n|---|---|---|---|")
for name, a, b in rows:
    print(f"| {name} | {a:.4g} | {b:.4g} | {a / b:.3f} |")
PY
      ;;
    pipeline)
      t0=$(date +%s%N)
      run_peer "${PEER:-.devdata/peer_gsplat_train.py}" "$SCENE" 7500 > "$LOG/peer7500.txt" 2>&1
      peer_s=$(( ($(date +%s%N) - t0) / 1000000 ))
      train bonsai_pipeline --overwrite "${DISTILL_FLAGS[@]}" > /dev/null
      ours_s=$(grep -o "process wall time [0-9.]*" "$LOG/bonsai_pipeline.txt" | awk '{print $4}')
      python -c "import sys; o, p = float(sys.argv[1]), float(sys.argv[2]) / 1000
print('| four-model pipeline, --steps_scale 0.25 | ours (process) | gsplat peer, 7,500 steps (process) | ratio |')
print('|---|---|---|---|'); print(f'| wall time | {o:.1f} s | {p:.1f} s | {o / p:.2f} |')" "$ours_s" "$peer_s" \
        | tee "$LOG/pipeline.txt" ;;
    small:*)
      scene=${step#small:}; name=small_$(basename "$scene")
      SCENE=$scene train "$name" --iterations 7000 --test_iterations 7000 --save_iterations 7000 ;;
    *) echo "error: unknown step $step (tests, bench, std7k[:FLAGS], peer7k[:FLAGS], std, distill[:FLAGS], pipeline, views6, student:FLAGS, profile[:FLAGS], peer, small:SCENE)" >&2
       exit 2 ;;
  esac
done
