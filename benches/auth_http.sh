#!/usr/bin/env bash
# nginx auth_http endpoint benchmark (issue 12): `GET /auth` requests per
# second and their p99, made as nginx's mail proxy makes them (one HTTP/1.0
# request per connection), for a user whose password is stored as argon2id
# (cove's default parameters) and for one imported with a cheap legacy hash
# (SHA512-CRYPT, 5000 rounds), kept as it is (`rehash_legacy = false`;
# with cove's default, true, it is rehashed to argon2id at the first good
# login and costs what argon2id costs from then on).
#
#   bash benches/auth_http.sh
#
# Knobs (environment): SECONDS_PER_RUN=10 RUNS=3 CONNS=8 HTTP_PORT=26400
#   LEGACY_CONFIG='rehash_legacy = false'   lines for cove.toml's [auth]
#   KEEP=1             keep the temp dir afterwards
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
RUNS=${RUNS:-3}
CONNS=${CONNS:-8}
HTTP_PORT=${HTTP_PORT:-26400}
LEGACY_CONFIG=${LEGACY_CONFIG-rehash_legacy = false}
KEEP=${KEEP:-0}
LOAD=$ROOT/target/release/cove-load
COVE=$ROOT/target/release/cove
PASS=bench

log() { bench_log "$@"; }

log "cargo build --release -p cove -p cove-benches"
(cd "$ROOT" && cargo build --release -p cove -p cove-benches)

WORK=$(mktemp -d /tmp/authhttp.XXXXXX)
COVE_PID=""
cleanup() {
    stop_cove
    if [[ $KEEP == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
{
    printf 'data_dir = "%s"\nhostname = "bench"\n\n' "$WORK/cove-data"
    printf '[http]\nlisten = ["127.0.0.1:%s"]\n\n' "$HTTP_PORT"
    printf '[imap]\nlisten = ["127.0.0.1:%s"]\n\n' "$((HTTP_PORT + 1))"
    printf '[auth]\n%s\n' "$LEGACY_CONFIG"
} > "$WORK/cove.toml"
mkdir -p "$WORK/cove-data"
printf '%s\n' "$PASS" | "$COVE" user add argon@example.com --password-stdin --config "$WORK/cove.toml" >/dev/null
legacy=$(openssl passwd -6 -salt benchsaltbench "$PASS")
printf 'legacy@example.com:{SHA512-CRYPT}%s:5000:5000::/var/vmail/legacy::\n' "$legacy" > "$WORK/users.passwd"
"$COVE" user import "$WORK/users.passwd" --config "$WORK/cove.toml" >&2
"$COVE" serve --config "$WORK/cove.toml" >>"$WORK/cove.log" 2>&1 &
COVE_PID=$!
wait_port "$HTTP_PORT" "$COVE_PID" 30 || { tail -n 30 "$WORK/cove.log" >&2; exit 1; }

RAW=$WORK/raw.txt
: > "$RAW"
for ((r = 1; r <= RUNS; r++)); do
    for user in argon legacy; do
        line=$("$LOAD" auth-http --addr "127.0.0.1:$HTTP_PORT" --user "$user@example.com" --pass "$PASS" \
            --connections "$CONNS" --seconds "$SECONDS_PER_RUN" --server-pid "$COVE_PID" --label "$user" | tee /dev/stderr | grep '^RESULT')
        echo "$user $(kv per_sec "$line") $(kv p50_ms "$line") $(kv p99_ms "$line") $(kv server_cpu_ms "$line")" >> "$RAW"
    done
done
stored=$(python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT password FROM user WHERE local = ?", (sys.argv[2],)).fetchone()[0][:20])' "$WORK/cove-data/cove.db" legacy 2>/dev/null || echo '?')

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
OUT=$ROOT/benches/results/auth-http-$(date +%F).md
{
    echo "# auth_http: GET /auth ($(date +%F), $(nproc) cores, release build)"
    echo
    echo "$CONNS connections, one HTTP/1.0 request each at a time, $SECONDS_PER_RUN s per run, medians of $RUNS runs."
    echo "[auth] extra config: \`${LEGACY_CONFIG:-none}\`; the legacy user's stored hash after the runs starts \`$stored\`."
    echo
    echo "| user's hash | requests/s | p50 ms | p99 ms |"
    echo "|---|---|---|---|"
    for user in argon legacy; do
        rate=$(awk -v u=$user '$1 == u {print $2}' "$RAW" | median)
        p50=$(awk -v u=$user '$1 == u {print $3}' "$RAW" | median)
        p99=$(awk -v u=$user '$1 == u {print $4}' "$RAW" | median)
        echo "| $user | $rate | $p50 | $p99 |"
    done
} | tee "$OUT"
log "wrote $OUT"
