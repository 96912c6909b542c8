# Helpers shared by benches/lmtp.sh and benches/imap.sh (sourced, not run).

# Wait until 127.0.0.1:PORT accepts connections, while process PID lives.
wait_port() { # PORT PID SECONDS
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# The value of KEY in a cove-load RESULT line.
kv() { # KEY RESULT-LINE
    tr ' ' '\n' <<<"$2" | sed -n "s/^$1=//p"
}

# Stop the cove started by the script (SIGTERM, then SIGKILL after 10 s).
stop_cove() {
    if [[ -n ${COVE_PID:-} ]] && kill -0 "$COVE_PID" 2>/dev/null; then
        kill -TERM "$COVE_PID"
        for _ in $(seq 100); do kill -0 "$COVE_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$COVE_PID" 2>/dev/null || true
        wait "$COVE_PID" 2>/dev/null || true
    fi
    COVE_PID=""
}

# Log a step on stderr.
bench_log() { echo "== $(date +%T) $*" >&2; }

# A cove and a private Dovecot side by side under a new temp dir, each with
# the user bench0@example.com (password $PASS), for the benchmarks that
# compare them (pop3.sh, idle_deliveries.sh). Needs ROOT, COVE, PASS,
# COVE_PORT (cove's LMTP), DOVECOT_PORT and KEEP. Sets WORK, COVE_PID and
# DOVECOT_PID, defines pid_of and port_of, and stops both at exit.
#   start_pair PREFIX SECTIONS WAIT_PORT [same-hash]
# SECTIONS: cove.toml after its [lmtp] section; WAIT_PORT: a cove port to
# wait for; same-hash: Dovecot's user gets the argon2id hash cove stored,
# so both pay the same password check at each login (else {PLAIN}).
start_pair() {
    WORK=$(mktemp -d "/tmp/$1.XXXXXX")
    chmod 755 "$WORK"
    COVE_PID=""
    DOVECOT_PID=""
    trap stop_pair EXIT
    {
        printf 'data_dir = "%s"\nhostname = "bench"\n\n' "$WORK/cove-data"
        printf '[lmtp]\nlisten = ["127.0.0.1:%s"]\n\n%s\n' "$COVE_PORT" "$2"
    } > "$WORK/cove.toml"
    # Admin commands act only on an existing data directory.
    mkdir -p "$WORK/cove-data"
    printf '%s\n' "$PASS" | "$COVE" user add bench0@example.com --password-stdin --config "$WORK/cove.toml" >/dev/null
    "$COVE" serve --config "$WORK/cove.toml" >>"$WORK/cove.log" 2>&1 &
    COVE_PID=$!
    wait_port "$3" "$COVE_PID" 30 || { tail -n 30 "$WORK/cove.log" >&2; exit 1; }
    local hash="{PLAIN}$PASS"
    if [[ ${4:-} == same-hash ]]; then
        hash=$(python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT password FROM user").fetchone()[0])' "$WORK/cove-data/cove.db")
        [[ $hash == '$argon2id$'* ]] || { echo "unexpected cove password hash: $hash" >&2; exit 1; }
        hash="{ARGON2ID}$hash"
    fi
    DOVECOT_PID=$(PASSWORD_HASH="$hash" bash "$ROOT/benches/dovecot/start.sh" "$WORK/dovecot" "$DOVECOT_PORT" 1)
    bench_log "cove pid $COVE_PID, dovecot pid $DOVECOT_PID"
}

pid_of() { case $1 in cove) echo "$COVE_PID" ;; dovecot) echo "$DOVECOT_PID" ;; cyrus) echo "$CYRUS_PID" ;; esac; }
port_of() { case $1 in cove) echo "$COVE_PORT" ;; dovecot) echo "$DOVECOT_PORT" ;; cyrus) echo "$CYRUS_PORT" ;; esac; }

# A private Cyrus IMAP beside start_pair's servers (benches/cyrus/start.sh,
# USERS users) under $WORK/cyrus, LMTP on CYRUS_PORT; stop_pair stops it.
start_cyrus_too() { # USERS
    CYRUS_PID=$(bash "$ROOT/benches/cyrus/start.sh" "$WORK/cyrus" "$CYRUS_PORT" "$1")
}

