#!/usr/bin/env bash
# The whole test suite, on both supported BLISS stacks. Sets up its environments on first use
# (virtual environments from PyPI; PostgreSQL and Chromium from the distribution when missing).
#   stage 0: ruff (lint) and lint-imports (the layers) on the default stack
#   stage 1: every test on BLISS 2.0.3 (.venv/), which runs as published on PyPI
#   stage 2: every test again on BLISS 2.4.0 (.venv-bliss2.4/: its gevent, redis-py, blissdata),
#            the real-BLISS ones through the test bed's compatibility layer
#            (bliss_sampletrack/testbed/compat_bliss24)
# Extra arguments go to both pytest runs (e.g. -k scan, -x).
#
# tools/test.sh --unit [pytest arguments]: stage 0, then only the unit tier (tests/unit: no BLISS
# import, no test bed; well under a minute) on the default stack; sets up .venv only.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

unit=0
if [[ "${1:-}" == "--unit" ]]; then
  unit=1
  shift
fi

if [[ $unit -eq 1 ]]; then
  bash tools/setup-env.sh 2.0 || exit 1
else
  bash tools/setup-system.sh || exit 1   # PostgreSQL and Chromium (Debian packages) when missing
  bash tools/setup-env.sh 2.0 || exit 1
  bash tools/setup-env.sh 2.4 || exit 1
fi

status=0
echo "== stage 0: ruff, and the layers (lint-imports: pyproject's import-linter contracts)"
.venv/bin/ruff check bliss_sampletrack tests benchmarks tools || status=1
.venv/bin/lint-imports --no-cache || status=1
if [[ $unit -eq 1 ]]; then
  echo "== stage 1: the unit tier (tests/unit) on BLISS 2.0.3"
  .venv/bin/python -m pytest tests/unit "$@" || status=1
else
  echo "== stage 1: all tests on BLISS 2.0.3"
  .venv/bin/python -m pytest "$@" || status=1
  echo "== stage 2: all tests on BLISS 2.4.0 (compatibility layer)"
  .venv-bliss2.4/bin/python -m pytest "$@" || status=1
fi
if [[ $status -ne 0 ]]; then
  echo "tools/test.sh: FAILED (see the stages above)" >&2
fi
exit $status
