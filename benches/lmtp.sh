#!/usr/bin/env bash
# LMTP benchmark matrix: cove, Dovecot and Cyrus side by side, in one run.
#
#   bash benches/lmtp.sh
#
# Builds cove and cove-load (release), starts cove, a private Dovecot
# (benches/dovecot/start.sh) and a private Cyrus IMAP (benches/cyrus/start.sh)
# under a temp dir, runs every point of the matrix for each server in turn,
# REPS times, and writes the medians as a markdown
# table to benches/results/lmtp-<date>.md (also printed).
#
# Knobs (environment):
#   SERVERS="cove dovecot cyrus"  which servers to measure (e.g. SERVERS=dovecot)
#   REPS=3                  repetitions per point (the table shows medians)
#   N4K=3000 N100K=500      messages per 4 KiB / 100 KiB point
#   CONNS="1 4 16"          connection counts
#   USERS=100               users the single-recipient points rotate over
#   FANOUT=100              recipients of the 200 KiB fan-out points
#   COVE_PORT=24300 DOVECOT_PORT=24400 CYRUS_PORT=28500
#                           (Dovecot also uses +1 IMAP, +2 POP3; Cyrus +1 IMAP)
#   KEEP=1                  keep the temp dir (data, logs) afterwards
#   COVE_DURABILITY=batched cove's [server] durability ("batched" or "fsync")
#   COVE_INDEX_NEW_MAIL=true cove's [server] index_new_mail (background parse
#                           of new mail; false: as before 2026-12-07)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
SERVERS=${SERVERS:-"cove dovecot cyrus"}
REPS=${REPS:-3}
N4K=${N4K:-3000}
N100K=${N100K:-500}
CONNS=${CONNS:-"1 4 16"}
USERS=${USERS:-100}
FANOUT=${FANOUT:-100}
COVE_PORT=${COVE_PORT:-24300}
COVE_DURABILITY=${COVE_DURABILITY:-batched}
COVE_INDEX_NEW_MAIL=${COVE_INDEX_NEW_MAIL:-true}
DOVECOT_PORT=${DOVECOT_PORT:-24400}
CYRUS_PORT=${CYRUS_PORT:-28500}
KEEP=${KEEP:-0}

LOAD=$ROOT/target/release/cove-load
COVE=$ROOT/target/release/cove
NUSERS=$(( USERS > FANOUT ? USERS : FANOUT ))

log() { echo "== $*" >&2; }

# ---------------------------------------------------------------- build
pkgs=(-p cove-benches)
[[ " $SERVERS " == *" cove "* ]] && pkgs+=(-p cove)
log "cargo build --release ${pkgs[*]}"
(cd "$ROOT" && cargo build --release "${pkgs[@]}")

# Short path: Dovecot's unix sockets live under it.
WORK=$(mktemp -d /tmp/covebench.XXXXXX)
chmod 755 "$WORK" # Dovecot's unprivileged processes must enter it
RES=$WORK/results
mkdir -p "$RES"
COVE_PID=""
DOVECOT_PID=""
CYRUS_PID=""

