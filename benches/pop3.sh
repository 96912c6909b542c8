#!/usr/bin/env bash
# POP3 benchmark (issue 5): cove and Dovecot side by side, in one run.
#
#   bash benches/pop3.sh
#
# Builds cove and cove-load (release), starts cove and a private Dovecot
# (benches/dovecot/start.sh, which needs dovecot-pop3d) under a temp dir,
# loads MESSAGES varied SIZE-byte messages into bench0's INBOX on each
# (LMTP), then `cove-load pop3` RETRs the whole maildrop: once to warm up
# (the first login computes and caches sizes on both servers), then RUNS
# times in sequence (one command in flight) and pipelined (PIPELINE in
# flight; the client refilling half its window in one write, and sending
# one new command per answer), cove and Dovecot alternating; then POLLS
# polls as a client checking for mail makes them (connect, USER, PASS,
# STAT, UIDL, QUIT), RUNS times each, alternating. Writes the medians to
# benches/results/pop3-<date>.md (also printed).
#
# Knobs (environment):
#   MESSAGES=10000 SIZE=4096 RUNS=7 PIPELINE=32 POLLS=30
#   COVE_PORT=26100 DOVECOT_PORT=26200   LMTP ports; POP3 is PORT+2 on both
#   KEEP=1                   keep the temp dir (data, logs) afterwards
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
MESSAGES=${MESSAGES:-10000}
SIZE=${SIZE:-4096}
RUNS=${RUNS:-7}
PIPELINE=${PIPELINE:-32}
POLLS=${POLLS:-30}
COVE_PORT=${COVE_PORT:-26100}
DOVECOT_PORT=${DOVECOT_PORT:-26200}
KEEP=${KEEP:-0}
LOAD=$ROOT/target/release/cove-load
COVE=$ROOT/target/release/cove
PASS=bench

log() { bench_log "$@"; }

log "cargo build --release -p cove -p cove-benches"
(cd "$ROOT" && cargo build --release -p cove -p cove-benches)

