#!/usr/bin/env bash
# Installs what the tests need beyond the Rust toolchain. Idempotent; safe to run on a fresh
# machine and on one that already has everything.
set -euo pipefail

# Nothing yet: the snapshot and builder tests need only cargo. The server, event and
# distribution issues add their Debian packages (nginx, wrk, nats-server, opentracker) here.
rustup component add rustfmt clippy >/dev/null 2>&1 || true
