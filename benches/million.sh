#!/usr/bin/env bash
# A mailbox of 1,000,000 messages (issue 15): cove and Dovecot side by side.
#
#   bash benches/million.sh
#
# Writes one Dovecot Maildir of MESSAGES small messages (benches/million.py
# gen: ~1.0-1.4 KiB, the headers a delivered message has, dovecot-uidlist
# with UIDs 1..N), imports it into cove (`cove import maildir`) and lets a
# private Dovecot (benches/dovecot/start.sh) use the Maildir itself. Then,
# for each cove binary in COVES and for Dovecot in turn (one server running
# at a time), `million.py measure`: SELECT, UID FETCH 1:* (FLAGS), SEARCH
# SUBJECT (first and repeated), RSS growth with 1 and SESSIONS sessions
# holding the mailbox selected, and a QRESYNC resync after 10 flag changes.
# Writes benches/results/million-<date>.md (also printed).
#
# Knobs (environment):
#   MESSAGES=1000000 TOKEN_EVERY=1000 SESSIONS=10
#   BODY=900                 longest body in characters (~1.3-1.7 KiB
#                            messages; BODY=3600: ~4 KiB)
#   COVES="cove:target/release/cove"  LABEL:BINARY pairs measured in turn on
#                            the same data (e.g. a build from before a
#                            change beside one from after it)
#   WITH_DOVECOT=1           measure Dovecot too (0: skip)
#   DOVECOT_VSZ_LIMIT=2G     its imap processes' vsz_limit (the default 256M
#                            fails: Out of memory at SELECT)
#   WORK_DIR=                reuse a kept run's data (its Maildir, cove's
#                            import, Dovecot's index): no generation nor
#                            import; every "first" is then only the first
#                            of that server process
#   KEEP=0                   keep the data afterwards (1: keep, for WORK_DIR)
#   COVE_PORT=25500 DOVECOT_PORT=25600   LMTP ports; IMAP is PORT+1
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
MESSAGES=${MESSAGES:-1000000}
TOKEN_EVERY=${TOKEN_EVERY:-1000}
BODY=${BODY:-900}
SESSIONS=${SESSIONS:-10}
COVES=${COVES:-"cove:$ROOT/target/release/cove"}
WITH_DOVECOT=${WITH_DOVECOT:-1}
KEEP=${KEEP:-$([[ -n ${WORK_DIR:-} ]] && echo 1 || echo 0)}
COVE_PORT=${COVE_PORT:-25500}
DOVECOT_PORT=${DOVECOT_PORT:-25600}
PASS=bench
USER_EMAIL=bench0@example.com
T0=$(date +%s)

if [[ -z ${WORK_DIR:-} ]]; then
    bench_log "cargo build --release -p cove"
    (cd "$ROOT" && cargo build --release -p cove)
    WORK=$(mktemp -d /tmp/covemillion.XXXXXX)
else
    WORK=$WORK_DIR