cleanup() {
    set +e
    stop_cove
    [[ -n $DOVECOT_PID ]] && bash "$ROOT/benches/dovecot/stop.sh" "$WORK/dovecot"
    [[ -n $CYRUS_PID ]] && bash "$ROOT/benches/cyrus/stop.sh" "$WORK/cyrus"
    if [[ $KEEP == 1 ]]; then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

# ---------------------------------------------------------------- servers
start_cove() {
    local conf=$WORK/cove.toml
    cat > "$conf" <<EOF
data_dir = "$WORK/cove-data"
hostname = "bench"

[server]
durability = "$COVE_DURABILITY"
index_new_mail = $COVE_INDEX_NEW_MAIL

[lmtp]
listen = ["127.0.0.1:$COVE_PORT"]
EOF
    log "cove: adding $NUSERS users"
    mkdir -p "$WORK/cove-data" # admin commands refuse a missing data directory
    local n
    for ((n = 0; n < NUSERS; n++)); do
        if ! "$COVE" user add "bench$n@example.com" --config "$conf" </dev/null >>"$WORK/cove-useradd.log" 2>&1; then
            echo "cove user add bench$n@example.com failed:" >&2
            tail -n 5 "$WORK/cove-useradd.log" >&2
            exit 1
        fi
    done
    "$COVE" serve --config "$conf" >"$WORK/cove.log" 2>&1 &
    COVE_PID=$!
    if ! wait_port "$COVE_PORT" "$COVE_PID" 30; then
        echo "cove did not accept LMTP connections on 127.0.0.1:$COVE_PORT; its log:" >&2
        tail -n 30 "$WORK/cove.log" >&2
        exit 1
    fi
    log "cove: pid $COVE_PID, lmtp 127.0.0.1:$COVE_PORT, data $WORK/cove-data"
}

start_dovecot() {
    DOVECOT_PID=$(bash "$ROOT/benches/dovecot/start.sh" "$WORK/dovecot" "$DOVECOT_PORT" "$NUSERS")
}

# server -> "addr pid datadir"
server_info() {
    case $1 in
        cove) echo "127.0.0.1:$COVE_PORT $COVE_PID $WORK/cove-data" ;;
        dovecot) echo "127.0.0.1:$DOVECOT_PORT $DOVECOT_PID $WORK/dovecot/mail" ;;
        cyrus) echo "127.0.0.1:$CYRUS_PORT $CYRUS_PID $WORK/cyrus/spool" ;;
    esac
}

for s in $SERVERS; do
    case $s in
        cove) start_cove ;;
        dovecot) start_dovecot ;;
        cyrus) start_cyrus_too "$NUSERS" ;;
        *) echo "unknown server $s (known: cove dovecot cyrus)" >&2; exit 2 ;;
    esac
done

# ---------------------------------------------------------------- measuring
# Message files of all Maildirs (INBOX and Maildir++ folders), or of Cyrus's
# spool (one file "<uid>." per message): prints
# "FILES INODES KIB" = number of files, distinct inodes, and KiB allocated to
# those inodes (each counted once: hard links are the same storage).
mail_stats() {
    find "$1" -type f \( -regex '.*/Maildir/\(\.[^/]*/\)?\(cur\|new\)/[^/]*' -o -regex '.*/spool/.*/[0-9]+\.' \) -printf '%i %b\n' |
        awk '{ files++; if (!($1 in seen)) { seen[$1] = 1; inodes++; blocks += $2 } }
             END { printf "%d %d %d\n", files, inodes, blocks / 2 }'
}
# Files that vanish while du walks (SQLite's -wal and -shm) are not an error.
disk_kib() { { du -sk "$1" 2>/dev/null || true; } | cut -f1; }


FAILED=0
RAW=$WORK/raw.txt
: > "$RAW"

# run_point ID SERVER LABEL cove-load-args...
run_point() {
    local id=$1 server=$2 label=$3
    shift 3
    local addr pid data
    read -r addr pid data <<<"$(server_info "$server")"
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "$server (pid $pid) is not running any more" >&2
        exit 1
    fi
    local du0 f0 in0 k0 out rc=0
    du0=$(disk_kib "$data"); read -r f0 in0 k0 <<<"$(mail_stats "$data")"
    out=$("$LOAD" lmtp --addr "$addr" --server-pid "$pid" --label "$server $label" "$@") || rc=$?
    local result
    result=$(grep '^RESULT ' <<<"$out" || true)
    grep -v '^RESULT ' <<<"$out" >&2 || true
    echo "$result" >> "$RAW"
    local du1 f1 in1 k1
    du1=$(disk_kib "$data"); read -r f1 in1 k1 <<<"$(mail_stats "$data")"
    local p=$RES/$id.$server
    if [[ $rc -ne 0 || -z $result ]]; then
        FAILED=1
        echo "FAILED: $server $label (cove-load exit $rc)" >&2
        echo 1 >> "$p.failed"
        return
    fi
    local dok
    dok=$(kv deliveries_ok "$result")
    kv msgs_per_s "$result" >> "$p.msgs_per_s"
    kv deliveries_per_s "$result" >> "$p.deliveries_per_s"
    kv wall_s "$result" >> "$p.wall_s"
    kv p50_ms "$result" >> "$p.p50_ms"
    kv p99_ms "$result" >> "$p.p99_ms"
    kv cpu_ms_per_msg "$result" >> "$p.cpu_ms_per_msg"
    kv cpu_ms_per_delivery "$result" >> "$p.cpu_ms_per_delivery"
    echo $((du1 - du0)) >> "$p.disk_kib"
    awk -v d=$((du1 - du0)) -v n="$dok" 'BEGIN { printf "%.2f\n", d / n }' >> "$p.disk_kib_per_delivery"
    echo $((k1 - k0)) >> "$p.mail_kib"
    awk -v d=$((k1 - k0)) -v n="$dok" 'BEGIN { printf "%.2f\n", d / n }' >> "$p.mail_kib_per_delivery"
    echo $((in1 - in0)) >> "$p.inodes"
    echo $((f1 - f0)) >> "$p.files"
}

