#!/usr/bin/env bash
# Distilled-3DGS on Tanks and Temples.
# Usage: bash scripts/run_tnt.sh [--gpus N [--one_scene_per_gpu]] [extra train.py flags]
# (several GPUs or machines, DRY_RUN=1: see scripts/distill_scenes.sh)
DATA_ROOT="${DATA_ROOT:-data/tandt}"
OUT_ROOT="${OUT_ROOT:-output/tandt}"
SCENES=(train truck)
FLAGS=(--imp_metric outdoor --firstPrune --factor 0.5)
source "$(dirname "$0")/distill_scenes.sh"
