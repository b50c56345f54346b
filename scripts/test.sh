#!/usr/bin/env bash
# Install what the tests need into .venv, compile the CUDA extensions when nvcc is there
# (BUILD_CUDA=0 skips that), then run the test suite (GPU tests skip without a GPU).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
if [ "${BUILD_CUDA:-1}" = "1" ] && ! python -c "import diff_gaussian_rasterization._C, simple_knn._C" 2>/dev/null; then
  bash scripts/build_extensions.sh
fi
# tests/test_viewer_browser.py needs Chromium (headless, software WebGL): install the Debian package when it is
# missing and we can (root with apt-get; INSTALL_CHROMIUM=0 skips); otherwise that test skips and says why
if [ "${INSTALL_CHROMIUM:-1}" = "1" ] && [ -z "${CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1 \
    && ! command -v chromium-browser >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  echo "Installing chromium for the browser test (apt-get, about 125 MB download, 400 MB installed)..."
  if ! (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium) \
      >/tmp/chromium-install.log 2>&1; then
    echo "Could not install chromium (see /tmp/chromium-install.log): the browser test will skip"
  fi
fi
# one pytest worker per core (pytest-xdist), a test file per worker at a time (its module fixtures made once):
# 6.3 against 10.2 minutes on CI's 2 cores; PYTEST_WORKERS=0 runs in this process (e.g. for --pdb)
python -m pytest tests -q -n "${PYTEST_WORKERS:-auto}" --dist loadfile "$@"