median() { # FILE FORMAT
    if [[ ! -s $1 ]]; then echo "n/a"; return; fi
    sort -g "$1" | awk -v fmt="$2" '{ a[NR] = $1 } END {
        m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
        printf fmt "\n", m }'
}

cell() { # ID SERVER METRIC FORMAT
    local p=$RES/$1.$2
    if [[ -s $p.failed ]]; then echo "FAIL"; else median "$p.$3" "$4"; fi
}

# ---------------------------------------------------------------- matrix
# id|label|cove-load args (users rotate round-robin)
POINTS=()
for c in $CONNS; do
    POINTS+=("4k-c$c|4 KiB, $c conn|--size 4096 --conns $c --messages $N4K --users $USERS")
done
for c in $CONNS; do
    POINTS+=("100k-c$c|100 KiB, $c conn|--size 100k --conns $c --messages $N100K --users $USERS")
done
FAN_ONE="fan-1txn|200 KiB to $FANOUT rcpts, 1 txn|--size 200k --conns 1 --messages 1 --users $FANOUT --rcpts-per-txn $FANOUT"
FAN_MANY="fan-${FANOUT}txn|200 KiB to $FANOUT rcpts, $FANOUT txns, same content|--size 200k --conns 1 --messages $FANOUT --users $FANOUT --same-content"
POINTS+=("$FAN_ONE" "$FAN_MANY")

# Warm-up (not recorded): processes forked, caches and indexes warm.
for s in $SERVERS; do
    read -r addr _ _ <<<"$(server_info "$s")"
    log "warm-up $s"
    "$LOAD" lmtp --addr "$addr" --conns 4 --messages 200 --users "$NUSERS" --label "$s warm-up" >/dev/null ||
        { echo "warm-up deliveries to $s failed (ERROR lines above)" >&2; exit 1; }
done

START=$(date +%s)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for pt in "${POINTS[@]}"; do
    IFS='|' read -r id label args <<<"$pt"
    for ((r = 1; r <= REPS; r++)); do
        for s in $SERVERS; do
            log "$label — $s — rep $r/$REPS"
            # shellcheck disable=SC2086 # args is a word list on purpose
            run_point "$id" "$s" "$label" $args
        done
    done
done
ELAPSED=$(( $(date +%s) - START ))
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report
DATE=$(date +%Y-%m-%d)
OUTDIR=$ROOT/benches/results
mkdir -p "$OUTDIR"
OUT=$OUTDIR/lmtp-$DATE.md
k=2
while [[ -e $OUT ]]; do OUT=$OUTDIR/lmtp-$DATE-$k.md; k=$((k + 1)); done

cove_rev=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo "uncommitted")
dovecot_ver=$(dovecot --version 2>/dev/null | cut -d' ' -f1 || echo "?")
cyrus_ver=$(dpkg-query -W -f '${Version}' cyrus-common 2>/dev/null || echo "?")
fs=$(df -T "$WORK" | awk 'NR == 2 { print $2 }')

