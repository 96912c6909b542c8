#!/usr/bin/env bash
# Catch-up after a peer was down (issue 15): two cove nodes on loopback.
#
#   bash benches/catchup.sh
#
# Builds cove and cove-load (release), starts node A and node B (peers of
# each other over loopback TLS, as repl.sh does), adds USERS users on A
# (`cove user import`; replication gives them to B), then stops B and
# delivers PER_USER messages to every user on A: cove-load over LOAD_CONNS
# LMTP connections, one recipient per transaction (so every message is
# distinct: its own sender, subject, body and Message-ID), once per size of
# SIZES (PER_USER / number of sizes each). LOAD_ORDER=by-user (the
# default) has each connection deliver one user's messages, then take the
# next user, so A opens each account once per size; LOAD_ORDER=round-robin
# spreads consecutive messages over the users, so with more users than
# `[server] open_accounts` every delivery reopens its account: that rate
# (140–390 msg/s at 10,000 users on 2026-12-07) is a separate figure, not
# what loading a catch-up needs.
# Then, side by side on the same data:
#   - `rsync -aH` of A's data directory through an rsync daemon on loopback
#     into an empty directory (deleted right after, to keep the disk);
#   - B started: time until B holds every message of every user. The clock
#     stops at the first check (once B has completed a session per user,
#     or both nodes' replication queues are empty) at which the totals
#     match: the message rows of every user's index on B (sqlite,
#     read-only) against A's; a sample of
#     SAMPLE users is also checked with `cove mailbox list` on B.
# Reports messages/s and MB/s (content = apparent size of A's message
# files), both nodes' CPU (user+sys), rsync's (client and daemon), load
# averages, disk used and bytes on the replication wire.
# Writes benches/results/catchup-<date>[-LABEL].md (also printed).
#
# Knobs: USERS=10000 PER_USER=100 SIZES="2048 3584" LOAD_CONNS=16 SAMPLE=20
#        LOAD_ORDER=by-user|round-robin
#        BASE_PORT=25400 KEEP=1 LABEL=x COVE_BIN=path
#        PASSWORD='{PLAIN}catchup-pw' (the passwd-file field; the default,
#        a SHA512-CRYPT hash, is stored as it is, so the import times the
#        store's work per user; a {PLAIN} one is hashed with argon2id at
#        import, ~38 ms of CPU per user)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
USERS=${USERS:-10000}
PER_USER=${PER_USER:-100}
SIZES=${SIZES:-2048 3584}
LOAD_CONNS=${LOAD_CONNS:-16}
LOAD_ORDER=${LOAD_ORDER:-by-user}
case $LOAD_ORDER in
by-user) ORDER_ARGS=(--by-user) ;;
round-robin) ORDER_ARGS=() ;;
*) echo "LOAD_ORDER must be by-user or round-robin"; exit 1 ;;
esac
SAMPLE=${SAMPLE:-20}
PASSWORD=${PASSWORD:-'{SHA512-CRYPT}$6$catchupsalt$Ce4bMVYv/HgahtGsuMum0xO1eprudSR4vT8snE9bu1ItpWYuRBex/f5ytOUYoRCCBJ3cgYovCGPrKu71USvJ4.'}
BASE_PORT=${BASE_PORT:-25400}
# shellcheck source=benches/cove_pair.sh
source "$ROOT/benches/cove_pair.sh"
pair_setup covecatchup

# CPU seconds (user+sys, with reaped children) of process PID.
cpu_secs() { # PID
    awk '{printf "%.2f", ($14 + $15 + $16 + $17) / '"$(getconf CLK_TCK)"'}' "/proc/$1/stat"
}

# One metric of a node, summed over its peers.
metric() { # NODE NAME
    curl -s "http://127.0.0.1:$(port "$1" 2)/metrics" | awk -v m="$2" '$1 ~ "^" m "[{ ]" || $1 == m {s += $2} END {printf "%d", s}'
}

# Every user's message rows in a node's indexes: "users messages".
index_totals() { # NODE
    python3 - "$DIR/$1/data/mail" <<'EOF'
import os, sqlite3, sys
users = messages = 0
for dom in os.listdir(sys.argv[1]):
    for user in os.listdir(os.path.join(sys.argv[1], dom)):
        path = os.path.join(sys.argv[1], dom, user, 'index.sqlite')
        if not os.path.exists(path):
            continue
        db = sqlite3.connect(f'file:{path}?mode=ro', uri=True)
        messages += db.execute('SELECT count(*) FROM message').fetchone()[0]
        db.close()
        users += 1
print(users, messages)
EOF
}

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
DF0=$(df -h /work | awk 'NR == 2 {print $4}')
LOAD0=$(loadavg)

