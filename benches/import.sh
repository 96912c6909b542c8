#!/usr/bin/env bash
# `cove import maildir` benchmark (issue 6).
#
#   bash benches/import.sh
#
# Builds cove (release) and writes Dovecot Maildir++ trees directly (files
# with LF line ends named as Dovecot names them, `dovecot-uidlist` v3,
# `dovecot-keywords`, `subscriptions`; not made by a running Dovecot, which
# would take longer than the import), then:
#   1. speed: one user, BIG messages (default 100,000; 1-8 KiB each, in
#      INBOX and four folders, a third with flags, some with keywords, UID
#      gaps): `cove import maildir --user`, wall time and messages/s; then the
#      same command again (nothing to do) and its time;
#   2. dedup: USERS users x PER_USER messages (default 100 x 1,000), SHARED
#      percent of each user's mail being the same messages (the same bytes,
#      as Dovecot's LMTP writes them with lmtp_hdr_delivery_address = none
#      and lmtp_add_received_header = no; with Dovecot's defaults each copy
#      carries its recipient in Delivered-To and Received and nothing is
#      shared): `cove import maildir --users`, then `cove dedup stats`.
# Writes benches/results/import-<date>.md (also printed).
#
# Knobs: BIG=100000 USERS=100 PER_USER=1000 SHARED=50 KEEP=1 (keep the
#        temp dir) DURABILITY=batched
#        COVES="cove:target/release/cove"  LABEL:BINARY pairs; each imports
#               the same BIG tree into a fresh data directory, in turn,
#               ROUNDS=1 times (alternating), and the report gives each
#               one's median (the first pair also does the rest)
#        STRACE=0   1: after the timed rounds, one more import per binary
#               under `strace -f -c` (page I/O and flushes per message)
#        USERS=0    skips the many-user part
set -euo pipefail
shopt -s inherit_errexit

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIG=${BIG:-100000}
USERS=${USERS:-100}
PER_USER=${PER_USER:-1000}
SHARED=${SHARED:-50}
DURABILITY=${DURABILITY:-batched}