fi
chmod 755 "$WORK"
MAILDIR=$WORK/dovecot/mail/example.com/bench0/Maildir
COVE_CONF=$WORK/cove.toml
COVE_PID=""
DOVECOT_PID=""
cleanup() {
    set +e
    stop_cove
    [[ -n $DOVECOT_PID ]] && bash "$ROOT/benches/dovecot/stop.sh" "$WORK/dovecot"
    if [[ $KEEP == 1 ]]; then bench_log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

secs() { date +%s.%N; }
NOTES=()
FIRST_COVE=${COVES%% *}
FIRST_COVE_BIN=${FIRST_COVE#*:}
if [[ ! -e $WORK/generated ]]; then
    bench_log "df before: $(df -h --output=avail /tmp | tail -n 1)"
    bench_log "writing $MESSAGES messages to $MAILDIR"
    t=$(secs)
    python3 "$ROOT/benches/million.py" gen "$MAILDIR" "$MESSAGES" "$TOKEN_EVERY" --body "$BODY"
    printf '%.0f\n' "$(echo "$(secs) - $t" | bc -l)" > "$WORK/generated"
fi
if [[ ! -e $WORK/ready ]]; then
    GEN_S=$(cat "$WORK/generated")
    printf 'data_dir = "%s"\nhostname = "bench"\n\n[lmtp]\nlisten = ["127.0.0.1:%s"]\n\n[imap]\nlisten = ["127.0.0.1:%s"]\n' \
        "$WORK/cove-data" "$COVE_PORT" $((COVE_PORT + 1)) > "$COVE_CONF"
    mkdir -p "$WORK/cove-data"
    # A run stopped during the import resumes it (the user is there).
    if [[ ! -e $WORK/user-added ]]; then
        printf '%s\n' "$PASS" | "$FIRST_COVE_BIN" user add "$USER_EMAIL" --password-stdin --config "$COVE_CONF" >/dev/null
        touch "$WORK/user-added"
    fi
    bench_log "cove import maildir"
    t=$(secs)
    "$FIRST_COVE_BIN" import maildir --user "$USER_EMAIL" "$MAILDIR" --config "$COVE_CONF" >"$WORK/import.out" 2>&1 ||
        { tail -n 20 "$WORK/import.out" >&2; exit 1; }
    IMPORT_S=$(echo "$(secs) - $t" | bc -l)
    printf 'generated in %s s; imported into cove in %.0f s\n' "$GEN_S" "$IMPORT_S" > "$WORK/ready"
fi
NOTES+=("Data: $(cat "$WORK/ready") ($(du -sh "$MAILDIR" | cut -f1) of Maildir; cove's data directory $(du -sh "$WORK/cove-data" | cut -f1)).")

RAW=$WORK/raw.txt
: > "$RAW"
FAILED=0
HITS=$((MESSAGES / TOKEN_EVERY))
measure() { # LABEL PORT PID
    bench_log "measure $1"
    local rc=0
    python3 "$ROOT/benches/million.py" measure "127.0.0.1:$2" "$USER_EMAIL" "$PASS" --label "$1" --pid "$3" \
        --sessions "$SESSIONS" --expect "$MESSAGES" --hits "$HITS" >>"$RAW" || rc=$?
    if [[ $rc -ne 0 ]]; then
        FAILED=1
        echo "FAILED: $1 (exit $rc)" >&2
    fi
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
LABELS=()
for pair in $COVES; do
    label=${pair%%:*}
    bin=${pair#*:}
    "$bin" serve --config "$COVE_CONF" >>"$WORK/cove.$label.log" 2>&1 &
    COVE_PID=$!
    wait_port $((COVE_PORT + 1)) "$COVE_PID" 120 || { tail -n 30 "$WORK/cove.$label.log" >&2; exit 1; }
    measure "$label" $((COVE_PORT + 1)) "$COVE_PID"
    LABELS+=("$label")
    stop_cove
done
if [[ $WITH_DOVECOT == 1 ]]; then
    # Dovecot's default 256 MB per imap process is not enough to SELECT a
    # million messages (block_alloc: Out of memory in the uidlist sync).
    DOVECOT_PID=$(IMAP_VSZ_LIMIT=${DOVECOT_VSZ_LIMIT:-2G} bash "$ROOT/benches/dovecot/start.sh" "$WORK/dovecot" "$DOVECOT_PORT" 1)
    # Dovecot's processes run as the owner of its mail directory.
    chown -R "$(stat -c %u:%g "$WORK/dovecot/mail")" "$WORK/dovecot/mail/example.com"
    measure dovecot $((DOVECOT_PORT + 1)) "$DOVECOT_PID"
    LABELS+=(dovecot)
    bash "$ROOT/benches/dovecot/stop.sh" "$WORK/dovecot"
    DOVECOT_PID=""
fi
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report
line_of() { grep -E "^RESULT label=$1 " "$RAW" | tail -n 1 || true; }
cell() { # LABEL KEY [unit]
    local l v
    l=$(line_of "$1")
    v=$(kv "$2" "$l")
    [[ -z $v ]] && { echo "—"; return; }
    case ${3:-ms} in
        ms) awk -v v="$v" 'BEGIN { if (v >= 1000) printf "%.2f s\n", v / 1000; else if (v >= 10) printf "%.0f ms\n", v; else printf "%.1f ms\n", v }' ;;
        mib) awk -v v="$v" 'BEGIN { printf "%.1f MiB\n", v / 1024 }' ;;
        *) echo "$v" ;;
    esac
}
row() { # TITLE KEY [unit]
    local r="| $1 |" l
    for l in "${LABELS[@]}"; do r+=" $(cell "$l" "$2" "${3:-ms}") |"; done
    echo "$r"
}
DATE=$(date +%Y-%m-%d)
OUT=$ROOT/benches/results/million-$DATE.md
k=2
while [[ -e $OUT ]]; do OUT=$ROOT/benches/results/million-$DATE-$k.md; k=$((k + 1)); done
{
    echo "# A mailbox of $MESSAGES messages, $DATE"
    echo
    echo "\`bash benches/million.sh\`: cove at \`$(git -C "$ROOT" rev-parse --short HEAD)\` (COVES=\"$COVES\"), Dovecot $(dovecot --version 2>/dev/null | cut -d' ' -f1) (Maildir, benches/dovecot/start.sh); one server running at a time, same data."
    echo "Machine: $(nproc) CPUs shared with other work, $(free -g | awk '/Mem:/ {print $2}') GiB RAM. Load average (1/5/15 min) before: $LOAD_BEFORE, after: $LOAD_AFTER."
    echo
    echo "One INBOX of $MESSAGES messages ($(du -sb "$MAILDIR/cur" | awk -v n="$MESSAGES" '{ printf "%.1f KiB", $1 / n / 1024 }') on average, 2/3 \\Seen, 1/20 \\Flagged, one in $TOKEN_EVERY with \`marzipan\` in its Subject). Wall times from the command to its tagged OK, every answer checked; *first* = the first of this server process. RSS/PSS: summed over the server's processes, growth over the server before the first login."
    echo
    hdr="| measure |"
    sep="|---|"
    for l in "${LABELS[@]}"; do hdr+=" $l |"; sep+="---:|"; done
    echo "$hdr"
    echo "$sep"
    row "\`SELECT INBOX\`, first" select_first_ms
    row "\`SELECT INBOX\`, next sessions (median)" select_next_median_ms
    row "\`UID FETCH 1:* (FLAGS)\`" fetch_flags_ms
    row "\`UID FETCH 1:* (FLAGS)\` again" fetch_flags_repeat_ms
    row "\`UID SEARCH SUBJECT marzipan\`, first ($HITS hits)" search_subject_first_ms
    row "\`UID SEARCH SUBJECT marzipan\`, repeated" search_subject_repeat_ms
    row "QRESYNC \`SELECT\` after 10 flag changes" qresync_ms
    row "... again (nothing changed)" qresync_repeat_ms
    row "... bytes received" qresync_bytes n
    row "RSS growth, 1 session with INBOX selected" rss_1_growth_kib mib
    row "RSS growth, $SESSIONS sessions (after FETCH and SEARCH), per session" rss_per_session_kib mib
    row "RSS growth per session after the first, $((SESSIONS - 1)) more sessions" rss_per_more_session_kib mib
    row "PSS growth per session after the first" pss_per_more_session_kib mib
    row "server CPU, first SELECT" select_first_cpu_ms
    row "server CPU, \`UID FETCH 1:* (FLAGS)\`" fetch_flags_cpu_ms
    row "server CPU, \`UID SEARCH SUBJECT\`, first" search_subject_first_cpu_ms
    row "server CPU, \`UID SEARCH SUBJECT\`, repeated" search_subject_repeat_cpu_ms
    echo
    for n in "${NOTES[@]}"; do echo "$n"; echo; done
    echo '```'
    cat "$RAW"
    echo '```'
} > "$OUT"
cat "$OUT"
bench_log "written to ${OUT#"$ROOT"/} ($(($(date +%s) - T0)) s in all)"
exit $FAILED
