#!/usr/bin/env bash
# Memory per idle IMAP session (issue 15): cove plaintext and TLS, Dovecot
# plaintext beside it (benches/dovecot/start.sh has no TLS), in one run.
#
#   bash benches/idle_memory.sh
#
# For each CONNS in $CONNS and each USERS in $USERS: benches/idle_memory.py
# opens CONNS sessions (LOGIN as one of USERS users round-robin, SELECT an
# empty INBOX, IDLE) and reports the server's RSS/PSS growth divided by the
# sessions, after a warm-up that opened every user's account once (so
# the figure is the sessions' own cost), and once more with --cold-users
# (only one user warmed: the growth also holds the other users' accounts,
# which is what a harness logging many users in for the first time sees).
# Writes benches/results/idle-memory-<date>.md.
#
# Each cove point runs in a fresh cove process: memory a previous point
# touched and freed would otherwise be reused, and the growth read near 0.
#
# Knobs: CONNS="1000 10000" USERS="1 20" SERVERS="cove dovecot"
#        TLS="0 1" (cove only) COLD=1 (also the cold-users rows)
#        ARGON2="m,t,p" cove's [auth] argon2id cost for the users' hashes
#        (empty: cove's default, m=19456 KiB t=2: ~20 logins/s on a busy
#        2-core machine, 10 min for 10,000 sessions; e.g. "8,1,1" makes
#        logins cheap; the memory of idle sessions does not depend on it)
#        COVE_PORT=24700 (IMAP; imaps is +1) DOVECOT_PORT=24710 (LMTP; IMAP +1)
#        INDEX_IDLE_CLOSE="60" cove's [server] index_idle_close_secs, one
#        set of cove rows per value (0: indexes stay open, as before
#        issue 15's change; e.g. "0 5" measures both in one run)
#        TRIM="0" "0 1": also rows where the server's allocator gave its
#        free pages back (malloc_trim through gdb) before both samples: the
#        pages the sessions really use, without what fragmentation keeps
#        SETTLE=2 seconds between the last session set up and each memory
#        sample (give it more than INDEX_IDLE_CLOSE + 1 to see indexes
#        closed)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
CONNS=${CONNS:-"1000 10000"}
USERS=${USERS:-"1 20"}
SERVERS=${SERVERS:-"cove dovecot"}
TLS=${TLS:-"0 1"}
COLD=${COLD:-1}
ARGON2=${ARGON2:-}
COVE_PORT=${COVE_PORT:-24700}
DOVECOT_PORT=${DOVECOT_PORT:-24710}
KEEP=${KEEP:-0}
INDEX_IDLE_CLOSE=${INDEX_IDLE_CLOSE:-60}
SETTLE=${SETTLE:-2}
TRIM=${TRIM:-0}
COVE=$ROOT/target/release/cove
PASS=bench
T0=$(date +%s)
log() { echo "== $(date +%T) $*" >&2; }
has() { [[ " $SERVERS " == *" $1 "* ]]; }

MAX=0
for c in $CONNS; do (( c > MAX )) && MAX=$c; done
MAXU=0
for u in $USERS; do (( u > MAXU )) && MAXU=$u; done
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
(( $(ulimit -n) >= MAX + 500 )) || { echo "ulimit -n is $(ulimit -n); need $((MAX + 500))" >&2; exit 1; }
INOTIFY=/proc/sys/fs/inotify/max_user_instances
INOTIFY_OLD=""
if has dovecot && [[ -w $INOTIFY ]] && (( $(cat $INOTIFY) < MAX + 200 )); then
    INOTIFY_OLD=$(cat $INOTIFY)
    echo $((MAX + 1000)) > $INOTIFY
fi

log "cargo build --release -p cove"
(cd "$ROOT" && cargo build --release -p cove)

