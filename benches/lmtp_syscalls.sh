#!/usr/bin/env bash
# System calls per delivered message (issue 15, "LMTP: find the floor"):
# cove, Dovecot and Cyrus side by side, in one run, with the disk's own
# flush rate measured on the same filesystem.
#
#   bash benches/lmtp_syscalls.sh
#
# Starts cove, a private Dovecot (common.sh start_pair) and a private Cyrus
# (benches/cyrus/start.sh), delivers a warm-up, then attaches
# `strace -f -c` to each server in turn while
# `cove-load lmtp` delivers MESSAGES messages of SIZE bytes over CONNS
# connections, and divides each system call's count by MESSAGES. strace
# slows the server down a lot: the counts are what matters here, not the
# rates. Writes benches/results/lmtp-syscalls-<date>.md.
#
# Knobs (environment):
#   MESSAGES=1000 SIZE=4096 CONNS=1
#   RATE_MESSAGES=2000       messages of each untraced rate run
#   COVE_INDEX_NEW_MAIL=true cove's [server] index_new_mail
#   COVE_PORT=26500 DOVECOT_PORT=26600 CYRUS_PORT=26800   LMTP ports
#   SERVERS="cove dovecot cyrus"
#   KEEP=1                   keep the temp dir (data, logs) afterwards
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
MESSAGES=${MESSAGES:-1000}
RATE_MESSAGES=${RATE_MESSAGES:-2000}
SIZE=${SIZE:-4096}
CONNS=${CONNS:-1}
COVE_INDEX_NEW_MAIL=${COVE_INDEX_NEW_MAIL:-true}
COVE_PORT=${COVE_PORT:-26500}
DOVECOT_PORT=${DOVECOT_PORT:-26600}
CYRUS_PORT=${CYRUS_PORT:-26800}
SERVERS=${SERVERS:-"cove dovecot cyrus"}
KEEP=${KEEP:-0}
LOAD=$ROOT/target/release/cove-load
COVE=${COVE:-$ROOT/target/release/cove}
PASS=bench
command -v strace >/dev/null || { echo "strace is missing: apt-get install -y strace" >&2; exit 1; }
command -v fio >/dev/null || { echo "fio is missing: apt-get install -y fio" >&2; exit 1; }

bench_log "cargo build --release -p cove -p cove-benches"
(cd "$ROOT" && cargo build --release -p cove -p cove-benches)
start_pair covesys "[server]
index_new_mail = $COVE_INDEX_NEW_MAIL" "$COVE_PORT"
[[ " $SERVERS " == *" cyrus "* ]] && start_cyrus_too 1
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)

# The disk's own limit, on the filesystem the servers write to: 4 KiB
# appends each followed by fdatasync (one flush each: a lone delivery that
# needs one flush can do no better), for 10 s.
disk_rate() { # NAME FIO-ARGS...
    local name=$1
    shift
    mkdir -p "$WORK/fio"
    fio --name="$name" --directory="$WORK/fio" --bs=4k --ioengine=sync --runtime=10 --time_based \
        --output-format=terse --terse-version=3 "$@" 2>/dev/null | awk -F';' '{ printf "%.0f", $49 }'
    rm -rf "$WORK/fio"
}
FDATASYNC_PER_S=$(disk_rate fdatasync --rw=write --size=64m --fdatasync=1)
bench_log "disk: $FDATASYNC_PER_S fdatasync'd 4 KiB appends/s"

deliver() { # SERVER N LABEL [CONNS]
    "$LOAD" lmtp --addr "127.0.0.1:$(port_of "$1")" --conns "${4:-$CONNS}" --messages "$2" --size "$SIZE" \
        --users 1 --rcpt-template bench0@example.com --varied --label "$3" | grep -v '^RESULT' >&2
}

