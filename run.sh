#!/usr/bin/env bash
# Install, then run the default pipeline end to end (`dvc repro`).
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
export DVC_NO_ANALYTICS=1 PATH="$PWD/.venv/bin:$PATH"
dvc repro "$@"
dvc metrics show
echo "Samples: data/samples/grid.png, model card: data/samples/MODEL_CARD.md"
