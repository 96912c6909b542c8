#!/usr/bin/env bash
# Sieve at delivery: LMTP rate with no script and with a 20-rule script per
# user, cove beside Dovecot + Pigeonhole with the same script, in one run.
#
#   bash benches/sieve.sh
#
# Builds cove and cove-load (release), starts cove (with [sieve]) and a
# private Dovecot with Pigeonhole in LMTP (benches/dovecot/start.sh,
# SIEVE=1), delivers MESSAGES messages of 4 KiB over CONNS connections to
# USERS users with no script, then puts the same 20-rule script in place
# for every user (cove: `cove sieve put --activate`; Dovecot:
# ~/sieve/bench.sieve and the ~/.dovecot.sieve link) and delivers again.
# Writes a markdown table to benches/results/sieve-<date>.md.
#
# Knobs: MESSAGES=3000 CONNS=4 USERS=100 REPS=1 COVE_PORT=24500
#        DOVECOT_PORT=24600 KEEP=1 (keep the temp dir)
# Needs: dovecot-core dovecot-lmtpd dovecot-imapd dovecot-pop3d dovecot-sieve
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
MESSAGES=${MESSAGES:-3000}
CONNS=${CONNS:-4}
USERS=${USERS:-100}
REPS=${REPS:-1}
COVE_PORT=${COVE_PORT:-24500}
DOVECOT_PORT=${DOVECOT_PORT:-24600}
KEEP=${KEEP:-0}
LOAD=$ROOT/target/release/cove-load
COVE=$ROOT/target/release/cove

bench_log "cargo build --release -p cove -p cove-benches"
(cd "$ROOT" && cargo build --release -p cove -p cove-benches)

WORK=$(mktemp -d /tmp/covesieve.XXXXXX)
chmod 755 "$WORK"
COVE_PID=""
DOVECOT_PID=""
trap stop_pair EXIT

# The script: 20 rules of the kinds users write (lists to folders, senders
# flagged, spam headers, subaddress, size); none but the last matches the
# benchmark's messages, which therefore all run every rule and stay in
# INBOX with a keyword (so both servers store the same thing).
SCRIPT=$WORK/bench.sieve
{
    echo 'require ["fileinto", "imap4flags", "envelope", "subaddress", "body", "relational", "comparator-i;ascii-numeric", "variables", "mailbox", "copy"];'
    for i in 1 2 3 4 5 6; do
        echo "if header :contains \"list-id\" \"list$i.example.net\" { fileinto :create \"Lists.list$i\"; stop; }"
    done
    for i in 1 2 3 4; do
        echo "if address :is \"from\" \"boss$i@corp.example\" { addflag \"\\\\Flagged\"; keep; stop; }"
    done
    echo 'if header :contains "x-spam-flag" "YES" { fileinto :create "Junk"; stop; }'
    echo 'if header :value "ge" :comparator "i;ascii-numeric" "x-spam-score" "5" { fileinto :create "Junk"; stop; }'
    echo 'if envelope :detail "to" "shop" { fileinto :create "Shopping"; stop; }'
    echo 'if size :over 5M { fileinto :create "Big"; stop; }'
    echo 'if header :matches "subject" "[[]ticket-*[]]*" { set "t" "${1}"; fileinto :create "Tickets"; stop; }'
    echo 'if address :domain "from" "newsletter.example" { fileinto :create "News"; stop; }'
    echo 'if header :contains "subject" ["invoice", "receipt", "order confirmation"] { fileinto :copy :create "Receipts"; }'
    echo 'if exists "x-github-reason" { fileinto :create "GitHub"; stop; }'
    echo 'if body :contains "unsubscribe-me-now" { fileinto :create "Bulk"; stop; }'
    echo 'if header :contains "subject" "Benchmark" { addflag "$bench"; }'
} > "$SCRIPT"
RULES=$(grep -c '^if ' "$SCRIPT")

# ---------------------------------------------------------------- servers
cat > "$WORK/cove.toml" <<EOF
data_dir = "$WORK/cove-data"
hostname = "bench"

[server]
durability = "batched"

[lmtp]
listen = ["127.0.0.1:$COVE_PORT"]

[sieve]
EOF
mkdir -p "$WORK/cove-data"
bench_log "cove: adding $USERS users"
for ((n = 0; n < USERS; n++)); do
    "$COVE" user add "bench$n@example.com" --config "$WORK/cove.toml" </dev/null >/dev/null
done
"$COVE" serve --config "$WORK/cove.toml" >"$WORK/cove.log" 2>&1 &
COVE_PID=$!
wait_port "$COVE_PORT" "$COVE_PID" 30 || { tail -n 30 "$WORK/cove.log" >&2; exit 1; }
DOVECOT_PID=$(SIEVE=1 bash "$ROOT/benches/dovecot/start.sh" "$WORK/dovecot" "$DOVECOT_PORT" "$USERS")
MAILOWNER=$(stat -c %u:%g "$WORK/dovecot/mail")

