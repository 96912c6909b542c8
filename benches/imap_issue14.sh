#!/usr/bin/env bash
# The figures issue 14 asks for, cove and Dovecot side by side in one run on
# one INBOX of MESSAGES messages each:
#   - SORT (ARRIVAL), (DATE), (SUBJECT), (FROM), THREAD REFERENCES and
#     UID SEARCH SUBJECT, first time and warm (benches/imap_sort.py);
#   - a QRESYNC SELECT after 10 flag changes against SELECT + FETCH 1:*
#     (UID FLAGS), and FETCH 1:1000 BODY.PEEK[] with and without
#     COMPRESS=DEFLATE: bytes on the wire, time, and the server's CPU (cove's
#     process; Dovecot's imap process of the session) (benches/imap_resync.py).
#
#   bash benches/imap_issue14.sh
#
# cove is loaded over LMTP on one connection (imap_sort.py's generator);
# Dovecot's INBOX is then made of copies of the files cove stored, in cove's
# UID order (copy_to_dovecot in benches/common.sh: the same bytes and
# arrival order, so equal answers have equal hashes; Dovecot indexes them
# at its first SELECT, like a migrated mailbox). DOVECOT_LOAD=lmtp delivers
# to Dovecot over LMTP instead, at the same time as cove (with
# mail_fsync = never: 24 msg/s with `always` here; too slow for 100,000 on
# a loaded machine). Only reads are measured.
# Then the servers are measured one after the other, cove first, each script
# in turn. Writes RESULT lines to benches/results/imap-issue14-<date>.txt
# (also printed); the .md beside it is written by hand from them.
#
# Knobs (environment):
#   MESSAGES=100000
#   COVE_PORT=27100 DOVECOT_PORT=27200   LMTP ports; IMAP is PORT+1
#   DOVECOT_LOAD=copy        copy (cove's files) or lmtp, see above
#   PROFILE=release          the cove build (debug: the existing target/debug)
#   DOVECOT_IMAP_ROOT=       an unpacked dovecot-imapd (benches/dovecot/start.sh)
#   KEEP=1                   keep the temp dir afterwards
#   OUT=PATH                 where to write the results
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
MESSAGES=${MESSAGES:-100000}
COVE_PORT=${COVE_PORT:-27100}
DOVECOT_PORT=${DOVECOT_PORT:-27200}
PROFILE=${PROFILE:-release}
DOVECOT_LOAD=${DOVECOT_LOAD:-copy}
KEEP=${KEEP:-0}
OUT=${OUT:-$ROOT/benches/results/imap-issue14-$(date +%F).txt}
COVE=$ROOT/target/$PROFILE/cove
PASS=bench
export IMAP_ZLIB=1 MAIL_FSYNC=never

start_pair coveissue14 "[imap]
listen = [\"127.0.0.1:$((COVE_PORT + 1))\"]" $((COVE_PORT + 1))

bench_log "loading $MESSAGES messages into both (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
started=$(date +%s)
loaders=()
loaded=(cove)
[[ $DOVECOT_LOAD == lmtp ]] && loaded+=(dovecot)
for s in "${loaded[@]}"; do
    port=$(port_of $s)
    python3 "$ROOT/benches/imap_sort.py" "127.0.0.1:$((port + 1))" bench0@example.com "$PASS" \
        --load "$MESSAGES" --lmtp "127.0.0.1:$port" --only-load &
    loaders+=($!)
done
# Not a bare `wait`: cove is a child of this shell too.
for p in "${loaders[@]}"; do wait "$p"; done
if [[ $DOVECOT_LOAD == copy ]]; then
    bench_log "copying cove's message files into Dovecot's Maildir"
    copy_to_dovecot
fi
bench_log "loaded in $(( $(date +%s) - started )) s"

: > "$OUT"
for s in cove dovecot; do
    port=$(port_of $s)
    who=(--pid "$(pid_of cove)")
    [[ $s == dovecot ]] && who=(--dovecot-master "$(pid_of dovecot)")
    label=$s
    [[ $s == cove ]] && label="cove ($PROFILE build)"
    for script in imap_sort imap_resync; do
        bench_log "$s: $script (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
        line=$(python3 "$ROOT/benches/$script.py" "127.0.0.1:$((port + 1))" bench0@example.com "$PASS" \
            "${who[@]}" | grep '^RESULT')
        echo "$label $script loadavg=$(cut -d' ' -f1 /proc/loadavg) $line" | tee -a "$OUT"
    done
done
