#!/usr/bin/env bash
# Distilled-3DGS on Deep Blending.
# Usage: bash scripts/run_db.sh [--gpus N [--one_scene_per_gpu]] [extra train.py flags]
# (several GPUs or machines, DRY_RUN=1: see scripts/distill_scenes.sh)
DATA_ROOT="${DATA_ROOT:-data/db}"
OUT_ROOT="${OUT_ROOT:-output/db}"
SCENES=(drjohnson playroom)
FLAGS=(--imp_metric indoor --firstPrune --factor 0.5)
source "$(dirname "$0")/distill_scenes.sh"