# Messages per second without strace, at 1 and 16 connections, beside the
# disk's own rates above: how close each server comes to the disk.
rate() { # SERVER CONNS
    "$LOAD" lmtp --addr "127.0.0.1:$(port_of "$1")" --conns "$2" --messages "$RATE_MESSAGES" --size "$SIZE" \
        --users 1 --rcpt-template bench0@example.com --varied --label "$1 rate" | sed -n 's/^RESULT .* msgs_per_s=\([0-9.]*\).*/\1/p'
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

for s in $SERVERS; do
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

declare -A RATE1 RATE16
for s in $SERVERS; do
    RATE1[$s]=$(rate "$s" 1)
    RATE16[$s]=$(rate "$s" 16)
done

# "calls syscall" pairs of a strace -c summary.
calls() { awk '$1 ~ /^[0-9.]+$/ && NF >= 5 { print $4, $NF }' "$1"; }

# Per-message counts of every server, one row per system call, the most
# frequent first: "syscall n1 n2 ...".
table() {
    local i=0 s k
    k=$(wc -w <<<"$SERVERS")
    for s in $SERVERS; do
        calls "$WORK/strace.$s" | awk -v i="$i" '$2 != "total" { print $2, i, $1 }'
        i=$((i + 1))
    done | awk -v n="$MESSAGES" -v k="$k" '
        { c[$1, $2] = $3; seen[$1] = 1; sum[$1] += $3 }
        END { for (sc in seen) { line = sc; keep = 0
                for (j = 0; j < k; j++) { v = c[sc, j] / n; line = line " " sprintf("%.2f", v); if (v >= 0.01) keep = 1 }
                if (keep) print sum[sc], line } }' | sort -g -r | cut -d' ' -f2-
}

DATE=$(date +%Y-%m-%d)
OUT=$ROOT/benches/results/lmtp-syscalls-$DATE.md
k=2
while [[ -e $OUT ]]; do OUT=$ROOT/benches/results/lmtp-syscalls-$DATE-$k.md; k=$((k + 1)); done
cove_rev=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo "?")
header="| system call |"; rule="|---|"
for s in $SERVERS; do header="$header $s per message |"; rule="$rule---:|"; done
{
    echo "# LMTP system calls per delivered message, $DATE"
    echo
    echo "cove at \`$cove_rev\` (durability = batched, index_new_mail = $COVE_INDEX_NEW_MAIL, defaults otherwise); Dovecot $(dovecot --version 2>/dev/null | cut -d' ' -f1) (benches/dovecot/start.sh: Maildir, \`mail_fsync = always\`); Cyrus IMAP $(dpkg-query -W -f '${Version}' cyrus-common 2>/dev/null || echo '?') (benches/cyrus/start.sh). $MESSAGES messages of $SIZE B to one user over $CONNS LMTP connection(s), after a warm-up of 50; \`strace -f -c\` on the whole server (cove: its one process; Dovecot and Cyrus: the master, its processes at the start and every process they fork during the run). Load average before: $LOADAVG. Counts divided by $MESSAGES; calls below 0.01 per message left out. Machine: $(nproc) CPUs, $(uname -sr), data on $(df --output=fstype "$WORK" | tail -1)."
    echo
    echo "## The disk and the servers, untraced"
    echo
    echo "The disk (fio on the same filesystem, 10 s, measured in this run before the servers' runs): **$FDATASYNC_PER_S** 4 KiB appends/s each followed by \`fdatasync\`. One delivery at a time can go no faster than the flushes it needs allow; many at a time can share flushes."
    echo
    echo "| server | flushes per message (fsync + fdatasync + syncfs, traced run) | msgs/s, 1 conn | msgs/s, 16 conns |"
    echo "|---|---:|---:|---:|"
    for s in $SERVERS; do
        f=$(calls "$WORK/strace.$s" | awk -v n="$MESSAGES" '$2 == "fsync" || $2 == "fdatasync" || $2 == "syncfs" || $2 == "msync" { t += $1 } END { printf "%.2f", t / n }')
        echo "| $s | $f | ${RATE1[$s]} | ${RATE16[$s]} |"
    done
    echo
    echo "## System calls per message"
    echo
    echo "$header"
    echo "$rule"
    table | awk '{ line = "| " $1 " |"; for (j = 2; j <= NF; j++) line = line " " $j " |"; print line }'
    line="| **all** |"
    for s in $SERVERS; do
        t=$(calls "$WORK/strace.$s" | awk '$2 == "total" { print $1 }')
        line="$line **$(awk -v t="$t" -v n="$MESSAGES" 'BEGIN { printf "%.1f", t / n }')** |"
    done
    echo "$line"
    echo
    echo "<details><summary>strace -c output</summary>"
    echo
    for s in $SERVERS; do
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
