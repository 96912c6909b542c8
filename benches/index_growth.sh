#!/usr/bin/env bash
# Index growth over many deliveries and expunges of one user (issue 15,
# "Bounded growth"): do index.sqlite, fts.sqlite, the change log and the
# expunge tombstones stop growing while mail keeps coming and going?
#
#   bash benches/index_growth.sh            # 1,000,000 messages
#   TOTAL=100000 bash benches/index_growth.sh
#
# Starts cove (release) with replication configured but no peers (so the
# history settings apply: keep_changes, keep_expunges_secs), full-text
# indexing of every new message, and the data directory under DATA_PARENT
# (tmpfs by default: the sizes do not depend on the disk and the run is
# CPU-bound, not flush-bound). Then benches/index_growth.py delivers ROUND
# messages of SIZE bytes over LMTP, searches their bodies, expunges them all
# over IMAP, and samples the user's files; it ends with a sample QUIET
# seconds after the last mail. Writes benches/results/index-growth-<date>.md.
#
# Knobs (environment):
#   TOTAL=1000000 ROUND=10000 SIZE=2048 CONNS=8 QUIET=30
#   KEEP_CHANGES=100000 KEEP_EXPUNGES_SECS=60   cove's [replication] history
#   DATA_PARENT=/dev/shm  COVE_PORT=26700  KEEP=1 keeps the data afterwards
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
TOTAL=${TOTAL:-1000000}
ROUND=${ROUND:-10000}
SIZE=${SIZE:-2048}
CONNS=${CONNS:-8}
QUIET=${QUIET:-30}
KEEP_CHANGES=${KEEP_CHANGES:-100000}
KEEP_EXPUNGES_SECS=${KEEP_EXPUNGES_SECS:-60}
DATA_PARENT=${DATA_PARENT:-/dev/shm}
COVE_PORT=${COVE_PORT:-26700}
KEEP=${KEEP:-0}
COVE=$ROOT/target/release/cove
LOAD=$ROOT/target/release/cove-load
PASS=bench

bench_log "cargo build --release -p cove -p cove-benches"
(cd "$ROOT" && cargo build --release -p cove -p cove-benches)
WORK=$(mktemp -d "$DATA_PARENT/cove-growth.XXXXXX")
COVE_PID=""
cleanup() {
    set +e
    stop_cove
    if [[ $KEEP == 1 ]]; then bench_log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
cat > "$WORK/cove.toml" <<TOML
data_dir = "$WORK/cove-data"
hostname = "bench"

[lmtp]
listen = ["127.0.0.1:$COVE_PORT"]

[imap]
listen = ["127.0.0.1:$((COVE_PORT + 1))"]

[server]
index_new_mail = true
fulltext_new_mail = true

[replication]
listen = ["127.0.0.1:$((COVE_PORT + 2))"]
secret = "index-growth-bench-secret-0123456789"
keep_changes = $KEEP_CHANGES
keep_expunges_secs = $KEEP_EXPUNGES_SECS
TOML
mkdir -p "$WORK/cove-data"
printf '%s\n' "$PASS" | "$COVE" user add bench0@example.com --password-stdin --config "$WORK/cove.toml" >/dev/null
"$COVE" serve --config "$WORK/cove.toml" >>"$WORK/cove.log" 2>&1 &
COVE_PID=$!
wait_port "$((COVE_PORT + 1))" "$COVE_PID" 30 || { tail -n 30 "$WORK/cove.log" >&2; exit 1; }
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)

DATE=$(date +%Y-%m-%d)
OUT=$ROOT/benches/results/index-growth-$DATE.md
k=2
while [[ -e $OUT ]]; do OUT=$ROOT/benches/results/index-growth-$DATE-$k.md; k=$((k + 1)); done
cove_rev=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo "?")
[[ -n $(cd "$ROOT" && git status --porcelain --untracked-files=no 2>/dev/null | head -1) ]] && cove_rev+=" with uncommitted changes"
TABLE=$WORK/table.md
bench_log "delivering and expunging $TOTAL messages in rounds of $ROUND"
python3 "$ROOT/benches/index_growth.py" --load "$LOAD" --lmtp "$COVE_PORT" --imap "$((COVE_PORT + 1))" \
    --home "$WORK/cove-data/mail/example.com/bench0" --total "$TOTAL" --round "$ROUND" --size "$SIZE" \
    --conns "$CONNS" --quiet "$QUIET" | tee "$TABLE"
{
    echo "# Index growth over $TOTAL deliveries and expunges of one user, $DATE"
    echo
    echo "cove at \`$cove_rev\`: \`index_new_mail = true\`, \`fulltext_new_mail = true\` (every message goes into the full-text index on arrival), \`[replication]\` configured with no peers, \`keep_changes = $KEEP_CHANGES\`, \`keep_expunges_secs = $KEEP_EXPUNGES_SECS\`; data on $(df --output=fstype "$WORK" | tail -1) ($DATA_PARENT). Each round: $ROUND varied messages of $SIZE B over LMTP ($CONNS connections, \`cove-load lmtp --varied\`), then over IMAP \`UID SEARCH BODY kumquat\`, \`UID STORE 1:* +FLAGS.SILENT (\\Deleted)\`, \`EXPUNGE\`. Sizes are the files' lengths (SQLite reuses freed pages; files never shrink without VACUUM); row counts by read-only queries on the live index. Load average before: $LOADAVG. Machine: $(nproc) CPUs, Linux $(uname -r). \`benches/index_growth.sh\`."
    echo
    grep -v '^SUMMARY' "$TABLE"
    grep '^SUMMARY' "$TABLE" | sed 's/^/    /'
} > "$OUT"
bench_log "written to $OUT"
