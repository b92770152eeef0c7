#!/usr/bin/env bash
# Installs what the tests need beyond the Rust toolchain. Idempotent; safe to run on a fresh
# machine and on one that already has everything.
set -euo pipefail

# Nothing yet: the snapshot and builder tests need only cargo. The server, event and
# distribution issues add their Debian packages (nginx, wrk, nats-server, opentracker) here.
rustup component add rustfmt clippy >/dev/null 2>&1 || true

# Distribution (distribute/): Debian's opentracker is the tracker of the swarm tests, aria2 the
# unrelated BitTorrent client of the interop test, iproute2 the network namespaces of the fleet
# benchmark; librqbit's HTTP client links OpenSSL.
if ! command -v opentracker >/dev/null 2>&1 || ! command -v aria2c >/dev/null 2>&1 \
    || ! command -v ip >/dev/null 2>&1 || ! dpkg -s libssl-dev >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y --no-install-recommends opentracker aria2 iproute2 libssl-dev pkg-config
fi
