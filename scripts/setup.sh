#!/usr/bin/env bash
# Create .venv and install the project (torch pinned to the build on this disk).
# Where apt-get is usable, also install the Debian packages the project uses:
# the offline Fashion-MNIST mirror, and (with --test) Chromium for browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."

extra=""
apt_pkgs=(dataset-fashion-mnist)
if [[ "${1:-}" == "--test" ]]; then
  extra="[test]"
  apt_pkgs+=(chromium)
fi

missing=()
for p in "${apt_pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})) && command -v apt-get >/dev/null 2>&1; then
  if [[ $(id -u) == 0 ]]; then SUDO=""; elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO="skip"; fi
  if [[ "$SUDO" != skip ]]; then
    echo "setup: apt-get install ${missing[*]}"
    # another apt-get or dpkg (e.g. unattended upgrades) may hold the dpkg lock: wait for it up to 10 minutes
    apt=($SUDO apt-get -o DPkg::Lock::Timeout=600 -y -q)
    "${apt[@]}" install "${missing[@]}" >/dev/null 2>&1 \
      || { "${apt[@]}" update >/dev/null 2>&1 && "${apt[@]}" install "${missing[@]}" >/dev/null; } \
      || echo "setup: warning: could not install ${missing[*]} (another apt-get may hold the dpkg lock for more than" \
              "10 minutes, or no package mirror is reachable); the pipeline will try the network mirrors, and the" \
              "tests that need ${missing[*]} will fail or skip saying so"
  else
    echo "setup: note: not root and no sudo; skipping apt-get install ${missing[*]}"
  fi
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
[[ -x .venv/bin/python ]] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".${extra}"
echo "setup: ready ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
