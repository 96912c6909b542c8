#!/usr/bin/env bash
# IMAP sessions per second (issue 15, logins): cove and Dovecot side by
# side, in one run.
#
#   bash benches/sessions.sh
#
# For each hash SETTING, starts cove and a private Dovecot whose user
# bench0@example.com has the SAME password hash (cove makes it with that
# setting's [auth] argon2 parameters; Dovecot gets it as {ARGON2ID}), and
# runs `cove-load imap sessions`: CLIENTS clients each looping connect,
# LOGIN, SELECT INBOX (SEED messages), LOGOUT for SECONDS, RUNS times,
# cove and Dovecot alternating. Then one reference point: Dovecot with a
# {PLAIN} hash. Writes the medians to benches/results/sessions-<date>.md.
#
# Knobs (environment):
#   SETTINGS="19456,2,1 8,1,1"   argon2id memory KiB,iterations,lanes per
#                                setting (the default, and the cheapest cove
#                                accepts)
#   CLIENTS=8 SECONDS=10 RUNS=3 SEED=10
#   COVE_PORT=26300 DOVECOT_PORT=26400   LMTP ports; IMAP is PORT+1 on both
#   KEEP=1                   keep the temp dirs (data, logs) afterwards
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
SETTINGS=${SETTINGS:-"19456,2,1 8,1,1"}
CLIENTS=${CLIENTS:-8}
SECONDS_EACH=${SECONDS:-10}
RUNS=${RUNS:-3}
SEED=${SEED:-10}
COVE_PORT=${COVE_PORT:-26300}
DOVECOT_PORT=${DOVECOT_PORT:-26400}
KEEP=${KEEP:-0}
LOAD=$ROOT/target/release/cove-load
COVE=$ROOT/target/release/cove
PASS=bench
T0=$(date +%s)

log() { bench_log "$@"; }

log "cargo build --release -p cove -p cove-benches"
(cd "$ROOT" && cargo build --release -p cove -p cove-benches)

RAW=$(mktemp /tmp/sessions-raw.XXXXXX)
LOADAVG_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

sessions() { # SERVER LABEL
    "$LOAD" imap sessions --addr "127.0.0.1:$(( $(port_of "$1") + 1 ))" --user bench0@example.com \
        --pass "$PASS" --clients "$CLIENTS" --seconds "$SECONDS_EACH" --server-pid "$(pid_of "$1")" \
        --label "$2" --timeout 60 | tee -a "$RAW" | grep -v '^RESULT' >&2
}

for setting in $SETTINGS; do
    IFS=, read -r m t p <<<"$setting"
    start_pair covesess "[imap]
listen = [\"127.0.0.1:$((COVE_PORT + 1))\"]
[auth]
argon2_memory_kib = $m
argon2_iterations = $t
argon2_parallelism = $p" $((COVE_PORT + 1)) same-hash
    for s in cove dovecot; do
        "$LOAD" lmtp --addr "127.0.0.1:$(port_of $s)" --conns 1 --messages "$SEED" --size 4096 \
            --users 1 --rcpt-template bench0@example.com --varied --label "$s seed" | grep -v '^RESULT' >&2
    done
    for ((r = 1; r <= RUNS; r++)); do
        for s in cove dovecot; do
            log "sessions — $s — argon2id m=$m t=$t p=$p — run $r"
            sessions "$s" "$s-m$m-t$t-p$p"
        done
    done
    stop_pair
    trap - EXIT
done

# Reference: Dovecot with a {PLAIN} password (no hash at all).
start_pair covesess "[imap]
listen = [\"127.0.0.1:$((COVE_PORT + 1))\"]" $((COVE_PORT + 1))
"$LOAD" lmtp --addr "127.0.0.1:$DOVECOT_PORT" --conns 1 --messages "$SEED" --size 4096 \
    --users 1 --rcpt-template bench0@example.com --varied --label "dovecot seed" | grep -v '^RESULT' >&2
for ((r = 1; r <= RUNS; r++)); do
    log "sessions — dovecot — {PLAIN} — run $r"
    sessions dovecot "dovecot-plain"
done
stop_pair
trap - EXIT
LOADAVG_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print "NA"; else print v[int((NR + 1) / 2)] }'; }
values() { # LABEL KEY
    grep -E "^RESULT proto=imap mode=sessions label=$1 " "$RAW" | while read -r l; do kv "$2" "$l"; done
}
DATE=$(date +%Y-%m-%d)
OUT=$ROOT/benches/results/sessions-$DATE.md
k=2
while [[ -e $OUT ]]; do OUT=$ROOT/benches/results/sessions-$DATE-$k.md; k=$((k + 1)); done
cove_rev=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo "?")
dirty=$(cd "$ROOT" && [[ -n $(git status --porcelain 2>/dev/null | head -1) ]] && echo ' (working tree had uncommitted changes)' || true)
{
    echo "# IMAP sessions per second, $DATE"
    echo
    echo "cove at \`$cove_rev\`$dirty; Dovecot $(dovecot --version 2>/dev/null | cut -d' ' -f1) (benches/dovecot/start.sh). Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(free -g | awk '/^Mem:/ { print $2 }') GiB RAM, $(uname -sr). Load average (1/5/15 min) before: $LOADAVG_BEFORE, after: $LOADAVG_AFTER; $(( $(date +%s) - T0 )) s in all."
    echo
    echo "\`cove-load imap sessions\`: $CLIENTS clients each looping connect, LOGIN, SELECT INBOX ($SEED messages), LOGOUT for $SECONDS_EACH s (one warm-up session first); medians of $RUNS runs, cove and Dovecot alternating. Both servers verify the same argon2id hash (cove made it with the setting's \`[auth] argon2_*\`; Dovecot has it as \`{ARGON2ID}\`)."
    echo
    echo "| hash | server | sessions/s | p50 ms | p99 ms | server CPU ms/session |"
    echo "|---|---|---:|---:|---:|---:|"
    for setting in $SETTINGS; do
        IFS=, read -r m t p <<<"$setting"
        for s in cove dovecot; do
            l="$s-m$m-t$t-p$p"
            echo "| argon2id m=$m KiB t=$t p=$p | $s | $(values "$l" sessions_per_s | median) | $(values "$l" p50_ms | median) | $(values "$l" p99_ms | median) | $(values "$l" server_cpu_ms_per_session | median) |"
        done
    done
    echo "| {PLAIN} | dovecot | $(values dovecot-plain sessions_per_s | median) | $(values dovecot-plain p50_ms | median) | $(values dovecot-plain p99_ms | median) | $(values dovecot-plain server_cpu_ms_per_session | median) |"
    echo
    echo "<details><summary>raw RESULT lines</summary>"
    echo
    echo '```'
    cat "$RAW"
    echo '```'
    echo
    echo "</details>"
} > "$OUT"
rm -f "$RAW"
cat "$OUT"
log "written to $OUT"
