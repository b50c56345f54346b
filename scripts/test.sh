#!/usr/bin/env bash
# Install what the tests need into .venv, then run the test suite (GPU tests skip without CUDA).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
python -m pytest tests -q "$@"
