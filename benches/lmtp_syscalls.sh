#!/usr/bin/env bash
# System calls per delivered message (issue 15, "LMTP: find the floor"):
# cove and Dovecot side by side, in one run.
#
#   bash benches/lmtp_syscalls.sh
#
# Starts cove and a private Dovecot (common.sh start_pair), delivers a
# warm-up, then attaches `strace -f -c` to each server in turn while
# `cove-load lmtp` delivers MESSAGES messages of SIZE bytes over CONNS
# connections, and divides each system call's count by MESSAGES. strace
# slows the server down a lot: the counts are what matters here, not the
# rates. Writes benches/results/lmtp-syscalls-<date>.md.
#
# Knobs (environment):
#   MESSAGES=1000 SIZE=4096 CONNS=1
#   COVE_INDEX_NEW_MAIL=true cove's [server] index_new_mail
#   COVE_PORT=26500 DOVECOT_PORT=26600   LMTP ports
#   KEEP=1                   keep the temp dir (data, logs) afterwards
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
MESSAGES=${MESSAGES:-1000}
SIZE=${SIZE:-4096}
CONNS=${CONNS:-1}
COVE_INDEX_NEW_MAIL=${COVE_INDEX_NEW_MAIL:-true}
COVE_PORT=${COVE_PORT:-26500}
DOVECOT_PORT=${DOVECOT_PORT:-26600}
KEEP=${KEEP:-0}
LOAD=$ROOT/target/release/cove-load
COVE=$ROOT/target/release/cove
PASS=bench
command -v strace >/dev/null || { echo "strace is missing: apt-get install -y strace" >&2; exit 1; }

bench_log "cargo build --release -p cove -p cove-benches"
(cd "$ROOT" && cargo build --release -p cove -p cove-benches)
start_pair covesys "[server]
index_new_mail = $COVE_INDEX_NEW_MAIL" "$COVE_PORT"
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)

deliver() { # SERVER N LABEL
    "$LOAD" lmtp --addr "127.0.0.1:$(port_of "$1")" --conns "$CONNS" --messages "$2" --size "$SIZE" \
        --users 1 --rcpt-template bench0@example.com --varied --label "$3" | grep -v '^RESULT' >&2
}

# PID and all its descendants, as strace -p arguments (Dovecot's lmtp
# process outlives the warm-up that started it).
tree_args() { # PID
    local todo=("$1") p
    while ((${#todo[@]})); do
        p=${todo[0]}
        todo=("${todo[@]:1}")
        printf -- '-p %s ' "$p"
        # shellcheck disable=SC2207
        todo+=($(ps -o pid= --ppid "$p" || true))
    done
}

for s in cove dovecot; do
    deliver "$s" 50 "$s warm-up"
    # shellcheck disable=SC2046
    strace -f -c -o "$WORK/strace.$s" $(tree_args "$(pid_of "$s")") 2>/dev/null &
    STRACE=$!
    sleep 1
    deliver "$s" "$MESSAGES" "$s traced"
    sleep 1
    kill -INT "$STRACE"
    wait "$STRACE" 2>/dev/null || true
done

# "calls syscall" pairs of a strace -c summary.
calls() { awk '$1 ~ /^[0-9.]+$/ && NF >= 5 { n = (NF == 6) ? $4 : $4; print $4, $NF }' "$1"; }

DATE=$(date +%Y-%m-%d)
OUT=$ROOT/benches/results/lmtp-syscalls-$DATE.md
k=2
while [[ -e $OUT ]]; do OUT=$ROOT/benches/results/lmtp-syscalls-$DATE-$k.md; k=$((k + 1)); done
cove_rev=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo "?")
{
    echo "# LMTP system calls per delivered message, $DATE"
    echo
    echo "cove at \`$cove_rev\` (durability = batched, index_new_mail = $COVE_INDEX_NEW_MAIL, defaults otherwise); Dovecot $(dovecot --version 2>/dev/null | cut -d' ' -f1) (benches/dovecot/start.sh: Maildir, \`mail_fsync = always\`). $MESSAGES messages of $SIZE B to one user over $CONNS LMTP connection(s), after a warm-up of 50; \`strace -f -c\` on the whole server (cove: its one process; Dovecot: the master, its processes at the start and every process they fork during the run). Load average before: $LOADAVG. Counts divided by $MESSAGES; calls below 0.01 per message left out."
    echo
    echo "| system call | cove per message | Dovecot per message |"
    echo "|---|---:|---:|"
    join -a1 -a2 -e 0 -o 0,1.2,2.2 \
        <(calls "$WORK/strace.cove" | awk '{ print $2, $1 }' | sort) \
        <(calls "$WORK/strace.dovecot" | awk '{ print $2, $1 }' | sort) |
        awk -v n="$MESSAGES" '$1 != "total" { a = $2 / n; b = $3 / n; if (a >= 0.01 || b >= 0.01) printf "%s %.2f %.2f %.2f\n", $1, a, b, a + b }' |
        sort -k4 -g -r | awk '{ printf "| %s | %s | %s |\n", $1, $2, $3 }'
    tc=$(calls "$WORK/strace.cove" | awk '$2 == "total" { print $1 }')
    td=$(calls "$WORK/strace.dovecot" | awk '$2 == "total" { print $1 }')
    echo "| **all** | **$(awk -v t="$tc" -v n="$MESSAGES" 'BEGIN { printf "%.1f", t / n }')** | **$(awk -v t="$td" -v n="$MESSAGES" 'BEGIN { printf "%.1f", t / n }')** |"
    echo
    echo "<details><summary>strace -c output</summary>"
    echo
    for s in cove dovecot; do
        echo "$s:"
        echo
        echo '```'
        cat "$WORK/strace.$s"
        echo '```'
        echo
    done
    echo "</details>"
} > "$OUT"
cat "$OUT"
bench_log "written to $OUT"
