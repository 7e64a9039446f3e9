#!/usr/bin/env bash
# Install (project, test tools, Debian packages), then run every test: in parallel, one pytest-xdist worker per core,
# tests that share an expensive fixture on one worker (tests/conftest.py puts them in an xdist_group); pytest prints
# the 15 slowest at the end (pyproject's addopts). Arguments go to pytest and win: `./test.sh -n 0 tests/x.py`
# runs one file in this process (e.g. for --pdb).
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh --test
export DVC_NO_ANALYTICS=1 PATH="$PWD/.venv/bin:$PATH"
# pytest's temporary folders for this checkout only (pytest keeps the last 3 runs there): another checkout's test run
# on the same machine neither shares nor cleans them up.
export PYTEST_DEBUG_TEMPROOT="${PYTEST_DEBUG_TEMPROOT:-${TMPDIR:-/tmp}/gan-tests-$(id -u)-$(printf %s "$PWD" | md5sum | cut -c1-8)}"
mkdir -p "$PYTEST_DEBUG_TEMPROOT"
exec .venv/bin/python -m pytest -n "${GAN_TEST_WORKERS:-auto}" --dist loadgroup "$@"