start_pair covepop "[pop3]
listen = [\"127.0.0.1:$((COVE_PORT + 2))\"]" $((COVE_PORT + 2)) same-hash

log "loading $MESSAGES x $SIZE B into bench0's INBOX on both"
for s in cove dovecot; do
    "$LOAD" lmtp --addr "127.0.0.1:$(port_of $s)" --conns 4 --messages "$MESSAGES" --size "$SIZE" \
        --users 1 --rcpt-template bench0@example.com --varied --label "$s load" | grep -v '^RESULT' >&2
done
sync
sleep 2

RAW=$WORK/raw.txt
: > "$RAW"
retr() { # SERVER DEPTH LABEL [REFILL]
    "$LOAD" pop3 --addr "127.0.0.1:$(( $(port_of "$1") + 2 ))" --user bench0@example.com --pass "$PASS" \
        --messages "$MESSAGES" --pipeline "$2" --refill "${4:-half}" --server-pid "$(pid_of "$1")" \
        --label "$3" --timeout 600
}
LOADAVG_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for s in cove dovecot; do
    log "warm-up: $s"
    retr "$s" "$PIPELINE" "$s-warmup" | tee -a "$RAW" | grep -v '^RESULT' >&2
done
for ((run = 1; run <= RUNS; run++)); do
    for depth in 1 "$PIPELINE"; do
        for s in cove dovecot; do
            retr "$s" "$depth" "$s-p$depth" | tee -a "$RAW" | grep -v '^RESULT' >&2
        done
    done
    for s in cove dovecot; do
        retr "$s" "$PIPELINE" "$s-p${PIPELINE}each" each | tee -a "$RAW" | grep -v '^RESULT' >&2
    done
done
for ((run = 1; run <= RUNS; run++)); do
    for s in cove dovecot; do
        "$LOAD" pop3 --addr "127.0.0.1:$(( $(port_of "$s") + 2 ))" --user bench0@example.com --pass "$PASS" \
            --polls "$POLLS" --server-pid "$(pid_of "$s")" --label "$s-polls" --timeout 600 \
            | tee -a "$RAW" | grep -v '^RESULT' >&2
    done
done
LOADAVG_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

median() { sort -n | awk '{a[NR]=$1} END {if (NR == 0) print "NA"; else if (NR % 2) print a[(NR+1)/2]; else printf "%.0f\n", (a[NR/2]+a[NR/2+1])/2}'; }
values() { # LABEL KEY
    grep "^RESULT .* label=$1 " "$RAW" | while read -r l; do kv "$2" "$l"; done
}
row() { # SERVER DEPTH [SUFFIX]
    local label="$1-p$2${3:-}" rate cpu all
    rate=$(values "$label" msg_per_s | median)
    cpu=$(values "$label" server_cpu_ms | median)
    all=$(values "$label" msg_per_s | paste -sd/ -)
    local per="NA"
    [[ $cpu != NA && $cpu != 0 ]] && per=$(awk -v c="$cpu" -v n="$MESSAGES" 'BEGIN {printf "%.1f", c * 1000 / n}')
    echo "| $1 | $2${3:+ ($3)} | **$rate** | $all | $cpu | $per |"
}
DATE=$(date +%F)
OUT=$ROOT/benches/results/pop3-$DATE.md
{
    echo "# POP3 RETR, cove vs Dovecot — $DATE"
    echo
    echo "\`bash benches/pop3.sh\` (MESSAGES=$MESSAGES SIZE=$SIZE RUNS=$RUNS PIPELINE=$PIPELINE):"
    echo "RETR 1..$MESSAGES of bench0's INBOX on one connection, in sequence (1 command in"
    echo "flight) and pipelined ($PIPELINE in flight: the client refills half its window in one"
    echo "write; \"each\": it sends one new RETR per answer), after one warm-up pass each."
    echo "Client: \`cove-load pop3\` (Rust, one thread). Server CPU: the server's process"
    echo "tree, from /proc. Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), shared with other work;"
    echo "load average before $LOADAVG_BEFORE, after $LOADAVG_AFTER."
    echo "$(dovecot --version 2>/dev/null | sed 's/^/Dovecot /'), mail_fsync = always (irrelevant to RETR)."
    echo
    echo "| server | in flight | msg/s (median of $RUNS) | each run | server CPU ms (median) | server CPU µs/msg |"
    echo "|---|---|---|---|---|---|"
    row cove 1
    row dovecot 1
    row cove "$PIPELINE"
    row dovecot "$PIPELINE"
    row cove "$PIPELINE" each
    row dovecot "$PIPELINE" each
    echo
    ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a == "NA" || b == "NA" || b == 0) print "NA"; else printf "%.2f", a / b}'; }
    med() { values "$1" msg_per_s | median; }
    echo "cove / Dovecot (medians): in sequence $(ratio "$(med cove-p1)" "$(med dovecot-p1)")×," \
        "pipelined $(ratio "$(med "cove-p$PIPELINE")" "$(med "dovecot-p$PIPELINE")")×," \
        "pipelined one per answer $(ratio "$(med "cove-p${PIPELINE}each")" "$(med "dovecot-p${PIPELINE}each")")×."
    echo
    echo "Polls (connect, USER, PASS, STAT, UIDL, QUIT) of the $MESSAGES-message maildrop, $POLLS per"
    echo "run, medians over $RUNS runs of each run's median (ms). Both servers verify the same"
    echo "argon2id hash (cove's default, m=19 MiB, t=2) at each login."
    echo
    echo "| server | whole poll ms | of which login ms | server CPU ms per poll |"
    echo "|---|---|---|---|"
    for s in cove dovecot; do
        local_cpu=$(values "$s-polls" server_cpu_ms | median)
        per_poll=$(awk -v c="$local_cpu" -v n="$POLLS" 'BEGIN {if (c == "NA") print "NA"; else printf "%.1f", c / n}')
        echo "| $s | **$(values "$s-polls" poll_p50_ms | median)** | $(values "$s-polls" login_p50_ms | median) | $per_poll |"
    done
    echo
    echo "Warm-up pass (first login after delivery; pipelined):"
    echo
    for s in cove dovecot; do
        echo "- $s: $(values "$s-warmup" msg_per_s) msg/s"
    done
} > "$OUT"
cat "$OUT"
log "wrote $OUT"
