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

# A/B analysis: its statistics are checked against scipy and statsmodels (PyPI), and its HTML
# report is opened in Debian's headless chromium.
if ! python3 -c 'import scipy, statsmodels' >/dev/null 2>&1; then
    # PyPI first; a system Python that refuses pip (PEP 668) gets Debian's packages instead.
    python3 -m pip install --quiet 'scipy==1.14.1' 'statsmodels==0.14.4' ||
        { apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-scipy python3-statsmodels; }
fi
if ! command -v chromium >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium
fi

# The event pipeline's replication tests run a real 3-node NATS JetStream cluster on loopback.
if ! command -v nats-server >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y --no-install-recommends nats-server
fi
