#!/usr/bin/env bash
# What deliveries cost while a client sits in IDLE on a big INBOX: cove and
# Dovecot side by side, in one run.
#
#   bash benches/idle_deliveries.sh
#
# Loads MESSAGES messages of 4 KiB into bench0's INBOX on both (LMTP), then,
# RUNS times for each server: opens one IMAP session on that INBOX in IDLE
# (python3), waits for it to settle, makes DELIVERIES single deliveries
# GAP_MS apart (one LMTP connection each, as an MTA does), and measures the
# server's CPU over them (its whole process tree, from /proc) and the
# EXISTS the IDLE client saw. A server that reconciles the whole mailbox
# after each change pays for the mailbox's size at every delivery.
# Writes benches/results/idle-deliveries-<date>.md (also printed).
#
# Knobs (environment):
#   MESSAGES=20000 DELIVERIES=20 GAP_MS=300 RUNS=3
#   COVE_PORT=26300 DOVECOT_PORT=26400   LMTP ports; IMAP is PORT+1
#   KEEP=1                   keep the temp dir (data, logs) afterwards
#   COVE_BIN=PATH            another cove binary (an older build, to compare)
#   OUT=PATH                 where to write the results
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
MESSAGES=${MESSAGES:-20000}
DELIVERIES=${DELIVERIES:-20}
GAP_MS=${GAP_MS:-300}
RUNS=${RUNS:-3}
COVE_PORT=${COVE_PORT:-26300}
DOVECOT_PORT=${DOVECOT_PORT:-26400}
KEEP=${KEEP:-0}
LOAD=$ROOT/target/release/cove-load
COVE=${COVE_BIN:-$ROOT/target/release/cove}
PASS=bench

log() { bench_log "$@"; }

log "cargo build --release -p cove -p cove-benches"
(cd "$ROOT" && cargo build --release -p cove -p cove-benches)

start_pair coveidle "[imap]
listen = [\"127.0.0.1:$((COVE_PORT + 1))\"]" $((COVE_PORT + 1))

# CPU ticks of a process tree: user + system of each live process, plus
# those of its reaped children (cutime, cstime), so a worker that exits
# during the measurement is still counted, once.
tree_ticks() { # PID
    local pids=("$1") i=0 total=0 p
    while ((i < ${#pids[@]})); do
        for p in $(pgrep -P "${pids[i]}" || true); do pids+=("$p"); done
        i=$((i + 1))
    done
    for p in "${pids[@]}"; do
        if [[ -r /proc/$p/stat ]]; then
            total=$((total + $(sed 's/^.*) //' "/proc/$p/stat" | awk '{print $12 + $13 + $14 + $15}')))
        fi
    done
    echo "$total"
}
TICK_MS=$((1000 / $(getconf CLK_TCK)))

log "loading $MESSAGES x 4096 B into bench0's INBOX on both"
for s in cove dovecot; do
    "$LOAD" lmtp --addr "127.0.0.1:$(port_of $s)" --conns 4 --messages "$MESSAGES" --size 4096 \
        --users 1 --rcpt-template bench0@example.com --varied --label "$s load" | grep -v '^RESULT' >&2
done
sync

RAW=$WORK/raw.txt
: > "$RAW"
SETTLE=4
LISTEN=$((SETTLE + DELIVERIES * GAP_MS / 1000 + 6))
one_run() { # SERVER
    local s=$1 pid exists_file c0 c1 i
    pid=$(pid_of "$s")
    exists_file=$WORK/exists.$s
    # The IDLE client: log in, SELECT INBOX, IDLE, count EXISTS for LISTEN s.
    python3 - "$(( $(port_of "$s") + 1 ))" "$LISTEN" > "$exists_file" <<'PY' &
import socket, sys, time
port, listen = int(sys.argv[1]), float(sys.argv[2])
s = socket.create_connection(("127.0.0.1", port))
f = s.makefile("rwb")
f.readline()
for tag, cmd in [(b"a", b"LOGIN bench0@example.com bench"), (b"b", b"SELECT INBOX")]:
    f.write(tag + b" " + cmd + b"\r\n")
    f.flush()
    while not f.readline().startswith(tag + b" "):
        pass
f.write(b"c IDLE\r\n")
f.flush()
f.readline()
end = time.time() + listen
n = 0
while time.time() < end:
    s.settimeout(max(0.05, end - time.time()))
    try:
        line = f.readline()
    except (socket.timeout, TimeoutError):
        break
    if not line:
        break
    n += line.endswith(b" EXISTS\r\n")
print(n)
PY
    local client=$!
    sleep "$SETTLE"
    c0=$(tree_ticks "$pid")
    for ((i = 0; i < DELIVERIES; i++)); do
        "$LOAD" lmtp --addr "127.0.0.1:$(port_of "$s")" --conns 1 --messages 1 --size 4096 \
            --users 1 --rcpt-template bench0@example.com --label d > /dev/null
        sleep "$(awk -v g="$GAP_MS" 'BEGIN {printf "%.3f", g / 1000}')"
    done
    sleep 2
    c1=$(tree_ticks "$pid")
    wait "$client" || true
    local ms=$(( (c1 - c0) * TICK_MS ))
    echo "RESULT label=$s cpu_ms=$ms exists=$(cat "$exists_file")" | tee -a "$RAW" >&2
}
LOADAVG_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for ((run = 1; run <= RUNS; run++)); do
    for s in cove dovecot; do
        one_run "$s"
    done
done
LOADAVG_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

median() { sort -n | awk '{a[NR]=$1} END {if (NR == 0) print "NA"; else if (NR % 2) print a[(NR+1)/2]; else printf "%.0f\n", (a[NR/2]+a[NR/2+1])/2}'; }
values() { # LABEL KEY
    grep "^RESULT label=$1 " "$RAW" | while read -r l; do kv "$2" "$l"; done
}
DATE=$(date +%F)
OUT=${OUT:-$ROOT/benches/results/idle-deliveries-$DATE.md}
{
    echo "# Deliveries to a big INBOX with a client in IDLE, cove vs Dovecot — $DATE"
    echo
    echo "\`bash benches/idle_deliveries.sh\` (MESSAGES=$MESSAGES DELIVERIES=$DELIVERIES GAP_MS=$GAP_MS RUNS=$RUNS):"
    echo "bench0's INBOX holds $MESSAGES messages of 4 KiB; one IMAP session is in IDLE on it;"
    echo "$DELIVERIES single LMTP deliveries (one connection each) arrive $GAP_MS ms apart."
    echo "Server CPU: the server's process tree, from /proc, from just before the first"
    echo "delivery to 2 s after the last. Machine: $(nproc) cores, shared with other work;"
    echo "load average before $LOADAVG_BEFORE, after $LOADAVG_AFTER."
    echo "$(dovecot --version 2>/dev/null | sed 's/^/Dovecot /'), mail_fsync = always. cove: $COVE."
    echo "EXISTS carries a count: one can announce several deliveries."
    echo
    echo "| server | server CPU ms (median of $RUNS) | each run | per delivery ms | EXISTS seen by IDLE (each run) |"
    echo "|---|---|---|---|---|"
    for s in cove dovecot; do
        cpu=$(values "$s" cpu_ms | median)
        per=$(awk -v c="$cpu" -v n="$DELIVERIES" 'BEGIN {if (c == "NA") print "NA"; else printf "%.1f", c / n}')
        echo "| $s | **$cpu** | $(values "$s" cpu_ms | paste -sd/ -) | $per | $(values "$s" exists | paste -sd/ -) |"
    done
} > "$OUT"
cat "$OUT"
log "wrote $OUT"
