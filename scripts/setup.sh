#!/usr/bin/env bash
# One-shot, idempotent set-up of .venv on a CPU machine (no GPU, no hub access needed).
# GPU users: see README "Installing on a GPU machine" instead; this script pins CPU torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# Headless Chromium renders the HTML gallery in its screenshot test (Debian package; root only).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
      || echo "setup: could not install chromium; the gallery screenshot test will be skipped"
  else
    echo "setup: chromium not found (sudo apt-get install chromium); gallery screenshot test skipped"
  fi
fi
stamp=.venv/.distar-setup-$(cat pyproject.toml constraints/cpu.txt scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ]; then exit 0; fi
.venv/bin/pip install -q --upgrade "pip>=24" "setuptools<81" wheel
# torch first, exact version: a range would pull the CUDA build.
.venv/bin/pip install -q -c constraints/cpu.txt torch==2.13.0
.venv/bin/pip install -q -c constraints/cpu.txt -e ".[dev,reference-deps]"
# Reference scorers used by the parity tests: their own pins clash (pytest, protobuf, timm).
.venv/bin/pip install -q -c constraints/cpu.txt --no-deps hpsv2==1.2.0 image-reward==1.5
touch "$stamp"
