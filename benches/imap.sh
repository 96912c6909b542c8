#!/usr/bin/env bash
# IMAP benchmark (issue 3): cove and Dovecot (and Cyrus) side by side, in one run.
#
#   bash benches/imap.sh
#
# Builds cove and cove-load (release), starts cove and a private Dovecot
# (benches/dovecot/start.sh) under a temp dir, loads MESSAGES varied 4 KiB
# messages into bench0's INBOX on each (LMTP), then:
#   - `cove-load imap ops` on that INBOX: once right after the load
#     (--first), once more (repeat), cove and Dovecot alternating;
#   - `cove-load imap idle` with IDLE_CONNS connections to bench1's INBOX
#     (IDLE_SEED messages): server memory per idle connection and the delay
#     until every connection sees EXISTS after one LMTP delivery.
# Writes a markdown table to benches/results/imap-<date>.md (also printed).
#
# Knobs (environment):
#   SERVERS="cove dovecot"   which servers to measure; "cyrus" adds Cyrus IMAP
#                            (benches/cyrus/start.sh) to the operations (not
#                            to the idle points)
#   MESSAGES=100000 SIZE=4096 messages loaded into the big INBOX
#   TOKEN_EVERY=1000         one message in N has the subject token, one the
#                            body token (SEARCH hits = MESSAGES / N each)
#   LOAD_CONNS=4             LMTP connections per server while loading
#   DOVECOT_LOAD=lmtp        lmtp: Dovecot's big INBOX is delivered over LMTP
#                            (~110 msg/s here: 15 min for 100,000); copy: the
#                            message files cove stored are copied into
#                            Dovecot's Maildir instead (same bytes; Dovecot
#                            indexes them at its first SELECT, like a
#                            migrated mailbox). Needs cove in SERVERS.
#   CYRUS_LOAD=lmtp          the same for Cyrus (~40-75 msg/s here: 100,000
#                            take 25-40 min); copy: cove's files copied into
#                            Cyrus's INBOX and indexed by `reconstruct`
#                            before the operations (Cyrus parses every
#                            message into cyrus.cache then, as at delivery).
#   PEEK=1000                random BODY.PEEK[] fetches (each way)
#   ONLY=                    run only these groups of operations, comma-
#                            separated: fetch,search,store,peek (empty: all;
#                            SELECT always runs); e.g. ONLY=store IDLE_CONNS=
#   IDLE_CONNS="1000 10000"  idle connection counts (empty: no idle points)
#   IDLE_SEED=10             messages in the idle user's INBOX
#   COVE_SHIPPED_IDLE_CONNS=0    an extra idle point of cove as built (0: skip)
#   COVE_IDLE_TUNABLES=      GLIBC_TUNABLES for cove in the IDLE_CONNS points
#                            (empty: as built; cove fixes its mmap threshold itself
#                            since the first run, see benches/README.md)
#                            (cove is restarted with it); empty: as built.
#                            Why: as built, cove's RSS grows ~12 MiB per
#                            login (argon2's 19 MiB buffers stay in glibc's
#                            arenas), so 1,000+ connections do not fit.
#   COVE_MAX_RSS_MIB=4096    abort an idle point once cove's RSS passes this
#   MIN_MEM_AVAILABLE_MIB=3072  abort an idle point below this MemAvailable
#   SOURCES=8                idle connections spread over 127.0.0.2..(1+N)
#   RAISE_INOTIFY=1          as root, raise fs.inotify.max_user_instances for
#                            the run (Dovecot's imap processes need one each;
#                            the old value is restored at exit)
#   COVE_PORT=24500 DOVECOT_PORT=24600 CYRUS_PORT=28700  LMTP ports; IMAP is PORT+1
#   COVE_DURABILITY=batched  cove's [server] durability
#   COVE_INDEX_NEW_MAIL=true cove's [server] index_new_mail (false: views and
#                            full text made at first use, as before 2026-12-07)
#   COVE_FULLTEXT_NEW_MAIL=true  cove's [server] fulltext_new_mail (the
#                            bench's user never searched before: false means
#                            its first SEARCH BODY builds the index)
#   SORTS=0                  1: after the operations, benches/imap_sort.py
#                            (no load) on each server's big INBOX: SORT
#                            (ARRIVAL/DATE/SUBJECT/FROM), THREAD and SEARCH
#                            SUBJECT, first of the process and warm (median
#                            of 3), answers hashed (equal hashes: same answer)
#   COVE_BIN= LOAD_BIN=      use these binaries instead of building
#                            target/release/{cove,cove-load} (a copy keeps a
#                            long run safe from a rebuild meanwhile)
#   KEEP=1                   keep the temp dir (data, logs) afterwards
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
SERVERS=${SERVERS:-"cove dovecot"}
MESSAGES=${MESSAGES:-100000}
SIZE=${SIZE:-4096}
TOKEN_EVERY=${TOKEN_EVERY:-1000}
SUBJECT_TOKEN=marzipan
BODY_TOKEN=kumquat
LOAD_CONNS=${LOAD_CONNS:-4}
DOVECOT_LOAD=${DOVECOT_LOAD:-lmtp}
CYRUS_LOAD=${CYRUS_LOAD:-lmtp}
PEEK=${PEEK:-1000}
ONLY=${ONLY:-}
IDLE_CONNS=${IDLE_CONNS-"1000 10000"}
IDLE_SEED=${IDLE_SEED:-10}
COVE_SHIPPED_IDLE_CONNS=${COVE_SHIPPED_IDLE_CONNS:-0}
COVE_IDLE_TUNABLES=${COVE_IDLE_TUNABLES-}
COVE_MAX_RSS_MIB=${COVE_MAX_RSS_MIB:-4096}
MIN_MEM_AVAILABLE_MIB=${MIN_MEM_AVAILABLE_MIB:-3072}
SOURCES=${SOURCES:-8}
RAISE_INOTIFY=${RAISE_INOTIFY:-1}
COVE_PORT=${COVE_PORT:-24500}
DOVECOT_PORT=${DOVECOT_PORT:-24600}
CYRUS_PORT=${CYRUS_PORT:-28700}
COVE_DURABILITY=${COVE_DURABILITY:-batched}
COVE_INDEX_NEW_MAIL=${COVE_INDEX_NEW_MAIL:-true}
COVE_FULLTEXT_NEW_MAIL=${COVE_FULLTEXT_NEW_MAIL:-true}
KEEP=${KEEP:-0}

