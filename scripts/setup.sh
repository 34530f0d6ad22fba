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
SHIM=distar/core/compat.py  # the torchvision operator fix, copied into the venv below
stamp=.venv/.distar-setup-$(cat pyproject.toml constraints/cpu.txt scripts/setup.sh "$SHIM" | sha256sum | cut -c1-16)
if [ -f "$stamp" ]; then exit 0; fi
.venv/bin/pip install -q --upgrade "pip>=24" "setuptools<81" wheel
# torch first, exact version: a range would pull the CUDA build.
.venv/bin/pip install -q -c constraints/cpu.txt torch==2.13.0
.venv/bin/pip install -q -c constraints/cpu.txt -e ".[dev,reference-deps]"
# Reference scorers used by the parity tests: their own pins clash (pytest, protobuf, timm).
.venv/bin/pip install -q -c constraints/cpu.txt --no-deps hpsv2==1.2.0 image-reward==1.5
# CPU torch under the registry's CUDA torchvision: every program that imports torchvision
# (open_clip, diffusers, `accelerate launch`) needs two operator schemas declared first, not only
# distar. A one-line .pth runs the fix's lazy hook at interpreter start (it imports nothing
# until torchvision is imported); installed only when this venv's builds need it.
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
rm -f "$site/distar_torchvision_shim.py" "$site/distar_torchvision_shim.pth"
if .venv/bin/python -I "$SHIM"; then
  cp "$SHIM" "$site/distar_torchvision_shim.py"
  echo 'import importlib.util as _u; _u.find_spec("distar_torchvision_shim") and __import__("distar_torchvision_shim").install_torchvision_hook()' \
    > "$site/distar_torchvision_shim.pth"
fi
touch "$stamp"
