#!/usr/bin/env bash
# SORT and THREAD on a big INBOX, cove and Dovecot side by side in one run
# (issue 14): SORT (ARRIVAL), (DATE), (SUBJECT), (FROM) and THREAD
# REFERENCES, cold (first request after delivery) and warm.
#
#   bash benches/imap_sort.sh
#
# Delivers MESSAGES messages (benches/imap_sort.py: threads, varied senders
# and dates) to bench0's INBOX on both over LMTP, then runs
# benches/imap_sort.py against each. Writes the two RESULT lines to
# benches/results/imap-sort-<date>.txt (also printed); the .md beside it is
# written by hand from them.
#
# Knobs (environment):
#   MESSAGES=10000
#   SERVERS="cove dovecot"   which to run (one alone: a rerun)
#   COVE_PORT=26500 DOVECOT_PORT=26600   LMTP ports; IMAP is PORT+1
#   PROFILE=release          the cove build to use (debug: no build, the
#                            existing target/debug/cove)
#   KEEP=1                   keep the temp dir (data, logs) afterwards
#   OUT=PATH                 where to write the results
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
MESSAGES=${MESSAGES:-10000}
COVE_PORT=${COVE_PORT:-26500}
DOVECOT_PORT=${DOVECOT_PORT:-26600}
PROFILE=${PROFILE:-release}
KEEP=${KEEP:-0}
OUT=${OUT:-$ROOT/benches/results/imap-sort-$(date +%F).txt}
COVE=$ROOT/target/$PROFILE/cove
PASS=bench

if [[ $PROFILE == release ]]; then
    bench_log "cargo build --release -p cove"
    (cd "$ROOT" && cargo build --release -p cove)
fi

start_pair covesort "[imap]
listen = [\"127.0.0.1:$((COVE_PORT + 1))\"]" $((COVE_PORT + 1))

: > "$OUT"
for s in ${SERVERS:-cove dovecot}; do
    port=$(port_of $s)
    # Dovecot runs each session in a child of its master: its CPU is not
    # read here (0: not measured).
    pid=0
    [[ $s == cove ]] && pid=$(pid_of cove)
    bench_log "$s: loading $MESSAGES messages, then SORT/THREAD"
    line=$(python3 "$ROOT/benches/imap_sort.py" "127.0.0.1:$((port + 1))" bench0@example.com "$PASS" \
        --pid "$pid" --load "$MESSAGES" --lmtp "127.0.0.1:$port" | grep '^RESULT')
    label=$s
    [[ $s == cove ]] && label="cove ($PROFILE build)"
    echo "$label $line" | tee -a "$OUT"
done
