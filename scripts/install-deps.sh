#!/usr/bin/env bash
# Installs what the tests need beyond the Rust toolchain. Idempotent; safe to run on a fresh
# machine and on one that already has everything.
set -euo pipefail

# Nothing yet: the snapshot and builder tests need only cargo. The server, event and
# distribution issues add their Debian packages (nginx, wrk, nats-server, opentracker) here.
rustup component add rustfmt clippy >/dev/null 2>&1 || true

# The event pipeline's replication tests run a real 3-node NATS JetStream cluster on loopback.
if ! command -v nats-server >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y --no-install-recommends nats-server
fi
