#!/usr/bin/env bash
# Distilled-3DGS on the Mip-NeRF 360 indoor scenes.
# Usage: bash scripts/run_mip360_in.sh [--gpus N [--one_scene_per_gpu]] [extra train.py flags]
# (several GPUs or machines, DRY_RUN=1: see scripts/distill_scenes.sh)
DATA_ROOT="${DATA_ROOT:-data/mipnerf360}"
OUT_ROOT="${OUT_ROOT:-output/mip360}"
SCENES=(bonsai counter kitchen room)
FLAGS=(-r 2 --imp_metric indoor)
source "$(dirname "$0")/distill_scenes.sh"
