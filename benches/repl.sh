#!/usr/bin/env bash
# Replication benchmark (issues 4 and 15): two cove nodes on loopback.
#
#   bash benches/repl.sh
#
# Builds cove and cove-load (release), starts node A and node B (each with
# LMTP, IMAP, [http] and [replication] listeners, peers of each other), then:
#   1. lag: `cove-load repl lag` delivers LAG_COUNT messages at LAG_RATE/s
#      to A while an IMAP client IDLEs on B; per message, A's 250 to B's
#      EXISTS (p50, p99, max);
#   2. first sync, for each COUNTxSIZE of FIRST_SYNCS: B stopped, COUNT
#      messages of SIZE bytes delivered to a new user on A; then, side by
#      side on the same data, `rsync -aH` of A's data directory through an
#      rsync daemon on loopback (into a copy that already holds the earlier
#      rounds, as B does), and B started: time until B's INBOX holds them
#      all, MB/s of content for both, and cove's bytes on the wire (both
#      nodes' cove_replication_bytes_*_total) beside the content B lacked;
#   3. content already held: B stopped; one 200 KiB message to FANOUT users
#      on A; B started without [replication] and the same bytes delivered to
#      the same users there; B restarted with replication: bytes on the wire
#      for the sync (no content should travel);
#   4. growth: GROWTH_ROUNDS rounds of GROWTH_PER_ROUND deliveries to one
#      user on A, all expunged on A each round; after each, both nodes'
#      index size, change-log rows and tombstones (they must stop growing).
# Writes benches/results/repl-<date>.md (also printed).
#
# Knobs: PARTS="lag first fan growth" LAG_COUNT=1000 LAG_RATE=50
#        GROWTH_ROUNDS=10 GROWTH_PER_ROUND=2000 KEEP_EXPUNGES_SECS=
#        FIRST_SYNCS="100000x4096 10000x102400" RUNS=1 (first syncs of each
#        set, each to a user of its own; the table gives every run and
#        the medians) FANOUT=100
#        LOAD_CONNS=4 BASE_PORT=25300 KEEP=1 (keep the temp dir)
#        LABEL=x (writes repl-<date>-x.md) COVE_BIN=path (a cove built
#        elsewhere, e.g. the previous commit's, instead of building one)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
LAG_COUNT=${LAG_COUNT:-1000}
LAG_RATE=${LAG_RATE:-50}
PARTS=${PARTS:-lag first fan growth}
GROWTH_ROUNDS=${GROWTH_ROUNDS:-10}
GROWTH_PER_ROUND=${GROWTH_PER_ROUND:-2000}
FIRST_SYNCS=${FIRST_SYNCS:-100000x4096 10000x102400}
RUNS=${RUNS:-1}
FANOUT=${FANOUT:-100}
LOAD_CONNS=${LOAD_CONNS:-4}
BASE_PORT=${BASE_PORT:-25300}

# shellcheck source=benches/cove_pair.sh
source "$ROOT/benches/cove_pair.sh"
pair_setup covereplbench

# A user's index: file size (with its WAL) in KiB, change-log rows, tombstones.
index_figures() { # HOME
    python3 - "$1" <<'EOF'
import os, sqlite3, sys
home = sys.argv[1]
size = sum(os.path.getsize(os.path.join(home, f)) for f in os.listdir(home) if f.startswith('index.sqlite'))
db = sqlite3.connect(f'file:{home}/index.sqlite?mode=ro', uri=True)
rows = [db.execute(f'SELECT count(*) FROM {t}').fetchone()[0] for t in ('change', 'tombstone')]
print(f'{size // 1024} | {rows[0]} | {rows[1]}', end='')
EOF
}

# `cove user add` needs a data directory that `cove serve` made.
for n in a b; do
    write_config "$n" 1
    start "$n"
done
# Added on A; replication gives them to B.
adduser a lag@example.com benchpw
adduser a growth@example.com benchpw
for set in $FIRST_SYNCS; do
    for ((run = 1; run <= RUNS; run++)); do adduser a "first${set}r$run@example.com"; done
done
for ((i = 0; i < FANOUT; i++)); do adduser a "fan$i@example.com"; done
USERS=$("$COVE" --config "$DIR/a/cove.toml" user list | wc -l)
for _ in $(seq 300); do
    [[ $("$COVE" --config "$DIR/b/cove.toml" user list | wc -l) == "$USERS" ]] && break
    sleep 0.2
done
sleep 1

has_part() { [[ " $PARTS " == *" $1 "* ]]; }