SORTS=${SORTS:-0}
LOAD=${LOAD_BIN:-$ROOT/target/release/cove-load}
COVE=${COVE_BIN:-$ROOT/target/release/cove}
PASS=bench
T0=$(date +%s)

log() { echo "== $(date +%T) $*" >&2; }
has() { [[ " $SERVERS " == *" $1 "* ]]; }

for s in $SERVERS; do
    [[ $s == cove || $s == dovecot || $s == cyrus ]] || { echo "unknown server $s (known: cove dovecot cyrus)" >&2; exit 2; }
done

# ---------------------------------------------------------------- limits
MAX_IDLE=0
for c in $IDLE_CONNS $COVE_SHIPPED_IDLE_CONNS; do (( c > MAX_IDLE )) && MAX_IDLE=$c; done
# One descriptor per connection in cove-load and in cove.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
NOTES=()
if (( NOFILE < MAX_IDLE + 500 )); then
    kept=""
    for c in $IDLE_CONNS; do
        if (( c + 500 <= NOFILE )); then kept+="$c "; else
            NOTES+=("Idle point of $c connections skipped: \`ulimit -n\` is $NOFILE here and cannot be raised (no CAP_SYS_RESOURCE).")
        fi
    done
    IDLE_CONNS=$kept
    log "ulimit -n is $NOFILE: idle points limited to: $IDLE_CONNS"
fi
MAX_IDLE=0
for c in $IDLE_CONNS $COVE_SHIPPED_IDLE_CONNS; do (( c > MAX_IDLE )) && MAX_IDLE=$c; done

INOTIFY=/proc/sys/fs/inotify/max_user_instances
INOTIFY_OLD=""
if has dovecot && [[ -r $INOTIFY ]] && (( $(cat $INOTIFY) < MAX_IDLE + 200 )); then
    if [[ $RAISE_INOTIFY == 1 && -w $INOTIFY ]]; then
        INOTIFY_OLD=$(cat $INOTIFY)
        echo $((MAX_IDLE + 1000)) > $INOTIFY
        log "fs.inotify.max_user_instances $INOTIFY_OLD -> $(cat $INOTIFY) for this run (restored at exit)"
        NOTES+=("\`fs.inotify.max_user_instances\` was raised from $INOTIFY_OLD to $(cat $INOTIFY) for the run (Dovecot's imap processes each need an inotify instance to notice new mail in IDLE; past the limit they poll every 30 s).")
    else
        NOTES+=("\`fs.inotify.max_user_instances\` is $(cat $INOTIFY): Dovecot's imap processes beyond that poll for new mail every 30 s instead of using inotify, which shows in its EXISTS delays.")
    fi
