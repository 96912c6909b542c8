#!/usr/bin/env bash
# SORT and THREAD on a big INBOX, cove and Dovecot side by side in one run
# (issue 14): SORT (ARRIVAL), (DATE), (SUBJECT), (FROM) and THREAD
# REFERENCES, cold (first request after delivery) and warm.
#
#   bash benches/imap_sort.sh
#
# Delivers MESSAGES messages (benches/imap_sort.py: threads, varied senders
# and dates) to bench0's INBOX on both over LMTP, then runs
# benches/imap_sort.py against each (server CPU: cove's process, Dovecot's
# imap processes). Writes one RESULT line per server and run to
# benches/results/imap-sort-<date>.txt (also printed); the .md beside it is
# written by hand from them.
#
# Knobs (environment):
#   MESSAGES=10000
#   SERVERS="cove dovecot"   which to run (one alone: a rerun)
#   COVE_PORT=26500 DOVECOT_PORT=26600   LMTP ports; IMAP is PORT+1
#   PROFILE=release          the cove build to use (debug: no build, the
#                            existing target/debug/cove)
#   COVE=PATH                the cove binary (no build); it loads the data
#   KEEP=1                   keep the temp dir (data, logs) afterwards
#   OUT=PATH                 where to write the results
#   COPY=1                   deliver to cove only, then copy its INBOX into
#                            Dovecot's (common.sh copy_to_dovecot: the same
#                            bytes in the same UID order, so equal answers
#                            hash alike; LMTP into Dovecot is the slow part
#                            of a big run; cove is loaded over 4 LMTP
#                            connections)
#   COVES="LABEL:BINARY ..." cove binaries measured in turn on the same data
#                            (e.g. a build from before a change beside one
#                            from after it), cove restarted for each run
#   RUNS=1                   runs per server (medians are taken by hand);
#                            cove's "cold" is the first of each process,
#                            Dovecot's only the first of its first run (its
#                            cache is on disk)
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
PASS=bench
COPY=${COPY:-0}
RUNS=${RUNS:-1}

if [[ -z ${COVE:-} ]]; then
    COVE=$ROOT/target/$PROFILE/cove
    if [[ $PROFILE == release ]]; then
        bench_log "cargo build --release -p cove"
        (cd "$ROOT" && cargo build --release -p cove)
    fi
fi
COVES=${COVES:-"cove:$COVE"}

start_pair covesort "[imap]
listen = [\"127.0.0.1:$((COVE_PORT + 1))\"]" $((COVE_PORT + 1))

: > "$OUT"
load_args=(--load "$MESSAGES")
if [[ $COPY == 1 ]]; then
    bench_log "cove: loading $MESSAGES messages, then copying them to Dovecot"
    python3 "$ROOT/benches/imap_sort.py" "127.0.0.1:$((COVE_PORT + 1))" bench0@example.com "$PASS" \
        --load "$MESSAGES" --lmtp "127.0.0.1:$COVE_PORT" --only-load --conns 4
    copy_to_dovecot
    load_args=()
fi
# measure LABEL SERVER [LOAD-ARGS...]: the server's CPU is cove's process,
# or Dovecot's imap processes (children of its master).
measure() {
    local label=$1 s=$2 port line who
    shift 2
    port=$(port_of "$s")
    who=(--pid "$(pid_of cove)")
    [[ $s == dovecot ]] && who=(--dovecot-master "$(pid_of dovecot)")
    line=$(python3 "$ROOT/benches/imap_sort.py" "127.0.0.1:$((port + 1))" bench0@example.com "$PASS" \
        "${who[@]}" "$@" --lmtp "127.0.0.1:$port" | grep '^RESULT')
    echo "$label $line" | tee -a "$OUT"
}
for s in ${SERVERS:-cove dovecot}; do
    if [[ $s == dovecot ]]; then
        bench_log "dovecot: SORT/THREAD, $RUNS run(s)"
        for run in $(seq "$RUNS"); do
            measure "dovecot run=$run" dovecot "${load_args[@]}"
            load_args=()
        done
        continue
    fi
    for pair in $COVES; do
        label=${pair%%:*}
        bin=${pair#*:}
        for run in $(seq "$RUNS"); do
            # A new process for every run: every run's "cold" is a first.
            stop_cove
            "$bin" serve --config "$WORK/cove.toml" >>"$WORK/cove.log" 2>&1 &
            COVE_PID=$!
            wait_port $((COVE_PORT + 1)) "$COVE_PID" 120 || { tail -n 30 "$WORK/cove.log" >&2; exit 1; }
            bench_log "cove $label ($bin) run $run: SORT/THREAD"
            measure "cove $label ($PROFILE build) run=$run" cove "${load_args[@]}"
            load_args=()
        done
    done
    [[ $COPY == 1 ]] || load_args=(--load "$MESSAGES")
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT"
