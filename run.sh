#!/usr/bin/env bash
# Install, then run the default pipeline end to end as a Prefect flow (one task per
# DVC stage). With no PREFECT_API_URL set it runs on Prefect's ephemeral API;
# with a server (scripts/server.sh) it reports there. Arguments are params
# overrides, e.g. ./run.sh train.epochs=3
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
export DVC_NO_ANALYTICS=1 PATH="$PWD/.venv/bin:$PATH"
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=${PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS:-120}
export PREFECT_SERVER_ANALYTICS_ENABLED=${PREFECT_SERVER_ANALYTICS_ENABLED:-false}   # no telemetry (an ERROR offline)
# Ends with a short summary: the main metric beside its floor and the champion's, the decision, where the files are.
# All metrics: data/metrics/metrics.json, or `dvc metrics show`. Then how to use the project's commands in a shell
# (they live in .venv/bin); the exit status is the flow's.
status=0
python -m flows.pipeline "$@" || status=$?
echo "run.sh: to use this project's commands (python -m gan, dvc, prefect, python -m flows.sweep) in your shell," \
     "enter its environment first: source .venv/bin/activate (or prefix them with .venv/bin/)" >&2
exit "$status"
