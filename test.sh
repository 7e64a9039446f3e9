#!/usr/bin/env bash
# Install (project, test tools, Debian packages), then run every test.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh --test
export DVC_NO_ANALYTICS=1 PATH="$PWD/.venv/bin:$PATH"
.venv/bin/python -m pytest "$@"