# `cove user import` needs the data directory `cove serve` makes; A is
# stopped while it runs (each user made while both nodes run costs a user
# exchange and a sync of its empty mailboxes; B gets them all at once when
# the link comes up).
for n in a b; do
    write_config "$n" 1
    start "$n"
done
stop a
bench_log "adding $USERS users on A"
for ((i = 0; i < USERS; i++)); do echo "u$i@example.com:$PASSWORD::::::"; done >"$DIR/users.passwd"
U0=$(date +%s.%N)
"$COVE" --config "$DIR/a/cove.toml" user import "$DIR/users.passwd" >/dev/null
USERS_SECS=$(echo "$(date +%s.%N) - $U0" | bc -l)
start a
for _ in $(seq 600); do
    [[ $("$COVE" --config "$DIR/b/cove.toml" user list | wc -l) -ge $USERS ]] && break
    sleep 0.5
done
[[ $("$COVE" --config "$DIR/b/cove.toml" user list | wc -l) -ge $USERS ]] || { echo "B never got the users"; exit 1; }
# Let the first full syncs (empty users) finish before B goes down.
for _ in $(seq 600); do
    [[ $(metric a cove_replication_queue_users) == 0 && $(metric b cove_replication_queue_users) == 0 ]] && break
    sleep 1
done
stop b

NSIZES=$(wc -w <<<"$SIZES")
TOTAL=$((USERS * PER_USER))
LOAD_ROWS=()
for size in $SIZES; do
    count=$((TOTAL / NSIZES))
    bench_log "delivering $count messages of $size bytes to $USERS users on A"
    r=$("$LOAD" lmtp --addr "127.0.0.1:$(port a 0)" --conns "$LOAD_CONNS" --messages "$count" \
        --size "$size" --varied --rcpt-template 'u{n}@example.com' --users "$USERS" "${ORDER_ARGS[@]}" --label "fill$size" | grep '^RESULT')
    LOAD_ROWS+=("| $count × $size B | $(kv wall_s "$r") s | $(kv msgs_per_s "$r") | $(kv msgs_failed "$r") |")
    echo "${LOAD_ROWS[-1]}"
done
read -r _ MSGS_A < <(index_totals a)
[[ $MSGS_A == "$TOTAL" ]] || echo "warning: A's indexes hold $MSGS_A messages, $TOTAL delivered"
CONTENT=$(find "$DIR/a/data/mail" \( -path '*/Maildir/cur/*' -o -path '*/Maildir/new/*' \) -type f -printf '%s\n' | awk '{s += $1} END {printf "%d", s}')
# du of a running node's directory: files it removes meanwhile (an index's
# -shm when the account closes) are not an error.
disk_used() { { du -sh "$1" 2>/dev/null || true; } | cut -f1; }
DISK_A=$(disk_used "$DIR/a/data")
bench_log "A holds $MSGS_A messages, $CONTENT bytes of content, $DISK_A on disk"

start_rsyncd
sync
LOAD_R0=$(loadavg)
D0=$(cpu_secs "$RSYNCD_PID")
TIMEFORMAT='%R %U %S'
RT=$({ time rsync -aH "rsync://127.0.0.1:$RSYNC_PORT/a/" "$DIR/rsync-copy/" 2>&1 >/dev/null; } 2>&1 | tail -1)
read -r RSYNC_SECS RSYNC_U RSYNC_S <<<"$RT"
RSYNC_CPU=$(echo "$RSYNC_U + $RSYNC_S + $(cpu_secs "$RSYNCD_PID") - $D0" | bc -l)
LOAD_R1=$(loadavg)
DISK_R=$(disk_used "$DIR/rsync-copy")
FILES_R=$(find "$DIR/rsync-copy" -type f | wc -l)
bench_log "rsync -aH: $RSYNC_SECS s, $RSYNC_CPU CPU s, $DISK_R, $FILES_R files"
rm -rf "$DIR/rsync-copy"

sync
LOAD_C0=$(loadavg)
A0=$(cpu_secs "${PID[a]}")
T0=$(date +%s.%N)
start b
CHECKS=0
while true; do
    sleep 2
    kill -0 "${PID[b]}" || { echo "node b died"; tail "$DIR/b/log"; exit 1; }
    # B's own full pass done, or both queues drained (A's pass did it).
    if [[ $(metric b cove_replication_sessions_total) -lt $USERS ]]; then
        [[ $(metric b cove_replication_sessions_total) -gt 0 && $(metric a cove_replication_queue_users) == 0 &&
            $(metric b cove_replication_queue_users) == 0 ]] || continue
    fi
    T1=$(date +%s.%N)
    CHECKS=$((CHECKS + 1))
    read -r USERS_B MSGS_B < <(index_totals b)
    [[ $MSGS_B == "$MSGS_A" ]] && break
    bench_log "queues empty but B holds $MSGS_B of $MSGS_A messages; waiting"
