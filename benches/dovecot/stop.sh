#!/usr/bin/env bash
# Stops the Dovecot that start.sh DIR started (SIGTERM to its master, which
# stops its children; SIGKILL after 10 s).
set -euo pipefail
if [[ $# -ne 1 ]]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
PIDFILE=$1/run/master.pid
if [[ ! -s $PIDFILE ]]; then
    echo "no dovecot pid file at $PIDFILE; nothing to stop" >&2
    exit 0
fi
PID=$(cat "$PIDFILE")
if ! kill -0 "$PID" 2>/dev/null; then
    echo "dovecot pid $PID is not running" >&2
    rm -f "$PIDFILE"
    exit 0
fi
kill -TERM "$PID"
for ((i = 0; i < 100; i++)); do
    kill -0 "$PID" 2>/dev/null || { echo "dovecot pid $PID stopped" >&2; rm -f "$PIDFILE"; exit 0; }
    sleep 0.1
done
echo "dovecot pid $PID ignored SIGTERM for 10 s; sending SIGKILL" >&2
kill -KILL "$PID" 2>/dev/null || true
rm -f "$PIDFILE"
