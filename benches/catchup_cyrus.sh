#!/usr/bin/env bash
# Catch-up of one user, Cyrus replication beside cove's (issue 15).
#
#   bash benches/catchup_cyrus.sh
#
# Cyrus: two private Cyrus IMAP 3.6 instances (benches/cyrus/start.sh), a
# primary and a replica running sync_server; the primary's imapd.conf
# names the replica (sync_host, sync_port, sync_authname, sync_password;
# sync_log off: the sync is started by hand). COUNT messages of SIZE bytes
# (cove-load --varied: every message distinct) delivered to bench0 on the
# primary over LMTP; then `rsync -aH` of the user's spool directory through
# an rsync daemon on loopback into an empty directory, and the timed
# `sync_client -S 127.0.0.1 -u bench0`; the replica's INBOX is counted over
# IMAP (STATUS MESSAGES) afterwards.
# cove, in the same run: benches/repl.sh's first sync of COUNT messages of
# SIZE bytes (two nodes, B down while A takes the mail, then started, beside
# `rsync -aH` of A's data directory through an rsync daemon), whose table is
# appended.
# Writes benches/results/catchup-cyrus-<date>[-LABEL].md (also printed).
#
# Knobs: COUNT=20000 SIZE=4096 LOAD_CONNS=4 BASE_PORT=25500 KEEP=1 LABEL=x
#        COVE_BIN=path (a cove built elsewhere)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
# shellcheck source=benches/cove_pair.sh
source "$ROOT/benches/cove_pair.sh"
COUNT=${COUNT:-20000}
SIZE=${SIZE:-4096}
LOAD_CONNS=${LOAD_CONNS:-4}
BASE_PORT=${BASE_PORT:-25500}
KEEP=${KEEP:-}
BIN=/opt/cyrus-imapd/usr/lib/cyrus/bin
[[ -n ${COVE_BIN:-} ]] || cargo build --release -q -p cove -p cove-benches --manifest-path "$ROOT/Cargo.toml"
LOAD="$ROOT/target/release/cove-load"

# Short: Cyrus's unix sockets live under it.
WORK=$(mktemp -d /tmp/cycu.XXXXXX)
chmod 755 "$WORK"
RSYNCD_PID=""
cleanup() {
    set +e
    for side in primary replica; do
        [[ -s $WORK/$side/run/master.pid ]] && bash "$ROOT/benches/cyrus/stop.sh" "$WORK/$side"
    done
    [[ -n $RSYNCD_PID ]] && kill "$RSYNCD_PID" 2>/dev/null
    if [[ -n $KEEP ]]; then bench_log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
AS_CYRUS=()
[[ $(id -u) -eq 0 ]] && AS_CYRUS=(runuser -u cyrus --)

PRIMARY=$BASE_PORT
REPLICA=$((BASE_PORT + 10))
SYNC_PORT=$((BASE_PORT + 12))
CYRUS_SERVICES_EXTRA="  syncserver cmd=\"$BIN/sync_server -C $WORK/replica/etc/imapd.conf\" listen=\"127.0.0.1:$SYNC_PORT\" prefork=1" \
    PRECREATE=0 bash "$ROOT/benches/cyrus/start.sh" "$WORK/replica" "$REPLICA" 1 >/dev/null
# The replication login: an admin of the replica (start.sh: admins: cyrus).
printf 'syncpw\n' | /usr/sbin/saslpasswd2 -f "$WORK/replica/conf/sasldb2" -p -c -u bench cyrus
[[ $(id -u) -eq 0 ]] && chown cyrus:mail "$WORK/replica/conf/sasldb2"
CYRUS_CONF_EXTRA="sync_host: 127.0.0.1
sync_port: $SYNC_PORT
sync_authname: cyrus
sync_password: syncpw
sync_log: 0" bash "$ROOT/benches/cyrus/start.sh" "$WORK/primary" "$PRIMARY" 1 >/dev/null

bench_log "delivering $COUNT messages of $SIZE bytes to bench0 on the Cyrus primary"
FILL=$("$LOAD" lmtp --addr "127.0.0.1:$PRIMARY" --conns "$LOAD_CONNS" --messages "$COUNT" \
    --size "$SIZE" --varied --rcpt-template bench0@example.com --users 1 --label cyrus-fill | grep '^RESULT')
# The user's only mailbox is its INBOX: the directory of its message 1
# (Cyrus 3 names mailbox directories by their unique id).
SPOOL=$(find "$WORK/primary/spool" -name 1. -printf '%h\n' | head -1)
[[ -d $SPOOL ]] || { echo "no message 1. in $WORK/primary/spool"; exit 1; }
CONTENT=$(find "$SPOOL" -maxdepth 1 -type f -name '[0-9]*.' -printf '%s\n' | awk '{s += $1} END {printf "%d", s}')
bench_log "primary spool $SPOOL: $CONTENT bytes of messages"

# rsync of the user's spool through a daemon on loopback, as repl.sh does
# for cove's data directory.
start_rsyncd "$SPOOL" "$WORK"
sync
TIMEFORMAT='%R'
RSYNC_SECS=$({ time rsync -aH "rsync://127.0.0.1:$RSYNC_PORT/a/" "$WORK/rsync-copy/" >/dev/null 2>&1; } 2>&1 | tail -1)
rm -rf "$WORK/rsync-copy"
bench_log "rsync -aH of the spool: $RSYNC_SECS s"

sync
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
T0=$(date +%s.%N)
"${AS_CYRUS[@]}" "$BIN/sync_client" -C "$WORK/primary/etc/imapd.conf" -S 127.0.0.1 -v -u bench0 >"$WORK/sync_client.log" 2>&1 ||
    { echo "sync_client failed:"; tail -n 20 "$WORK/sync_client.log"; tail -n 20 /var/log/syslog 2>/dev/null | grep -i cyrus; exit 1; }
T1=$(date +%s.%N)
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)
SYNC_SECS=$(echo "$T1 - $T0" | bc -l)
ON_REPLICA=$(python3 - "$((REPLICA + 1))" <<'EOF'
import imaplib, re, sys
m = imaplib.IMAP4('127.0.0.1', int(sys.argv[1]))
m.login('bench0', 'bench')
typ, data = m.status('INBOX', '(MESSAGES)')
m.logout()
print(re.search(rb'MESSAGES (\d+)', data[0]).group(1).decode())
EOF
)
bench_log "sync_client -u bench0: $SYNC_SECS s; the replica holds $ON_REPLICA"
for side in primary replica; do bash "$ROOT/benches/cyrus/stop.sh" "$WORK/$side"; done
kill "$RSYNCD_PID" 2>/dev/null
RSYNCD_PID=""
rm -rf "$WORK/primary/spool" "$WORK/replica/spool"