LAG="(not run)"
if has_part lag; then
    echo "== 1. lag at $LAG_RATE/s"
    LAG=$("$LOAD" repl lag --lmtp "127.0.0.1:$(port a 0)" --imap "127.0.0.1:$(port b 1)" \
        --user lag@example.com --password benchpw --rate "$LAG_RATE" --count "$LAG_COUNT" --label lag | tee /dev/stderr | grep '^RESULT')
fi

# rsync side by side: a daemon serving A's data directory on loopback.
if has_part first; then start_rsyncd; fi

# Messages in a user's index on a node, read-only. The first sync's poll:
# `cove mailbox list` (inbox_count) opens the account in a process of its
# own and scans the whole Maildir twice, five times a second, beside the
# sync it measures (rsync has no such load); a read of the index costs a
# count.
indexed_count() { # NODE USER
    local user=$2
    python3 - "$DIR/$1/data/mail/${user#*@}/${user%@*}/index.sqlite" <<'PY'
import sqlite3, sys
try:
    db = sqlite3.connect(f'file:{sys.argv[1]}?mode=ro', uri=True)
    print(db.execute('SELECT count(*) FROM message').fetchone()[0])
except sqlite3.Error:
    print(0)
PY
}

FIRST_ROWS=()
first_sync() { # COUNT SIZE RUN
    local count=$1 size=$2 user="first${1}x${2}r$3@example.com"
    local home="$DIR/a/data/mail/example.com/${user%@example.com}/Maildir"
    echo "== 2. first sync of $count messages of $size bytes"
    stop b
    "$LOAD" lmtp --addr "127.0.0.1:$(port a 0)" --conns "$LOAD_CONNS" --messages "$count" \
        --size "$size" --varied --rcpt-template "$user" --users 1 --label fill >/dev/null
    local lacked r0 r1 t0 t1 bytes1 rsync_secs secs wire
    lacked=$(du -sb --apparent-size "$home/cur" "$home/new" 2>/dev/null | awk '{s += $1} END {print s}')
    sync
    r0=$(date +%s.%N)
    rsync -aH "rsync://127.0.0.1:$RSYNC_PORT/a/" "$DIR/rsync-copy/"
    r1=$(date +%s.%N)
    rsync_secs=$(echo "$r1 - $r0" | bc -l)
    echo "rsync -aH: $rsync_secs s"
    sync
    t0=$(date +%s.%N)
    # B starts from zero: its counters are this sync's traffic (A's
    # accepting side counts a session only when the next one starts).
    start b
    while [[ $(indexed_count b "$user") != "$count" ]]; do
        sleep 0.2
        kill -0 "${PID[b]}" || { echo "node b died"; tail "$DIR/b/log"; exit 1; }
    done
    t1=$(date +%s.%N)
    sleep 2
    bytes1=$(metric_bytes b)
    secs=$(echo "$t1 - $t0" | bc -l)
    wire=$bytes1
    echo "first sync: $secs s, $wire bytes on the wire, content lacked $lacked bytes; load average $(cut -d" " -f1-3 /proc/loadavg)"
    # Where the time went (each session's content and apply milliseconds).
    grep -h "replicated.*user=$user" "$DIR/a/log" "$DIR/b/log" || true
    FIRST_ROWS+=("| $count × $size B | $(printf '%.1f' "$secs") s | $(mbps "$lacked" "$secs") | $(printf '%.1f' "$rsync_secs") s | $(mbps "$lacked" "$rsync_secs") | $wire | $lacked | $(echo "scale=4; $wire / $lacked" | bc -l) |")
}

if has_part first; then
    for set in $FIRST_SYNCS; do
        for ((run = 1; run <= RUNS; run++)); do first_sync "${set%x*}" "${set#*x}" "$run"; done
    done
    rm -rf "$DIR/rsync-copy"
fi

FAN_BYTES="(not run)"
if has_part fan; then
echo "== 3. fan-out whose content the peer already holds"
stop b
"$LOAD" lmtp --addr "127.0.0.1:$(port a 0)" --messages 1 --size 200k --same-content \
    --rcpt-template 'fan{n}@example.com' --users "$FANOUT" --rcpts-per-txn "$FANOUT" --label fan-a >/dev/null
# The same bytes on B (cove-load's --same-content differs between runs):
# deliver A's stored file, less the Return-Path cove put in front.
SAMPLE=$(find "$DIR/a/data/mail/example.com/fan0/Maildir/new" -type f | head -1)
write_config b 0
start b
python3 - "$(port b 0)" "$SAMPLE" "$FANOUT" <<'EOF'
import smtplib, sys
port, path, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
data = open(path, 'rb').read()
# cove put Return-Path in front; B adds its own, the same.
if data.startswith(b'Return-Path:'):
    data = data.split(b'\r\n', 1)[1]