fi

# ---------------------------------------------------------------- build
pkgs=(-p cove-benches)
has cove && pkgs+=(-p cove)
if [[ -z ${COVE_BIN:-} || -z ${LOAD_BIN:-} ]]; then
    log "cargo build --release ${pkgs[*]}"
    (cd "$ROOT" && cargo build --release "${pkgs[@]}")
fi

# Short path: Dovecot's unix sockets live under it.
WORK=$(mktemp -d /tmp/covebench.XXXXXX)
chmod 755 "$WORK" # Dovecot's unprivileged processes must enter it
COVE_PID=""
DOVECOT_PID=""
CYRUS_PID=""

cleanup() {
    set +e
    stop_cove
    [[ -n $DOVECOT_PID ]] && bash "$ROOT/benches/dovecot/stop.sh" "$WORK/dovecot"
    [[ -n $CYRUS_PID ]] && bash "$ROOT/benches/cyrus/stop.sh" "$WORK/cyrus"
    [[ -n $INOTIFY_OLD ]] && echo "$INOTIFY_OLD" > $INOTIFY
    if [[ $KEEP == 1 ]]; then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

# ---------------------------------------------------------------- servers
COVE_CONF=$WORK/cove.toml
COVE_TUNED=""
start_cove() { # [GLIBC_TUNABLES]
    local tun=${1:-}
    if [[ -n $tun ]]; then
        GLIBC_TUNABLES=$tun "$COVE" serve --config "$COVE_CONF" >>"$WORK/cove.log" 2>&1 &
    else
        "$COVE" serve --config "$COVE_CONF" >>"$WORK/cove.log" 2>&1 &
    fi
    COVE_PID=$!
    COVE_TUNED=$tun
    if ! wait_port $((COVE_PORT + 1)) "$COVE_PID" 30; then
        echo "cove did not accept IMAP connections on 127.0.0.1:$((COVE_PORT + 1)); its log:" >&2
        tail -n 30 "$WORK/cove.log" >&2
        exit 1
    fi
    log "cove: pid $COVE_PID${tun:+ (GLIBC_TUNABLES=$tun)}, lmtp :$COVE_PORT, imap :$((COVE_PORT + 1))"
}

setup_cove() {
    local limit=$((MAX_IDLE + 1000))
    cat > "$COVE_CONF" <<EOF
data_dir = "$WORK/cove-data"
hostname = "bench"

[server]
durability = "$COVE_DURABILITY"
index_new_mail = $COVE_INDEX_NEW_MAIL
fulltext_new_mail = $COVE_FULLTEXT_NEW_MAIL

[lmtp]
listen = ["127.0.0.1:$COVE_PORT"]

[imap]
listen = ["127.0.0.1:$((COVE_PORT + 1))"]
max_connections = $limit
max_connections_per_ip = $limit
max_connections_per_user = $limit
EOF
    local u
    # Admin commands refuse a data directory that does not exist yet.
    mkdir -p "$WORK/cove-data"
    for u in bench0 bench1; do
        if ! printf '%s\n' "$PASS" | "$COVE" user add "$u@example.com" --password-stdin --config "$COVE_CONF" >>"$WORK/cove-useradd.log" 2>&1; then
            echo "cove user add $u@example.com failed:" >&2
            tail -n 5 "$WORK/cove-useradd.log" >&2
            exit 1
        fi
    done
    start_cove
}

start_dovecot() {
    DOVECOT_PID=$(IMAP_CONNS=$((MAX_IDLE + 100)) bash "$ROOT/benches/dovecot/start.sh" "$WORK/dovecot" "$DOVECOT_PORT" 2)
}

ports=()
for s in $SERVERS; do ports+=("$(port_of "$s")" "$(( $(port_of "$s") + 1 ))"); done
require_free_ports "${ports[@]}"
has cove && setup_cove
has dovecot && start_dovecot
has cyrus && start_cyrus_too 2

RAW=$WORK/raw.txt
: > "$RAW"
FAILED=0
ERRS=$WORK/errors.txt
: > "$ERRS"

# run_load SERVER -> loads both mailboxes, appends RESULT lines
run_load() {
    local s=$1 lp
    lp=$(port_of "$s")
    local out rc=0
    if [[ ($s == dovecot && $DOVECOT_LOAD == copy) || ($s == cyrus && $CYRUS_LOAD == copy) ]]; then
        out=""
    else
    out=$("$LOAD" lmtp --addr "127.0.0.1:$lp" --conns "$LOAD_CONNS" --messages "$MESSAGES" --size "$SIZE" \
        --users 1 --rcpt-template bench0@example.com --varied --token-every "$TOKEN_EVERY" \
        --subject-token "$SUBJECT_TOKEN" --body-token "$BODY_TOKEN" --label "$s load" 2>&1) || rc=$?
    fi
    echo "$out" > "$WORK/load.$s.out"
    [[ $rc -eq 0 ]] || { echo "loading $s failed (exit $rc):" >&2; tail -n 20 <<<"$out" >&2; return 1; }
    out=$("$LOAD" lmtp --addr "127.0.0.1:$lp" --conns 1 --messages "$IDLE_SEED" --size "$SIZE" \
        --users 1 --rcpt-template bench1@example.com --varied --label "$s idle seed" 2>&1) ||
        { echo "seeding bench1 on $s failed:" >&2; tail -n 20 <<<"$out" >&2; return 1; }
}

# ---------------------------------------------------------------- load
log "loading $MESSAGES x $SIZE B into bench0's INBOX on: $SERVERS (in parallel)"
LOAD_START=$(date +%s)
declare -A LOADPID
for s in $SERVERS; do
    run_load "$s" & LOADPID[$s]=$!
done
for s in $SERVERS; do
    wait "${LOADPID[$s]}" || { echo "loading failed" >&2; exit 1; }
    grep '^RESULT ' "$WORK/load.$s.out" >> "$RAW" || true
    grep '^lmtp' "$WORK/load.$s.out" >&2 || true
done
if has dovecot && [[ $DOVECOT_LOAD == copy ]]; then
    has cove || { echo "DOVECOT_LOAD=copy needs cove in SERVERS" >&2; exit 2; }
    log "copying cove's $MESSAGES message files into Dovecot's Maildir"
    copy_to_dovecot
    NOTES+=("Dovecot's big INBOX was not delivered over LMTP: the message files cove stored were copied into its Maildir (\`DOVECOT_LOAD=copy\`), so Dovecot's *first* run indexes them.")
fi
if has cyrus && [[ $CYRUS_LOAD == copy ]]; then
    has cove || { echo "CYRUS_LOAD=copy needs cove in SERVERS" >&2; exit 2; }
    log "copying cove's $MESSAGES message files into Cyrus's INBOX and reconstructing it"
    t=$(date +%s)
    copy_to_cyrus
    NOTES+=("Cyrus's big INBOX was not delivered over LMTP: the message files cove stored were copied into its mailbox directory and indexed by \`reconstruct\` ($(( $(date +%s) - t )) s, \`CYRUS_LOAD=copy\`), which parses every message into \`cyrus.index\` and \`cyrus.cache\` as its LMTP does, so Cyrus's *first* run finds them parsed, as after delivery.")
fi
LOAD_S=$(( $(date +%s) - LOAD_START ))
sync
sleep 2

# ---------------------------------------------------------------- ops
SUBJ_HITS=$(( (MESSAGES + TOKEN_EVERY - 1) / TOKEN_EVERY ))
BODY_HITS=$(( MESSAGES > TOKEN_EVERY / 2 ? (MESSAGES - TOKEN_EVERY / 2 + TOKEN_EVERY - 1) / TOKEN_EVERY : 0 ))
LOADAVG_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
OPS_START=$(date +%s)
for run in first repeat; do
    for s in $SERVERS; do
        log "imap ops — $s — $run"
        flag=()
        [[ $run == first ]] && flag=(--first)
        out=""
        rc=0
        out=$("$LOAD" imap ops --addr "127.0.0.1:$(( $(port_of "$s") + 1 ))" --user bench0@example.com --pass "$PASS" \
            "${flag[@]}" --expect-messages "$MESSAGES" --expect-subject-hits "$SUBJ_HITS" --expect-body-hits "$BODY_HITS" \
            --subject-token "$SUBJECT_TOKEN" --body-token "$BODY_TOKEN" --peek "$PEEK" --pipeline 32 --only "$ONLY" \
            --server-pid "$(pid_of "$s")" --label "$s" --timeout 600 2>"$WORK/ops.err") || rc=$?
        grep '^RESULT ' <<<"$out" >> "$RAW" || true
        grep -v '^RESULT ' <<<"$out" >&2 || true
        cat "$WORK/ops.err" >&2
        sed "s/^/$s $run: /" "$WORK/ops.err" >> "$ERRS"
        if [[ $rc -ne 0 ]]; then
            FAILED=1
            echo "FAILED: imap ops $s $run (exit $rc)" >&2
        fi
    done
done
OPS_S=$(( $(date +%s) - OPS_START ))

# ---------------------------------------------------------------- sort
# After the operations: "cold" below is the first SORT of the server
# process on keys no command asked for before (FETCH ENVELOPE and SEARCH
# did run), not the first access to the messages.
SORTS_S=0
if [[ $SORTS == 1 ]]; then
    SORTS_START=$(date +%s)
    for s in $SERVERS; do
        log "SORT/THREAD — $s"
        who=(--pid "$(pid_of "$s")")
        [[ $s == dovecot ]] && who=(--dovecot-master "$(pid_of "$s")")
        line=$(python3 "$ROOT/benches/imap_sort.py" "127.0.0.1:$(( $(port_of "$s") + 1 ))" bench0@example.com "$PASS" \
            "${who[@]}" | grep '^RESULT ') || { FAILED=1; echo "FAILED: imap_sort.py $s" >&2; continue; }
        echo "RESULT proto=imap mode=sort label=$s ${line#RESULT }" >> "$RAW"
    done
    SORTS_S=$(( $(date +%s) - SORTS_START ))
fi

# ---------------------------------------------------------------- idle
# run_idle SERVER LABEL CONNS
run_idle() {
    local s=$1 label=$2 conns=$3 extra=()
    [[ $s == cove ]] && extra=(--max-server-rss-mib "$COVE_MAX_RSS_MIB")
    log "imap idle — $label — $conns connections"
    local out rc=0
    out=$("$LOAD" imap idle --addr "127.0.0.1:$(( $(port_of "$s") + 1 ))" --lmtp-addr "127.0.0.1:$(port_of "$s")" \
        --user-template 'bench{n}@example.com' --first-user 1 --users 1 --pass "$PASS" --conns "$conns" \
        --sources "$SOURCES" --min-mem-available-mib "$MIN_MEM_AVAILABLE_MIB" "${extra[@]}" \
        --server-pid "$(pid_of "$s")" --label "$label" --timeout 120 --exists-timeout 120 2>"$WORK/idle.err") || rc=$?
    grep '^RESULT ' <<<"$out" >> "$RAW" || true
    grep -v '^RESULT ' <<<"$out" >&2 || true
    cat "$WORK/idle.err" >&2
    sed "s/^/$label $conns: /" "$WORK/idle.err" >> "$ERRS"
    if [[ $rc -ne 0 ]]; then
        FAILED=1
        echo "FAILED: imap idle $label $conns (exit $rc)" >&2
    fi
    sleep 3 # let per-session processes exit before the next baseline
}

IDLE_START=$(date +%s)
IDLE_ROWS=()
if has cove && (( COVE_SHIPPED_IDLE_CONNS > 0 )); then
    run_idle cove cove-as-built "$COVE_SHIPPED_IDLE_CONNS"
    IDLE_ROWS+=("cove-as-built|$COVE_SHIPPED_IDLE_CONNS|cove (as built)")
fi
COVE_IDLE_LABEL=cove-as-built
COVE_IDLE_NAME="cove (as built)"
if has cove && [[ -n $COVE_IDLE_TUNABLES ]]; then
    log "restarting cove with GLIBC_TUNABLES=$COVE_IDLE_TUNABLES"
    stop_cove
    start_cove "$COVE_IDLE_TUNABLES"
    COVE_IDLE_LABEL=cove-tuned
    COVE_IDLE_NAME="cove, GLIBC_TUNABLES=$COVE_IDLE_TUNABLES"
fi
for c in $IDLE_CONNS; do
    for s in $SERVERS; do
        if [[ $s == cyrus ]]; then
            continue
        elif [[ $s == cove ]]; then
            run_idle cove "$COVE_IDLE_LABEL" "$c"
            IDLE_ROWS+=("$COVE_IDLE_LABEL|$c|$COVE_IDLE_NAME")
        else
            run_idle dovecot dovecot "$c"
            IDLE_ROWS+=("dovecot|$c|Dovecot")
        fi
    done
done
IDLE_S=$(( $(date +%s) - IDLE_START ))
LOADAVG_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report
ops_line() { # LABEL RUN OP
    grep -E "^RESULT proto=imap mode=ops label=$1 .* run=$2 op=$3 " "$RAW" | tail -n 1 || true
}
idle_line() { # LABEL CONNS
    grep -E "^RESULT proto=imap mode=idle label=$1 .* conns=$2 " "$RAW" | tail -n 1 || true
}
dur() { # MS -> "1.96 s" / "12.3 ms" / "0.42 ms"
    awk -v v="$1" 'BEGIN {
        if (v == "" || v == "NA") { print "n/a"; exit }
        if (v >= 1000) printf "%.2f s\n", v / 1000
        else if (v >= 10) printf "%.0f ms\n", v
        else printf "%.1f ms\n", v }'
}
ops_cell() { # LABEL RUN OP [rate]
    local l
    l=$(ops_line "$1" "$2" "$3")
    [[ -z $l ]] && { echo "—"; return; }
    local v
    if [[ ${4:-} == rate ]]; then v="$(kv msgs_per_s "$l") msg/s"; else v=$(dur "$(kv wall_ms "$l")"); fi
    [[ $(kv ok "$l") == true ]] && echo "$v" || echo "$v FAIL"
}
cpu_cell() { # LABEL RUN OP
    local l
    l=$(ops_line "$1" "$2" "$3")
    [[ -z $l ]] && { echo "—"; return; }
    dur "$(kv server_cpu_ms "$l")"
}