done
CPU_B=$(cpu_secs "${PID[b]}")
CPU_A=$(echo "$(cpu_secs "${PID[a]}") - $A0" | bc -l)
LOAD_C1=$(loadavg)
COVE_SECS=$(echo "$T1 - $T0" | bc -l)
WIRE=$(metric_bytes b)
DISK_B=$(disk_used "$DIR/b/data")
SESSIONS_A=$(metric a cove_replication_sessions_total)
SESSIONS_B=$(metric b cove_replication_sessions_total)
bench_log "cove catch-up: $COVE_SECS s, CPU A $CPU_A s, B $CPU_B s"
SAMPLE_BAD=0
for ((i = 0; i < SAMPLE; i++)); do
    u="u$(((i * 7919) % USERS))@example.com"
    c=$(inbox_count b "$u")
    [[ $c == "$PER_USER" ]] || { echo "sample: $u has $c on B"; SAMPLE_BAD=$((SAMPLE_BAD + 1)); }
done
grep -c 'busy\|Busy' "$DIR/a/log" "$DIR/b/log" || true

rate() { echo "scale=0; $1 / $2" | bc -l; }
DATE=$(date +%F)
OUT="$ROOT/benches/results/catchup-$DATE${LABEL:+-$LABEL}.md"
{
    echo "# Catch-up after a peer was down, $(date -u +%FT%TZ)"
    echo
    echo "Two cove nodes (release build, \`$(git -C "$ROOT" rev-parse --short HEAD)\`) on one $(nproc)-CPU machine shared with other work, loopback TLS link (benches/catchup.sh). B stopped while A took $TOTAL messages for $USERS users ($PER_USER each; cove-load over $LOAD_CONNS LMTP connections, one recipient per transaction, every message distinct: own sender, subject, body, Message-ID; sizes $SIZES bytes, equally many of each; order $LOAD_ORDER: by-user = each connection delivers one user's messages of a size, then takes the next user, so each account is opened once per size, round-robin = consecutive messages to consecutive users); then, side by side on the same data, \`rsync -aH\` of A's data directory through an rsync daemon on loopback into an empty directory, and B started: time until B holds every message of every user (checked once B has completed a session per user or both replication queues are empty: the clock stops at the first check at which B's index rows equal A's). Content = apparent size of A's message files."
    echo
    echo "Load phase (A alone, $LOAD_ORDER):"
    echo
    echo "| delivered | wall | msgs/s | failed |"
    echo "|---|---|---|---|"
    for row in "${LOAD_ROWS[@]}"; do echo "$row"; done
    echo
    echo "| | cove catch-up (B started) | rsync -aH (daemon, loopback) | cove / rsync |"
    echo "|---|---|---|---|"
    echo "| wall time | $(printf '%.1f' "$COVE_SECS") s | $(printf '%.1f' "$RSYNC_SECS") s | $(echo "scale=2; $COVE_SECS / $RSYNC_SECS" | bc -l) |"
    echo "| messages/s | $(rate "$MSGS_A" "$COVE_SECS") | $(rate "$MSGS_A" "$RSYNC_SECS") | |"
    echo "| MB/s of content | $(mbps "$CONTENT" "$COVE_SECS") | $(mbps "$CONTENT" "$RSYNC_SECS") | |"
    echo "| CPU s (user+sys) | A $(printf '%.1f' "$CPU_A") + B $(printf '%.1f' "$CPU_B") | $(printf '%.1f' "$RSYNC_CPU") (client + daemon) | |"
    echo "| load average before → after | $LOAD_C0 → $LOAD_C1 | $LOAD_R0 → $LOAD_R1 | |"
    echo "| disk used by the copy | $DISK_B (B's data dir) | $DISK_R ($FILES_R files) | |"
    echo "| bytes on the wire | $WIRE | | |"
    echo
    echo "Users added on A with \`cove user import\` (A stopped, passwords \`${PASSWORD%%\}*}}\`) in $(printf '%.0f' "$USERS_SECS") s ($(echo "scale=0; $USERS / $USERS_SECS" | bc -l) users/s). Messages: $MSGS_A on A, $MSGS_B on B in $USERS_B user indexes; content $CONTENT bytes; A's data dir $DISK_A. Sample of $SAMPLE users checked with \`cove mailbox list\` on B: $((SAMPLE - SAMPLE_BAD)) hold all $PER_USER. Sessions completed: A $SESSIONS_A, B $SESSIONS_B; totals checked $CHECKS time(s) before they matched. Load average at the start: $LOAD0; free on /work at the start: $DF0."
} >"$OUT"
cat "$OUT"
