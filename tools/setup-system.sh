#!/usr/bin/env bash
# System packages for the tracking-service tests (Debian): PostgreSQL server binaries (the tests
# start a private cluster with initdb/pg_ctl) and Chromium (headless, for the web page test).
# Idempotent and quick when everything is there: apt-get update runs only when something is missing.
#   tools/setup-system.sh            install what is missing (needs root, or sudo)
#   tools/setup-system.sh --check    only say what is missing (exit 1 if anything is)
set -euo pipefail

missing=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
fc-list 2>/dev/null | grep -q . || missing+=(fonts-dejavu-core)

if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi
if [[ "${1:-}" == "--check" ]]; then
  echo "setup-system: missing: ${missing[*]}" >&2
  exit 1
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null 2>&1 || { echo "setup-system: need root (or sudo) to install ${missing[*]}" >&2; exit 1; }
  sudo=(sudo -n)
fi

echo "setup-system: installing ${missing[*]} ..." >&2
start=$SECONDS
if [[ " ${missing[*]} " == *" postgresql "* && ! -e /etc/postgresql-common/createcluster.conf ]]; then
  # the tests run their own throwaway clusters: no system-wide 'main' cluster on port 5432
  "${sudo[@]}" mkdir -p /etc/postgresql-common
  echo "create_main_cluster = false" | "${sudo[@]}" tee /etc/postgresql-common/createcluster.conf >/dev/null
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup-system: installed ${missing[*]} in $((SECONDS - start)) s" >&2