# ---------------------------------------------------------------- runs
RAW=$WORK/raw.txt
: > "$RAW"
declare -A RATE CPU P99

run() { # SERVER PHASE
    local addr pid out result
    case $1 in
        cove) addr=127.0.0.1:$COVE_PORT pid=$COVE_PID ;;
        dovecot) addr=127.0.0.1:$DOVECOT_PORT pid=$DOVECOT_PID ;;
    esac
    for ((r = 1; r <= REPS; r++)); do
        bench_log "$1, $2, run $r/$REPS"
        out=$("$LOAD" lmtp --addr "$addr" --server-pid "$pid" --label "$1 $2" \
            --size 4096 --conns "$CONNS" --messages "$MESSAGES" --users "$USERS")
        result=$(grep '^RESULT ' <<<"$out")
        echo "$result" >> "$RAW"
        RATE[$1.$2]+="$(kv msgs_per_s "$result") "
        CPU[$1.$2]+="$(kv cpu_ms_per_msg "$result") "
        P99[$1.$2]+="$(kv p99_ms "$result") "
    done
}
med() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk -v f="$2" '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf f, m}'; }

# Warm-up (not recorded).
for s in cove dovecot; do
    port=$COVE_PORT; [[ $s == dovecot ]] && port=$DOVECOT_PORT
    "$LOAD" lmtp --addr "127.0.0.1:$port" --conns 4 --messages 200 --users "$USERS" --label warm-up >/dev/null
done

for s in cove dovecot; do run "$s" none; done

bench_log "putting the $RULES-rule script in place for $USERS users"
for ((n = 0; n < USERS; n++)); do
    "$COVE" sieve put "bench$n@example.com" bench "$SCRIPT" --activate --config "$WORK/cove.toml" >/dev/null
    home=$WORK/dovecot/mail/example.com/bench$n
    mkdir -p "$home/sieve"
    cp "$SCRIPT" "$home/sieve/bench.sieve"
    ln -sfn sieve/bench.sieve "$home/.dovecot.sieve"
    chown -R "$MAILOWNER" "$home"
done

for s in cove dovecot; do run "$s" script; done

# Both servers ran the script: the last rule's keyword is in bench0's
# Maildir keyword list.
for d in "$WORK/cove-data/mail/example.com/bench0" "$WORK/dovecot/mail/example.com/bench0"; do
    if ! grep -q 'bench' "$d/Maildir/dovecot-keywords" 2>/dev/null; then
        echo "no \$bench keyword under $d: the script did not run" >&2
        tail -n 20 "$WORK/dovecot/log/dovecot.log" >&2
        exit 1
    fi
done

# ---------------------------------------------------------------- report
DATE=$(date +%Y-%m-%d)
OUT=$ROOT/benches/results/sieve-$DATE.md
k=2
while [[ -e $OUT ]]; do OUT=$ROOT/benches/results/sieve-$DATE-$k.md; k=$((k + 1)); done
{
    echo "# Sieve at LMTP delivery, $DATE"
    echo
    echo "cove at \`$(cd "$ROOT" && git rev-parse --short HEAD)\` (durability batched, sieve-rs 0.7); Dovecot $(dovecot --version | cut -d' ' -f1) with Pigeonhole in LMTP (\`mail_fsync = always\`)."
    echo "Machine: $(nproc) CPUs, $(uname -sr); load average (1/5/15 min) at the end: $(cut -d' ' -f1-3 /proc/loadavg) (others shared the CPUs when well above 2)."
    echo "$MESSAGES messages of 4 KiB over $CONNS connections to $USERS users (round-robin), $REPS run(s) per point (median); first with no script, then with the same $RULES-rule script active for every user (all rules evaluated, message kept in INBOX with a keyword). CPU = server CPU per message (all its processes)."
    echo
    echo "| server | script | msgs/s | p99 ms | CPU ms/msg |"
    echo "|---|---|---:|---:|---:|"
    for s in cove dovecot; do
        for ph in none script; do
            label=none; [[ $ph == script ]] && label="$RULES rules"
            echo "| $s | $label | $(med "${RATE[$s.$ph]}" %.0f) | $(med "${P99[$s.$ph]}" %.2f) | $(med "${CPU[$s.$ph]}" %.3f) |"
        done
    done
    echo
    echo "The script:"
    echo
    echo '```sieve'
    cat "$SCRIPT"
    echo '```'
    echo
    echo '<details><summary>Raw RESULT lines</summary>'
    echo
    echo '```'
    cat "$RAW"
    echo '```'
    echo '</details>'
} > "$OUT"
cat "$OUT"
bench_log "written to ${OUT#"$ROOT"/}"
