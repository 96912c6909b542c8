#!/usr/bin/env bash
# `UID STORE 1:* +FLAGS.SILENT (\Seen)` then `-FLAGS.SILENT` on one big
# INBOX (issue 15), cove and Dovecot side by side on the same files, in one
# run, ROUNDS rounds (each server in turn, each round). Cove's INBOX is
# delivered over LMTP (`cove-load lmtp --varied`); Dovecot is given the same
# message files (`copy_to_dovecot`, benches/common.sh) and indexes them at a
# warm-up SELECT before the first round. Each measured session is
# `cove-load imap ops --only store` (SELECT, the two STOREs, each checked by
# a SEARCH afterwards, not timed); server CPU is the whole server's process
# tree (utime + stime) over the command.
#
#   bash benches/store_flags.sh
#
# Knobs (environment):
#   MESSAGES=35000 SIZE=4096   messages in the INBOX
#   ROUNDS=3
#   COVE_BINS="cove=target/release/cove"  label=binary pairs: several cove
#                     builds measured on copies of one data directory (each
#                     is started for its turn and stopped after), e.g.
#                     COVE_BINS="before=/tmp/cove-main cove=target/release/cove"
#   COVE_PORT=25500 DOVECOT_PORT=25600   LMTP ports (IMAP is PORT+1)
#   KEEP=1            keep the temp dir
# Prints the RESULT lines and a markdown table (medians) on stdout.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
MESSAGES=${MESSAGES:-35000}
SIZE=${SIZE:-4096}
ROUNDS=${ROUNDS:-3}
COVE_BINS=${COVE_BINS:-"cove=$ROOT/target/release/cove"}
COVE_PORT=${COVE_PORT:-25500}
DOVECOT_PORT=${DOVECOT_PORT:-25600}
KEEP=${KEEP:-0}
LOAD=$ROOT/target/release/cove-load
PASS=bench
COVE=${COVE_BINS%% *}
COVE=${COVE#*=}

require_free_ports "$COVE_PORT" $((COVE_PORT + 1)) "$DOVECOT_PORT" $((DOVECOT_PORT + 1))
start_pair covestore "[server]
durability = \"batched\"

[imap]
listen = [\"127.0.0.1:$((COVE_PORT + 1))\"]" "$COVE_PORT"

bench_log "loading $MESSAGES x $SIZE B into cove over LMTP"
"$LOAD" lmtp --addr "127.0.0.1:$COVE_PORT" --conns 4 --messages "$MESSAGES" --size "$SIZE" \
    --users 1 --rcpt-template bench0@example.com --varied --label load | grep '^lmtp' >&2 || true
bench_log "copying the files into Dovecot's Maildir"
copy_to_dovecot
stop_cove

# Each cove build gets its own copy of the data directory: a newer build may
# migrate the index to a schema an older one refuses to open (schema 5,
# issue 15), and each then starts from the same files and rows.
for pair in $COVE_BINS; do
    label=${pair%%=*}
    cp -a "$WORK/cove-data" "$WORK/cove-data-$label"
    sed "s|^data_dir = .*|data_dir = \"$WORK/cove-data-$label\"|" "$WORK/cove.toml" > "$WORK/cove-$label.toml"
done
rm -rf "$WORK/cove-data"

start_cove_bin() { # LABEL=BINARY
    "${1#*=}" serve --config "$WORK/cove-${1%%=*}.toml" >>"$WORK/cove.log" 2>&1 &
    COVE_PID=$!
    wait_port $((COVE_PORT + 1)) "$COVE_PID" 30 || { tail -n 30 "$WORK/cove.log" >&2; exit 1; }
}

RAW=$WORK/raw.txt
: > "$RAW"
ops() { # SERVER-KIND LABEL
    local pid port
    pid=$(pid_of "$1")
    port=$(( $(port_of "$1") + 1 ))
    "$LOAD" imap ops --addr "127.0.0.1:$port" --user bench0@example.com --pass "$PASS" \
        --expect-messages "$MESSAGES" --only store --server-pid "$pid" --label "$2" --timeout 600 \
        | tee -a "$RAW" | grep -v '^RESULT' >&2
}

# Warm-up: Dovecot indexes the copied files at its first SELECT; each cove
# build opens the account once.
bench_log "warm-up"
ops dovecot warmup
for pair in $COVE_BINS; do
    start_cove_bin "$pair"
    ops cove warmup
    stop_cove
done
LOADAVG=()
for r in $(seq "$ROUNDS"); do
    LOADAVG+=("$(cut -d' ' -f1 /proc/loadavg)")
    for pair in $COVE_BINS; do
        start_cove_bin "$pair"
        bench_log "round $r: ${pair%%=*}"
        ops cove "${pair%%=*}"
        stop_cove
    done
    bench_log "round $r: dovecot"
    ops dovecot dovecot
done
LOADAVG+=("$(cut -d' ' -f1 /proc/loadavg)")

grep '^RESULT' "$RAW" | grep -v 'label=warmup'
median() { sort -n | awk '{a[NR] = $1} END {if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
cell() { # LABEL OP KEY
    local vals all
    vals=$(grep -E "^RESULT proto=imap mode=ops label=$1 .* op=$2 " "$RAW" | while read -r l; do kv "$3" "$l"; done)
    all=$(tr '\n' ' ' <<<"$vals" | awk '{for (i = 1; i <= NF; i++) printf "%s%.2f", (i > 1 ? " / " : ""), $i / 1000}')
    printf '%.2f s (%s)' "$(median <<<"$vals" | awk '{print $1 / 1000}')" "$all"
}
echo
echo "$MESSAGES x $SIZE B, $ROUNDS rounds, load average at each round's start and at the end: ${LOADAVG[*]}"
echo
echo "| server | +FLAGS wall | +FLAGS server CPU | -FLAGS wall | -FLAGS server CPU |"
echo "|---|---:|---:|---:|---:|"
for label in $(for pair in $COVE_BINS; do echo "${pair%%=*}"; done) dovecot; do
    echo "| $label | $(cell "$label" store_add_seen wall_ms) | $(cell "$label" store_add_seen server_cpu_ms) | $(cell "$label" store_remove_seen wall_ms) | $(cell "$label" store_remove_seen server_cpu_ms) |"
done