# start_pair's cove's bench0 INBOX copied into a reference server's bench0
# INBOX instead of delivering it again over LMTP (LMTP into one big INBOX is
# the slow part of a big bench for Dovecot and Cyrus): the same bytes, like a
# migrated mailbox, in cove's UID order (cove's own names sort by a random
# GUID within a second), keeping their mtimes (the received date), so the
# servers number the messages alike and equal answers hash alike.
#   dovecot DIR: files <secs>.M<n>P1.cove in DIR/cur; Dovecot indexes them
#                at its first SELECT.
#   cyrus DIR:   files <uid>. in the mailbox directory DIR, numbered on from
#                the highest one there; `reconstruct` must index them.
copy_cove_inbox() { # dovecot|cyrus DIR
    python3 - "$WORK/cove-data/mail/example.com/bench0" "$1" "$2" <<'EOF'
import os, shutil, sqlite3, sys
home, kind, to = sys.argv[1:]
if kind == "dovecot":
    for d in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(to, d), exist_ok=True)
    first = 1
else:
    first = 1 + max((int(f[:-1]) for f in os.listdir(to) if f.endswith(".") and f[:-1].isdigit()), default=0)
files = {}  # cove's GUID (the G part of its file names) -> path
for d in ("cur", "new"):
    for name in os.listdir(os.path.join(home, "Maildir", d)):
        if name[:1].isdigit():
            files[name.split(".")[1][1:].lower()] = os.path.join(home, "Maildir", d, name)
db = sqlite3.connect(f"file:{home}/index.sqlite?mode=ro", uri=True)
rows = db.execute("SELECT hex(m.guid) FROM message m JOIN mailbox b ON b.id = m.mailbox_id"
                  " WHERE b.name = 'INBOX' ORDER BY m.uid")
for n, (guid,) in enumerate(rows, first):
    src = files.pop(guid.lower())
    if kind == "dovecot":
        secs = os.path.basename(src).split(".")[0]
        dst = os.path.join(to, "cur", f"{secs}.M{n:07d}P1.cove,S={os.path.getsize(src)}:2,")
    else:
        dst = os.path.join(to, f"{n}.")
    shutil.copy2(src, dst)
if files:
    sys.exit(f"{len(files)} message files are not in cove's INBOX index")
EOF
}

copy_to_dovecot() {
    copy_cove_inbox dovecot "$WORK/dovecot/mail/example.com/bench0/Maildir"
    chown -R --reference="$WORK/dovecot/mail" "$WORK/dovecot/mail/example.com"
}

# The same into start_cyrus_too's Cyrus (bench0's INBOX must exist: its
# start.sh makes it with PRECREATE=1), indexed by `reconstruct`, which
# parses every message into cyrus.index and cyrus.cache as its LMTP does.
copy_to_cyrus() {
    local conf=$WORK/cyrus/etc/imapd.conf bin=/usr/lib/cyrus/bin as=() dir
    [[ $(id -u) -eq 0 ]] && as=(runuser -u cyrus --)
    dir=$("${as[@]}" "$bin/mbpath" -C "$conf" user/bench0@example.com)
    copy_cove_inbox cyrus "$dir"
    [[ $(id -u) -eq 0 ]] && chown -R cyrus:mail "$dir"
    "${as[@]}" "$bin/reconstruct" -C "$conf" -u bench0@example.com | tail -n 1 >&2
}

# Refuse to start when something already listens on one of the ports: the
# bench would measure that server (wait_port cannot tell it from ours).
require_free_ports() { # PORT...
    local p
    for p in "$@"; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "127.0.0.1:$p is already in use (another bench?): choose other ports (see the knobs)" >&2
            exit 1
        fi
    done
}

# The exit trap of start_pair.
stop_pair() {
    set +e
    stop_cove
    [[ -n $DOVECOT_PID ]] && bash "$ROOT/benches/dovecot/stop.sh" "$WORK/dovecot"
    [[ -n ${CYRUS_PID:-} ]] && bash "$ROOT/benches/cyrus/stop.sh" "$WORK/cyrus"
    if [[ $KEEP == 1 ]]; then bench_log "kept $WORK"; else rm -rf "$WORK"; fi
}