DATE=$(date +%Y-%m-%d)
OUTDIR=$ROOT/benches/results
mkdir -p "$OUTDIR"
OUT=$OUTDIR/imap-$DATE.md
k=2
while [[ -e $OUT ]]; do OUT=$OUTDIR/imap-$DATE-$k.md; k=$((k + 1)); done

cove_rev=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo "uncommitted")
dirty=$(cd "$ROOT" && [[ -n $(git status --porcelain 2>/dev/null | head -1) ]] && echo ' (working tree had uncommitted changes)' || true)
dovecot_ver=$(dovecot --version 2>/dev/null | cut -d' ' -f1 || echo "?")
fs=$(df -T "$WORK" | awk 'NR == 2 { print $2 }')
hits=$(ops_line cove first search_subject)
[[ -z $hits ]] && hits=$(ops_line dovecot first search_subject)

OPS=(
    "select|\`SELECT INBOX\`|—|1.96 s first, then 0.4 ms"
    "fetch_envelope|\`UID FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE)\`|≤ 0.5 s|7.7 s first, then 1.43 s"
    "search_subject|\`UID SEARCH SUBJECT $SUBJECT_TOKEN\` ($SUBJ_HITS hits)|—|0.36 s"
    "search_body|\`UID SEARCH BODY $BODY_TOKEN\` ($BODY_HITS hits)|≤ 0.3 s|7.1 s"
    "store_add_seen|\`UID STORE 1:* +FLAGS.SILENT (\\Seen)\`|—|1.8–2.0 s"
    "store_remove_seen|\`UID STORE 1:* -FLAGS.SILENT (\\Seen)\`|—|1.8–2.0 s"
)
PEEKS=(
    "peek_seq|$PEEK random \`FETCH n BODY.PEEK[]\`, one at a time|—|—"
    "peek_pipelined|$PEEK random \`FETCH n BODY.PEEK[]\`, 32 in flight|—|19,000 msg/s"
)