s = smtplib.LMTP('127.0.0.1', port)
s.sendmail('load@bench.example', [f'fan{i}@example.com' for i in range(n)], data)
s.quit()
EOF
stop b
write_config b 1
BYTES_A0=$(metric_bytes a)
start b
for ((i = 0; i < FANOUT; i++)); do
    while [[ $(inbox_count b "fan$i@example.com") != 2 ]]; do sleep 0.2; done
done
sleep 2
BYTES_A1=$(metric_bytes a)
FAN_BYTES=$((BYTES_A1 - BYTES_A0))
echo "fan-out held on both: $FAN_BYTES bytes on the wire for $((2 * FANOUT)) messages"

fi


GROWTH_ROWS=()
if has_part growth; then
    echo "== 4. index growth: $GROWTH_ROUNDS rounds of $GROWTH_PER_ROUND deliveries to A, all expunged on A"
    home_a="$DIR/a/data/mail/example.com/growth"
    home_b="$DIR/b/data/mail/example.com/growth"
    for ((r = 1; r <= GROWTH_ROUNDS; r++)); do
        "$LOAD" lmtp --addr "127.0.0.1:$(port a 0)" --conns "$LOAD_CONNS" --messages "$GROWTH_PER_ROUND" \
            --size 2048 --varied --rcpt-template growth@example.com --users 1 --label growth >/dev/null
        python3 - "$(port a 1)" <<'EOF'
import imaplib, sys
m = imaplib.IMAP4('127.0.0.1', int(sys.argv[1]))
m.login('growth@example.com', 'benchpw')
m.select('INBOX')
m.store('1:*', '+FLAGS.SILENT', '(\\Deleted)')
m.expunge()
m.logout()
EOF
        for _ in $(seq 600); do
            [[ $(inbox_count b growth@example.com) == 0 && $(inbox_count a growth@example.com) == 0 ]] && break
            sleep 0.2
        done
        sleep 1
        GROWTH_ROWS+=("| $r | $((r * GROWTH_PER_ROUND)) | $(index_figures "$home_a") | $(index_figures "$home_b") |")
        echo "${GROWTH_ROWS[-1]}"
    done
fi

DATE=$(date +%F)
OUT="$ROOT/benches/results/repl-$DATE${LABEL:+-$LABEL}.md"
{
    echo "# Replication, $(date -u +%FT%TZ)"
    echo
    echo "Two cove nodes (release build) on one $(nproc)-CPU machine, loopback TLS link; load average $(cut -d' ' -f1-3 /proc/loadavg)."
    echo
    if has_part lag || has_part fan; then
        echo "| figure | value |"
        echo "|---|---|"
        has_part lag && echo "| lag A 250 -> B IDLE EXISTS, $LAG_COUNT deliveries at $LAG_RATE/s: p50 | $(kv p50_ms "$LAG") ms |"
        has_part lag && echo "| lag p99 | $(kv p99_ms "$LAG") ms |"
        has_part lag && echo "| lag max | $(kv max_ms "$LAG") ms |"
        has_part fan && echo "| fan-out of 200 KiB to $FANOUT users delivered on both nodes: bytes on the wire | $FAN_BYTES |"
        echo
    fi
    if has_part first; then
        echo "First sync of one user to an empty peer (B stopped while A took the mail, then started; time until B's INBOX holds every message), beside \`rsync -aH\` of A's data directory through an rsync daemon on loopback into a copy holding the earlier rounds; MB/s = content B lacked / time:"
        echo
        echo "| messages | cove | cove MB/s | rsync -aH | rsync MB/s | cove bytes on the wire | content lacked | wire / content |"
        echo "|---|---|---|---|---|---|---|---|"
        for row in "${FIRST_ROWS[@]}"; do echo "$row"; done
        echo
    fi
    if has_part growth; then
        echo "Index growth: rounds of $GROWTH_PER_ROUND deliveries of 2 KiB to one user on A, then all of them expunged on A (IMAP STORE \\Deleted, EXPUNGE), B replicating; after each round, once both INBOXes are empty: each node's index.sqlite (+WAL) size, change-log rows and tombstones (keep_expunges_secs = ${KEEP_EXPUNGES_SECS:-default}):"
        echo
        echo "| round | deliveries so far | A KiB | A change rows | A tombstones | B KiB | B change rows | B tombstones |"
        echo "|---|---|---|---|---|---|---|---|"
        for row in "${GROWTH_ROWS[@]}"; do echo "$row"; done
        echo
    fi
    if has_part lag; then
        echo '```'
        echo "$LAG"
        echo '```'
    fi
} >"$OUT"
cat "$OUT"
