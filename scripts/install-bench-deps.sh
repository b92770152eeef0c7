#!/usr/bin/env bash
# Installs what the load benchmarks need: Debian's nginx (the static-file baseline) and wrk (the
# load generator). Idempotent. The tests do not need these; CI does not run this script.
set -euo pipefail
need=()
command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v taskset >/dev/null 2>&1 || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