WORK=$(mktemp -d /tmp/coveidle.XXXXXX)
chmod 755 "$WORK"
COVE_PID=""
DOVECOT_PID=""
cleanup() {
    set +e
    stop_cove
    [[ -n $DOVECOT_PID ]] && bash "$ROOT/benches/dovecot/stop.sh" "$WORK/dovecot"
    [[ -n $INOTIFY_OLD ]] && echo "$INOTIFY_OLD" > $INOTIFY
    if [[ $KEEP == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

if has cove; then
    mkdir -p "$WORK/cove-data"
    cat > "$WORK/cove.toml" <<EOF
data_dir = "$WORK/cove-data"
hostname = "bench"

[imap]
listen = ["127.0.0.1:$COVE_PORT"]
tls_listen = ["127.0.0.1:$((COVE_PORT + 1))"]
max_connections = $((MAX + 1000))
max_connections_per_ip = $((MAX + 1000))
max_connections_per_user = $((MAX + 1000))
EOF
    if [[ -n $ARGON2 ]]; then
        IFS=, read -r am at ap <<<"$ARGON2"
        printf '\n[auth]\nargon2_memory_kib = %s\nargon2_iterations = %s\nargon2_parallelism = %s\n' "$am" "$at" "$ap" >> "$WORK/cove.toml"
    fi
    for ic in $INDEX_IDLE_CLOSE; do
        { cat "$WORK/cove.toml"; printf '\n[server]\nindex_idle_close_secs = %s\n' "$ic"; } > "$WORK/cove-ic$ic.toml"
    done
    for ((u = 1; u <= MAXU; u++)); do
        printf '%s\n' "$PASS" | "$COVE" user add "bench$u@example.com" --password-stdin --config "$WORK/cove.toml" >/dev/null
    done
    "$COVE" serve --config "$WORK/cove.toml" >>"$WORK/cove.log" 2>&1 &
    COVE_PID=$!
    wait_port "$((COVE_PORT + 1))" "$COVE_PID" 60 || { tail -n 20 "$WORK/cove.log" >&2; exit 1; }
fi
if has dovecot; then
    DOVECOT_PID=$(IMAP_CONNS=$((MAX + 100)) bash "$ROOT/benches/dovecot/start.sh" "$WORK/dovecot" "$DOVECOT_PORT" "$((MAXU + 1))")
fi

RAW=$WORK/raw.txt
: > "$RAW"
run() { # LABEL PORT PID TLS CONNS USERS COLD [TRIM]
    local extra=(--settle "$SETTLE")
    [[ ${8:-0} == 1 ]] && extra+=(--trim)
    [[ $4 == 1 ]] && extra+=(--tls)
    [[ $7 == 1 ]] && extra+=(--cold-users)
    log "$1 tls=$4 conns=$5 users=$6 cold=$7"
    python3 "$ROOT/benches/idle_memory.py" --port "$2" --pid "$3" --label "$1" --conns "$5" \
        --users "$6" --password "$PASS" "${extra[@]}" | tee -a "$RAW" || log "run failed"
    sleep 3
}
for c in $CONNS; do
    for u in $USERS; do
        for cold in 0 $([[ $COLD == 1 && $u -gt 1 ]] && echo 1); do
            if has cove; then
                for t in $TLS; do
                    for ic in $INDEX_IDLE_CLOSE; do
                        for tr in $TRIM; do
                            port=$COVE_PORT
                            [[ $t == 1 ]] && port=$((COVE_PORT + 1))
                            # A fresh process per point (see above).
                            stop_cove
                            "$COVE" serve --config "$WORK/cove-ic$ic.toml" >>"$WORK/cove.log" 2>&1 &
                            COVE_PID=$!
                            wait_port "$((COVE_PORT + 1))" "$COVE_PID" 60
                            run "cove-ic$ic" "$port" "$COVE_PID" "$t" "$c" "$u" "$cold" "$tr"
                        done
                    done
                done
            fi
            if has dovecot; then
                run dovecot "$((DOVECOT_PORT + 1))" "$DOVECOT_PID" 0 "$c" "$u" "$cold"
            fi
        done
    done
done

OUT=$ROOT/benches/results/idle-memory-$(date +%Y-%m-%d).md
k=2
while [[ -e $OUT ]]; do OUT=$ROOT/benches/results/idle-memory-$(date +%Y-%m-%d)-$k.md; k=$((k + 1)); done
{
    echo "# Memory per idle IMAP session, $(date +%Y-%m-%d)"
    echo
    echo "cove at \`$(cd "$ROOT" && git rev-parse --short HEAD)\` (rows \`cove-icN\`: \`[server] index_idle_close_secs = N\`, 0 keeps every index open; samples taken ${SETTLE} s after the last session was set up; argon2id ${ARGON2:-at its default cost} for the users' hashes, \`[imap]\` limits raised for the count, a fresh process for each point); Dovecot $(dovecot --version 2>/dev/null | cut -d' ' -f1) (benches/dovecot/start.sh, plaintext only, one imap process per session)."
    echo "Machine: $(nproc) CPUs, $(free -g | awk '/^Mem:/ { print $2 }') GiB RAM, $(uname -sr); load average at the end $(cut -d' ' -f1-3 /proc/loadavg); $(( $(date +%s) - T0 )) s in all."
    echo "Client: benches/idle_memory.py (asyncio, 64 sessions set up at a time): LOGIN, SELECT INBOX (empty), IDLE. Per session = (server memory with all sessions in IDLE − before) / sessions; RSS summed over the server's processes, PSS splits shared pages. *warm*: every user logged in once before the baseline (the sessions' own cost); *cold*: only one user had (the growth holds the other users' open accounts too)."
    echo
    echo "| server | TLS | sessions | users | baseline | trimmed | sessions ok | setup | RSS per session | PSS per session |"
    echo "|---|---|---:|---:|---|---|---:|---:|---:|---:|"
    while read -r l; do
        [[ $l == RESULT* ]] || continue
        cold=$(kv cold_users "$l")
        echo "| $(kv label "$l") | $([[ $(kv tls "$l") == 1 ]] && echo yes || echo no) | $(kv conns "$l") | $(kv users "$l") | $([[ $cold == 1 ]] && echo cold || echo warm) | $([[ $(kv trim "$l") == 1 ]] && echo yes || echo no) | $(kv conns_ok "$l") | $(kv setup_s "$l") s | $(kv rss_per_conn_kib "$l") KiB | $(kv pss_per_conn_kib "$l") KiB |"
    done < "$RAW"
    echo
    echo '```'
    cat "$RAW"
    echo '```'
} > "$OUT"
cat "$OUT"