COVES=${COVES:-"cove:$ROOT/target/release/cove"}
ROUNDS=${ROUNDS:-1}
STRACE=${STRACE:-0}
[[ $COVES == "cove:$ROOT/target/release/cove" ]] && cargo build --release -q -p cove --manifest-path "$ROOT/Cargo.toml"
FIRST_PAIR=${COVES%% *}
COVE=${FIRST_PAIR#*:}
DIR=$(mktemp -d /tmp/coveimportbench.XXXXXX)
cleanup() {
    if [[ -z ${KEEP:-} ]]; then rm -rf "$DIR"; else echo "kept $DIR" >&2; fi
}
trap cleanup EXIT

# Write Maildir++ trees as Dovecot leaves them.
#   gen.py ROOT USER_INDEX COUNT SHARED_PERCENT
cat > "$DIR/gen.py" <<'PY'
import os, random, sys
root, user, count, shared = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rnd = random.Random(user)
folders = ["", ".Sent", ".Archive", ".Work", ".Work.Projects"]
weights = [60, 15, 15, 5, 5]
keywords = ["$Forwarded", "NonJunk", "$Label1", "Later"]
_pr = random.Random(12345)
_words = []
_n = 0
while _n < (1 << 20):
    _words.append("".join(_pr.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(_pr.randint(2, 9))))
    _n += len(_words[-1]) + 1
POOL = "\n".join(" ".join(_words[i:i + 12]) for i in range(0, len(_words), 12)) + "\n"
def body(seed, size):
    # A slice of a fixed pool of text: distinct messages differ in their
    # headers (and usually their slice), shared ones are the same bytes.
    off = random.Random(str(seed)).randrange(len(POOL) - size - 1)
    return POOL[off:off + size] + "\n"
per = {f: [] for f in folders}
for i in range(count):
    if rnd.randrange(100) < shared:
        # One of PER_USER * SHARED% messages every user got.
        k = rnd.randrange(max(1, count * shared // 100))
        msg = ("Return-Path: <news@example.org>\nFrom: news@example.org\nTo: all@example.com\n"
               "Subject: company news %d\nMessage-ID: <shared%d@example.org>\n"
               "Date: Mon, 01 Jun 2026 10:00:00 +0000\n\n" % (k, k)) + body(("s", k), 1024 + (k * 7919) % 7168)
    else:
        msg = ("Return-Path: <friend@example.org>\nFrom: friend@example.org\nTo: u%d@example.com\n"
               "Subject: personal %d\nMessage-ID: <u%d.%d@example.org>\n"
               "Date: Mon, 01 Jun 2026 10:00:00 +0000\n\n" % (user, i, user, i)) + body(("u", user, i), 1024 + rnd.randrange(7168))
    f = rnd.choices(folders, weights)[0]
    per[f].append(msg.encode())
uv = 1700000000 + user * 10
for n, f in enumerate(folders):
    d = os.path.join(root, f) if f else root
    for s in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(d, s), exist_ok=True)
    lines = []
    uid = 0
    t = 1750000000
    for j, data in enumerate(per[f]):
        uid += 1 + (1 if rnd.randrange(20) == 0 else 0)   # gaps: expunged UIDs
        t += 37
        base = "%d.M%dP%d.oldhost,S=%d,W=%d" % (t, j, user, len(data), len(data) + data.count(b"\n"))
        letters = ""
        r = rnd.randrange(3)
        if r == 1: letters += "S"
        if r == 2: letters += "FS"
        if rnd.randrange(10) == 0: letters += "ab"[rnd.randrange(2)]
        if rnd.randrange(25) == 0: letters += "cd"[rnd.randrange(2)]
        letters = "".join(sorted(set(letters)))
        name = base + ":2," + letters
        p = os.path.join(d, "cur", name)
        with open(p, "wb") as fh:
            fh.write(data)
        os.utime(p, (t, t))
        lines.append("%d :%s" % (uid, base))
    with open(os.path.join(d, "dovecot-uidlist"), "w") as fh:
        fh.write("3 V%d N%d G%032x\n" % (uv + n, uid + 1, (user << 8) | n))
        fh.write("\n".join(lines) + ("\n" if lines else ""))
    with open(os.path.join(d, "dovecot-keywords"), "w") as fh:
        fh.write("".join("%d %s\n" % (i, k) for i, k in enumerate(keywords)))
with open(os.path.join(root, "subscriptions"), "w") as fh:
    fh.write("V\t2\n\n" + "".join(f[1:].replace(".", "\t") + "\n" for f in folders if f))
PY

# An LMTP listener only because a configuration must serve something; the
# import never listens.
config() { # DATA_DIR
    printf 'data_dir = "%s"\nhostname = "bench"\n[server]\ndurability = "%s"\n[lmtp]\nlisten = ["127.0.0.1:0"]\n' "$1" "$DURABILITY"
}
# The [server] durability key: fall back to no section if this build has none.
if ! grep -q 'durability' "$ROOT/server/src/config.rs"; then
    config() { printf 'data_dir = "%s"\nhostname = "bench"\n' "$1"; }
fi
secs() { date +%s.%N; }

echo "generating $BIG messages for one user ..." >&2
python3 "$DIR/gen.py" "$DIR/dovecot/big/Maildir" 0 "$BIG" 0
BIG_BYTES=$(du -sb "$DIR/dovecot/big/Maildir" | cut -f1)
# One import of the BIG tree into a fresh data directory: prints seconds.
#   import_big BINARY DIR [WRAPPER...]
import_big() {
    local bin=$1 data=$2
    shift 2
    rm -rf "$data"
    mkdir -p "$data"
    config "$data" > "$data.toml"
    "$bin" --config "$data.toml" user add big@example.com >/dev/null
    sync
    local t0 t1
    t0=$(secs)
    "$@" "$bin" --config "$data.toml" import maildir --user big@example.com "$DIR/dovecot/big/Maildir" > "$data.out"
    t1=$(secs)
    echo "$t1 - $t0" | bc -l
}
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)
: > "$DIR/rounds.txt"
for ((r = 1; r <= ROUNDS; r++)); do
    for pair in $COVES; do
        label=${pair%%:*}
        bin=${pair#*:}
        s_=$(import_big "$bin" "$DIR/cove-$label")
        echo "$label $r $s_ $(cut -d' ' -f1 /proc/loadavg)" | tee -a "$DIR/rounds.txt" >&2
        if [[ $pair == "$FIRST_PAIR" && $r == "$ROUNDS" ]]; then
            # Kept for the second run and the listing below.
            KEPT=$DIR/cove-$label
            OUT1=$(cat "$KEPT.out")
        else
            rm -rf "$DIR/cove-$label"
        fi
    done
done
LOAD1B=$(cut -d' ' -f1-3 /proc/loadavg)
# Median seconds of LABEL's rounds.
median_of() {
    awk -v l="$1" '$1 == l { print $3 }' "$DIR/rounds.txt" | sort -n |
        awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
: > "$DIR/strace.txt"
if [[ $STRACE == 1 ]]; then
    for pair in $COVES; do
        label=${pair%%:*}
        import_big "${pair#*:}" "$DIR/cove-$label" strace -f -c -o "$DIR/strace-$label.txt" >/dev/null
        rm -rf "$DIR/cove-$label"
        awk -v l="$label" -v n="$BIG" '
            $NF ~ /^(pread64|pwrite64|fsync|fdatasync|read|write|openat|linkat|renameat2?|rename)$/ {
                c = ($4 ~ /^[0-9]+$/) ? $4 : $5; printf "%s %s %d %.2f\n", l, $NF, c, c / n }' \
            "$DIR/strace-$label.txt" >> "$DIR/strace.txt"
    done
fi
T0=$(secs)
OUT1B=$("$COVE" --config "$KEPT.toml" import maildir --user big@example.com "$DIR/dovecot/big/Maildir")
T2=$(secs)
FIRST=$(median_of "${FIRST_PAIR%%:*}")
SECOND=$(echo "$T2 - $T0" | bc -l)
RATE=$(echo "$BIG / $FIRST" | bc -l)
LIST1=$("$COVE" --config "$KEPT.toml" mailbox list big@example.com)
rm -rf "$KEPT"

if [[ $USERS -gt 0 ]]; then
echo "generating $USERS users x $PER_USER messages ($SHARED% shared) ..." >&2
: > "$DIR/users.txt"
for ((u = 1; u <= USERS; u++)); do
    python3 "$DIR/gen.py" "$DIR/dovecot/u$u/Maildir" "$u" "$PER_USER" "$SHARED"
    echo "u$u@example.com $DIR/dovecot/u$u/Maildir" >> "$DIR/users.txt"
done
config "$DIR/cove2" > "$DIR/cove2.toml"
sync
LOAD2=$(cut -d' ' -f1-3 /proc/loadavg)
T0=$(secs)
OUT2=$("$COVE" --config "$DIR/cove2.toml" import maildir --create-users --users "$DIR/users.txt" | tail -n 1)
T1=$(secs)
MULTI=$(echo "$T1 - $T0" | bc -l)
STATS=$("$COVE" --config "$DIR/cove2.toml" dedup stats)
fi

DATE=$(date -u +%Y-%m-%d)
OUT="$ROOT/benches/results/import-$DATE.md"
{
    echo "# cove import maildir, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo
    echo "Release build, durability \`$DURABILITY\`, $(nproc) CPUs shared with other work; Dovecot trees written by benches/import.sh (Maildir files with LF line ends + dovecot-uidlist v3 + dovecot-keywords + subscriptions), not by a running Dovecot."
    echo
    echo "| figure | value |"
    echo "|---|---|"
    printf '| one user, %d messages (%d MiB of Maildir, 5 folders): first import | %.1f s |\n' "$BIG" $((BIG_BYTES >> 20)) "$FIRST"
    printf '| ... messages/s | %.0f |\n' "$RATE"
    for pair in $COVES; do
        label=${pair%%:*}
        m=$(median_of "$label")
        printf '| %s: first import, median of %d (%s) | %.1f s, %.0f messages/s |\n' "$label" "$ROUNDS" \
            "$(awk -v l="$label" '$1 == l { printf "%s%.1f s", sep, $3; sep = ", " }' "$DIR/rounds.txt")" "$m" "$(echo "$BIG / $m" | bc -l)"
    done
    printf '| ... second run (nothing to do) | %.1f s |\n' "$SECOND"
    while read -r label call count per; do
        printf '| %s under `strace -f -c`: %s | %s (%s per message) |\n' "$label" "$call" "$count" "$per"
    done < "$DIR/strace.txt"
    echo "| load average before / after the timed rounds | $LOAD1 / $LOAD1B |"
    if [[ $USERS -gt 0 ]]; then
        printf '| %d users x %d messages, %d%% the same mail: import | %.1f s (%.0f messages/s) |\n' "$USERS" "$PER_USER" "$SHARED" "$MULTI" "$(echo "$USERS * $PER_USER / $MULTI" | bc -l)"
        echo "| ... dedup ratio (logical / stored bytes, \`cove dedup stats\`) | $(sed -n 's/^dedup ratio: *//p' <<<"$STATS") |"
        echo "| load average before the big import / the many-user import | $LOAD1 / $LOAD2 |"
    fi
    echo
    echo '```'
    echo "$OUT1"
    echo "$OUT1B"
    echo "$LIST1"
    echo "${OUT2:-}"
    echo "${STATS:-}"
    echo '```'
} > "$OUT"
cat "$OUT"
