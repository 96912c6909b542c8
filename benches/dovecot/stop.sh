#!/usr/bin/env bash
# Stops the Dovecot that start.sh DIR started (SIGTERM to its master, which
# stops its children; SIGKILL after 10 s).
set -euo pipefail
if [[ $# -ne 1 ]]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
# shellcheck source=benches/private_server.sh
source "$(dirname "${BASH_SOURCE[0]}")/../private_server.sh"
stop_master dovecot "$1/run/master.pid"
