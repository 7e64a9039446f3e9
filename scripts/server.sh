#!/usr/bin/env bash
# Start a local Prefect server (API + UI) on 127.0.0.1:4200. Then, in another shell:
#   export PREFECT_API_URL=http://127.0.0.1:4200/api
#   ./run.sh          # runs report to this server; open http://127.0.0.1:4200
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x .venv/bin/prefect ]] || scripts/setup.sh
export PREFECT_SERVER_ANALYTICS_ENABLED=false
echo "Prefect UI: http://127.0.0.1:4200  (API: http://127.0.0.1:4200/api)"
exec .venv/bin/prefect server start --host 127.0.0.1 --port 4200
