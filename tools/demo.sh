#!/usr/bin/env bash
# The main job: a real BLISS session on a simulated beamline (beacon, Redis, scans), one command.
# Sets up .venv/ on first use (BLISS 2.0.3 stack), then runs `sampletrack demo` with your arguments.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/tools/setup-env.sh" 2.0
exec "$root/.venv/bin/sampletrack" demo "$@"