bench_log "cove: repl.sh first sync of ${COUNT}x$SIZE"
PARTS=first FIRST_SYNCS="${COUNT}x$SIZE" LOAD_CONNS=$LOAD_CONNS BASE_PORT=$((BASE_PORT + 50)) LABEL="catchup-cyrus-cove${LABEL:+-$LABEL}" \
    COVE_BIN="${COVE_BIN:-$ROOT/target/release/cove}" bash "$ROOT/benches/repl.sh" >"$WORK/repl.out" 2>&1 || { tail -n 30 "$WORK/repl.out"; exit 1; }
REPL_MD="$ROOT/benches/results/repl-$(date +%F)-catchup-cyrus-cove${LABEL:+-$LABEL}.md"

OUT="$ROOT/benches/results/catchup-cyrus-$(date +%F)${LABEL:+-$LABEL}.md"
{
    echo "# Catch-up of one user: Cyrus replication beside cove's, $(date -u +%FT%TZ)"
    echo
    echo "$(nproc)-CPU machine shared with other work (benches/catchup_cyrus.sh). Cyrus IMAP $("$BIN/cyr_info" -C "$WORK/primary/etc/imapd.conf" version 2>/dev/null || echo 3.6) (/opt/cyrus-imapd, benches/cyrus/start.sh): primary and replica on loopback, replica running \`sync_server\`, primary with \`sync_host\`/\`sync_port\`/\`sync_authname\`/\`sync_password\` (SASL PLAIN, no TLS), \`sync_log: 0\`. $COUNT messages of $SIZE bytes (cove-load --varied, $LOAD_CONNS LMTP connections: $(kv msgs_per_s "$FILL") msgs/s into Cyrus) delivered to bench0 on the primary, then timed \`sync_client -S 127.0.0.1 -u bench0\` to an empty replica; \`rsync -aH\` of the user's spool directory through an rsync daemon on loopback beside it. Load average before → after the sync_client run: $LOAD0 → $LOAD1."
    echo
    echo "| | Cyrus sync_client -u | rsync -aH of the spool | sync_client / rsync |"
    echo "|---|---|---|---|"
    echo "| wall time | $(printf '%.1f' "$SYNC_SECS") s | $(printf '%.1f' "$RSYNC_SECS") s | $(echo "scale=2; $SYNC_SECS / $RSYNC_SECS" | bc -l) |"
    echo "| messages/s | $(echo "scale=0; $COUNT / $SYNC_SECS" | bc -l) | $(echo "scale=0; $COUNT / $RSYNC_SECS" | bc -l) | |"
    echo "| MB/s of content | $(echo "scale=1; $CONTENT / $SYNC_SECS / 1000000" | bc -l) | $(echo "scale=1; $CONTENT / $RSYNC_SECS / 1000000" | bc -l) | |"
    echo
    echo "The replica's INBOX after sync_client (IMAP STATUS): $ON_REPLICA messages of $COUNT; content $CONTENT bytes."
    echo
    echo "cove in the same run (benches/repl.sh PARTS=first, the same count and size, two nodes, B started after A took the mail; rsync of A's whole data directory):"
    echo
    sed -n '/^| messages/,/^$/p' "$REPL_MD"
} >"$OUT"
rm -f "$REPL_MD"
cat "$OUT"