{
    echo "# IMAP benchmark, $DATE"
    echo
    echo "Servers: $SERVERS. cove at \`$cove_rev\`$dirty (durability = $COVE_DURABILITY, index_new_mail = $COVE_INDEX_NEW_MAIL, fulltext_new_mail = $COVE_FULLTEXT_NEW_MAIL); Dovecot $dovecot_ver (Maildir, \`mail_fsync = always\`, one imap process per session)."
    echo "Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(free -g | awk '/^Mem:/ { print $2 }') GiB RAM, $(uname -sr), data on $fs."
    load_rates=""
    for s in $SERVERS; do
        l=$(grep -E "^RESULT proto=lmtp label=${s}_load " "$RAW" | tail -n 1 || true)
        [[ -n $l ]] && load_rates+=" $s $(kv msgs_per_s "$l") msgs/s;"
    done
    echo "Load generator \`cove-load\` on the same machine (one thread). Loading took $LOAD_S s (all servers at once, $LOAD_CONNS LMTP connections each:${load_rates%;}), the operations $OPS_S s, the idle points $IDLE_S s; $(( $(date +%s) - T0 )) s in all. Load average (1/5/15 min) before the operations: $LOADAVG_BEFORE, after the idle points: $LOADAVG_AFTER."
    echo
    echo "## Operations on one INBOX of $MESSAGES messages of $SIZE B"
    echo
    echo "Messages delivered over LMTP ($LOAD_CONNS connections), each with its own sender, subject and body text; one in $TOKEN_EVERY has \`$SUBJECT_TOKEN\` in its Subject, another one in $TOKEN_EVERY \`$BODY_TOKEN\` in its body. One connection per run; wall time from sending the command to its tagged OK, every answer checked (FETCH: one response with all items per message; SEARCH: the expected hits; STORE: \`UID SEARCH UNSEEN\`/\`SEEN\` finds nothing afterwards; BODY.PEEK[]: one literal with the message per command, and no \\Seen afterwards). *first* = the first session after loading, *repeat* = the next session. BODY.PEEK[] fetches the same $PEEK random message numbers on every server."
    echo
    echo "| operation | cove first | cove repeat | Dovecot first | Dovecot repeat | cove target | Dovecot reference (issue 3) |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    for o in "${OPS[@]}" "${PEEKS[@]}"; do
        IFS='|' read -r op name target ref <<<"$o"
        mode=""
        [[ $op == peek_* ]] && mode=rate
        echo "| $name | $(ops_cell cove first "$op" $mode) | $(ops_cell cove repeat "$op" $mode) | $(ops_cell dovecot first "$op" $mode) | $(ops_cell dovecot repeat "$op" $mode) | $target | $ref |"
    done
    echo
    if has cyrus; then
        echo "Cyrus IMAP $(dpkg-query -W -f '${Version}' cyrus-common 2>/dev/null || echo '?') (benches/cyrus/start.sh; its search is a scan: no squatter or Xapian index was built) on the same mailbox:"
        echo
        echo "| operation | Cyrus first | Cyrus repeat | Cyrus CPU first | Cyrus CPU repeat |"
        echo "|---|---:|---:|---:|---:|"
        for o in "${OPS[@]}" "${PEEKS[@]}"; do
            IFS='|' read -r op name _ _ <<<"$o"
            mode=""
            [[ $op == peek_* ]] && mode=rate
            echo "| $name | $(ops_cell cyrus first "$op" $mode) | $(ops_cell cyrus repeat "$op" $mode) | $(cpu_cell cyrus first "$op") | $(cpu_cell cyrus repeat "$op") |"
        done
        echo
    fi
    if [[ $SORTS == 1 ]]; then
        echo "SORT, THREAD and SEARCH SUBJECT on the same INBOX after the operations (benches/imap_sort.py, one session per server, $SORTS_S s): *cold* = the first time this server process is asked for those keys, *warm* = the median of 3 more; CPU: cove's process, Dovecot's imap process of that session. Equal *answer* hashes: equal answers."
        echo
        echo "| command | cove cold | cove warm | Dovecot cold | Dovecot warm | cove CPU cold / warm | Dovecot CPU cold / warm | answers |"
        echo "|---|---:|---:|---:|---:|---:|---:|---|"
        for c in "arrival|SORT (ARRIVAL)" "date|SORT (DATE)" "subject|SORT (SUBJECT)" "from|SORT (FROM)" "thread|THREAD REFERENCES" "search_subject|UID SEARCH SUBJECT $SUBJECT_TOKEN"; do
            IFS='|' read -r k name <<<"$c"
            lc=$(grep -E "^RESULT proto=imap mode=sort label=cove " "$RAW" | tail -n 1 || true)
            ld=$(grep -E "^RESULT proto=imap mode=sort label=dovecot " "$RAW" | tail -n 1 || true)
            same="differ"
            [[ -n $lc && $(kv "${k}_sha" "$lc") == "$(kv "${k}_sha" "$ld")" ]] && same="same"
            echo "| \`$name\` | $(dur "$(kv "${k}_cold_ms" "$lc")") | $(dur "$(kv "${k}_warm_ms" "$lc")") | $(dur "$(kv "${k}_cold_ms" "$ld")") | $(dur "$(kv "${k}_warm_ms" "$ld")") | $(kv "${k}_cold_cpu_s" "$lc") / $(kv "${k}_warm_cpu_s" "$lc") s | $(kv "${k}_cold_cpu_s" "$ld") / $(kv "${k}_warm_cpu_s" "$ld") s | $same |"
        done
        echo
    fi
    echo "Server CPU time (user+sys, all processes of the server) during each operation:"
    echo
    echo "| operation | cove first | cove repeat | Dovecot first | Dovecot repeat |"
    echo "|---|---:|---:|---:|---:|"
    for o in "${OPS[@]}" "${PEEKS[@]}"; do
        IFS='|' read -r op name _ _ <<<"$o"
        echo "| $name | $(cpu_cell cove first "$op") | $(cpu_cell cove repeat "$op") | $(cpu_cell dovecot first "$op") | $(cpu_cell dovecot repeat "$op") |"
    done
    echo
    echo "## Idle connections"
    echo
    echo "N connections (spread over $SOURCES source addresses 127.0.0.x) log in as one user, SELECT its INBOX ($IDLE_SEED messages) and IDLE. Memory = the server's resident memory after all N are idle minus before (after a warm-up of 16 whole sessions), divided by N: RSS (VmRSS, summed over the server's processes, so Dovecot's shared pages count once per process) and PSS (shared pages split between the processes that map them: what the sessions really cost). Kernel socket buffers are not in either. Then one message is delivered over LMTP to that user; delay = time from the LMTP 250 until a connection reads \`* n EXISTS\` (negative: before the 250), over the connections that saw it (*saw EXISTS*; the others are counted as missed after 120 s); *from DATA* counts from the moment the message was sent. Setup = connect + LOGIN + SELECT + IDLE, 64 at a time."
    echo
    echo "| server | conns in IDLE | setup, logins/s | RSS before → after | RSS per conn | PSS per conn | LMTP 250 after DATA | saw EXISTS | EXISTS p50 | EXISTS p99 | EXISTS max | p99 from DATA |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for r in "${IDLE_ROWS[@]}"; do
        IFS='|' read -r label conns name <<<"$r"
        l=$(idle_line "$label" "$conns")
        if [[ -z $l ]]; then
            echo "| $name | $conns: FAIL (no result) | | | | | | | | | | |"
            continue
        fi
        ok=$(kv conns_ok "$l")
        ab=$(kv aborted "$l")
        status=""
        [[ $ab != no ]] && status=" ABORTED (${ab//_/ })"
        [[ $ok != "$conns" && $ab == no ]] && status=" (of $conns)"
        seen="$(kv exists_seen "$l")/$ok"
        [[ $(kv exists_missed "$l") != 0 ]] && seen+=" **($(kv exists_missed "$l") not within 120 s)**"
        mib() { awk -v v="$1" 'BEGIN { if (v == "" || v == "NA") print "n/a"; else printf "%.0f MiB", v / 1024 }'; }
        kib() { awk -v v="$1" 'BEGIN { if (v == "" || v == "NA") print "n/a"; else if (v >= 1024) printf "%.2f MiB", v / 1024; else printf "%.1f KiB", v }'; }
        echo "| $name | $ok$status | $(kv setup_s "$l") s, $(kv logins_per_s "$l")/s | $(mib "$(kv rss_before_kib "$l")") → $(mib "$(kv rss_after_kib "$l")") | $(kib "$(kv rss_per_conn_kib "$l")") | $(kib "$(kv pss_per_conn_kib "$l")") | $(dur "$(kv lmtp_ms "$l")") | $seen | $(dur "$(kv exists_p50_ms "$l")") | $(dur "$(kv exists_p99_ms "$l")") | $(dur "$(kv exists_max_ms "$l")") | $(dur "$(kv exists_p99_from_sent_ms "$l")") |"
    done
    echo
    echo "cove targets: ≤ 8 KiB per idle plaintext connection at 10,000 connections; every IDLE connection told within 100 ms (p99). Dovecot reference (issue 3): 0.55 MiB per idle session, EXISTS about 505 ms after a delivery."
    if has cove && [[ -n $COVE_IDLE_TUNABLES ]]; then
        echo
        echo "cove as built keeps about 12 MiB per login: argon2 (password check) allocates 19 MiB per check on a blocking thread, and glibc's malloc, whose mmap threshold rises to that size after the first free, keeps those blocks in its per-thread arenas instead of returning them. The 1,000/10,000 points therefore run cove with \`GLIBC_TUNABLES=$COVE_IDLE_TUNABLES\` (fixed mmap threshold: big blocks are mmapped and unmapped), no code change; the as-built point shows the cost. Each cove idle point is capped at $COVE_MAX_RSS_MIB MiB of RSS (ABORTED when reached)."
    fi
    for n in "${NOTES[@]}"; do
        echo
        echo "$n"
    done
    if [[ -s $ERRS ]]; then
        echo
        echo "Errors and notes from the runs:"
        echo
        echo '```'
        head -n 60 "$ERRS"
        echo '```'
    fi
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
log "written to ${OUT#"$ROOT"/} ($(( $(date +%s) - T0 )) s in all)"
if [[ $FAILED -ne 0 ]]; then
    log "some runs FAILED (see FAIL cells and the ERROR lines above)"
    exit 1
fi