{
    echo "# LMTP benchmark, $DATE"
    echo
    echo "Servers: $SERVERS. cove at \`$cove_rev\` (durability = $COVE_DURABILITY, index_new_mail = $COVE_INDEX_NEW_MAIL)$(cd "$ROOT" && [[ -n $(git status --porcelain 2>/dev/null | head -1) ]] && echo ' (working tree had uncommitted changes)'); Dovecot $dovecot_ver (Maildir, \`mail_fsync = always\`); Cyrus IMAP $cyrus_ver (benches/cyrus/start.sh: its own spool and skiplist/twoskip databases, preauthenticated \`lmtpd -a\`, duplicate suppression off, its default durability: see benches/results/lmtp-syscalls-* for its flushes per message)."
    echo "Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(uname -sr), data on $fs."
    echo "Load generator \`cove-load\` on the same machine (one thread). Median of $REPS runs per point, the servers alternating; $ELAPSED s of measuring. Load average (1/5/15 min) before: $LOAD_BEFORE, after: $LOAD_AFTER (anything well above what the benchmark itself adds means other work shared the CPUs)."
    echo
    echo "## Single recipient per message ($USERS users, round-robin)"
    echo
    echo "CPU = server CPU time (user+sys of the server process and all its descendants, incl. reaped children) per message. Disk = growth of \`du\` of the whole data dir per message (message files, indexes, logs: SQLite WAL files and Dovecot's index logs grow during a run and are reused later); files = allocated size of the new message files in the Maildirs per message (hard links counted once)."
    echo
    echo "| point | server | msgs/s | p50 ms | p99 ms | CPU ms/msg | disk KiB/msg | files KiB/msg |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|"
    for pt in "${POINTS[@]}"; do
        IFS='|' read -r id label _ <<<"$pt"
        [[ $id == fan-* ]] && continue
        for s in $SERVERS; do
            echo "| $label | $s | $(cell "$id" "$s" msgs_per_s %.0f) | $(cell "$id" "$s" p50_ms %.2f) | $(cell "$id" "$s" p99_ms %.2f) | $(cell "$id" "$s" cpu_ms_per_msg %.3f) | $(cell "$id" "$s" disk_kib_per_delivery %.1f) | $(cell "$id" "$s" mail_kib_per_delivery %.1f) |"
        done
    done
    echo
    echo "## Fan-out: one 200 KiB message to $FANOUT recipients"
    echo
    echo "Once as one transaction with $FANOUT RCPTs, once as $FANOUT transactions with byte-identical content. Disk = growth of \`du\` of the whole data dir (incl. indexes); files and inodes = new message files in the Maildirs and their distinct inodes (1 inode = stored once, hard-linked); files KiB = space allocated to those inodes; CPU per delivered copy."
    echo
    echo "| point | server | wall s | deliveries/s | CPU ms/delivery | disk KiB | files | inodes | files KiB |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
    for pt in "$FAN_ONE" "$FAN_MANY"; do
        IFS='|' read -r id label _ <<<"$pt"
        for s in $SERVERS; do
            echo "| $label | $s | $(cell "$id" "$s" wall_s %.3f) | $(cell "$id" "$s" deliveries_per_s %.0f) | $(cell "$id" "$s" cpu_ms_per_delivery %.3f) | $(cell "$id" "$s" disk_kib %.0f) | $(cell "$id" "$s" files %.0f) | $(cell "$id" "$s" inodes %.0f) | $(cell "$id" "$s" mail_kib %.0f) |"
        done
    done
    echo
    echo "<details><summary>Raw RESULT lines</summary>"
    echo
    echo '```'
    cat "$RAW"
    echo '```'
    echo
    echo "</details>"
} > "$OUT"

echo
cat "$OUT"
echo
log "written to ${OUT#"$ROOT"/}"
if [[ $FAILED -ne 0 ]]; then
    log "some runs FAILED (see FAIL cells and the ERROR lines above)"
    exit 1
fi
