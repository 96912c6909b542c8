#!/usr/bin/env bash
# Starts a private Dovecot (Debian's 2.3 packages) entirely under DIR, set up
# like cove for benchmarks:
#   Maildir at DIR/mail/<domain>/<local>/Maildir, mail_fsync = always,
#   LMTP on 127.0.0.1:PORT, IMAP on PORT+1, POP3 on PORT+2 (plaintext, no TLS),
#   users bench0@example.com .. bench999@example.com, password "bench"
#   (passwd-file under DIR; no system users, no PAM).
# Prints the master PID on stdout (the only thing on stdout); the rest goes to
# stderr. Stop it with stop.sh DIR.
#
# Usage: start.sh DIR PORT [USERS]     (USERS defaults to 1000)
# Environment: PASSWORD_HASH (default {PLAIN}bench) is every user's password
# field, e.g. {ARGON2ID}$argon2id$... to make Dovecot verify the same hash a
# cove user has (benches/pop3.sh does, for its login timings).
# IMAP_VSZ_LIMIT (default Dovecot's 256M) is each imap process's address
# space limit (a mailbox of 1,000,000 messages needs more: benches/million.sh).
# IMAP_CONNS=N (default 1000) raises the limits on concurrent
# IMAP sessions (imap processes, per-user/IP sessions, client limits of the
# log/anvil/auth/stats services) for IDLE benchmarks with many connections;
# Dovecot runs one imap process per session.
# SIEVE=1 runs Pigeonhole's Sieve in LMTP (each user's ~/.dovecot.sieve;
# needs dovecot-sieve), for benches/sieve.sh.
# MAIL_FSYNC=never (default always) for loading big mailboxes fast when
# only reads are measured.
# IMAP_ZLIB=1 loads imap_zlib (COMPRESS=DEFLATE), for benches/imap_issue14.sh.
# DOVECOT_IMAP_ROOT=DIR takes imap, imap-login and the IMAP plugins from an
# unpacked dovecot-imapd (`apt-get download dovecot-imapd; dpkg-deb -x
# dovecot-imapd_*.deb DIR`) instead of /usr/lib/dovecot: the package
# conflicts with cyrus-imapd, which other benchmarks install.
# Needs: apt-get install dovecot-core dovecot-lmtpd dovecot-imapd dovecot-pop3d
# As root, virtual mail is owned by the system user "covemail" (created if
# missing); as any other user, everything runs as that user.
set -euo pipefail

if [[ $# -lt 2 ]]; then
    echo "usage: $0 DIR PORT [USERS]" >&2
    exit 2
fi
DIR=$1
PORT=$2
NUSERS=${3:-1000}
IMAP_CONNS=${IMAP_CONNS:-1000}
IMAP_VSZ_LIMIT=${IMAP_VSZ_LIMIT:-256M}
PASSWORD_HASH=${PASSWORD_HASH:-"{PLAIN}bench"}
SIEVE=${SIEVE:-0}
IMAP_ZLIB=${IMAP_ZLIB:-0}
MAIL_FSYNC=${MAIL_FSYNC:-always}
DOVECOT_IMAP_ROOT=${DOVECOT_IMAP_ROOT:-}
if [[ $PASSWORD_HASH == *:* ]]; then
    echo "PASSWORD_HASH must not contain ':' (passwd-file fields)" >&2
    exit 2
fi
if ! [[ $IMAP_CONNS =~ ^[0-9]+$ ]] || (( IMAP_CONNS < 1 )); then
    echo "IMAP_CONNS must be a positive number" >&2
    exit 2
fi
# Sessions plus the other services' processes; the log, anvil, auth and stats
# services take one client per process.
CLIENT_LIMIT=$(( IMAP_CONNS > 1000 ? IMAP_CONNS + 2000 : 1000 ))
USERIP_LIMIT=$(( IMAP_CONNS > 10000 ? IMAP_CONNS : 10000 ))
DOVECOT=${DOVECOT:-/usr/sbin/dovecot}

if [[ ! -x $DOVECOT ]]; then
    echo "dovecot not found at $DOVECOT; install it with:" >&2
    echo "  apt-get install -y dovecot-core dovecot-lmtpd dovecot-imapd dovecot-pop3d" >&2
    exit 1
fi
for m in lmtp imap pop3; do
    libexec=/usr/lib/dovecot
    [[ $m == imap && -n $DOVECOT_IMAP_ROOT ]] && libexec=$DOVECOT_IMAP_ROOT/usr/lib/dovecot
    if [[ ! -x $libexec/$m ]]; then
        echo "dovecot's $m is missing; apt-get install -y dovecot-${m}d" >&2
        exit 1
    fi
done

# shellcheck source=benches/private_server.sh
source "$(dirname "${BASH_SOURCE[0]}")/../private_server.sh"
DIR=$(private_dir dovecot "$DIR")
mkdir -p "$DIR/etc" "$DIR/run" "$DIR/state" "$DIR/log" "$DIR/mail"
IMAP_SETTINGS=""
if [[ -n $DOVECOT_IMAP_ROOT ]]; then
    # The installed plugins and the unpacked IMAP ones, in one directory.
    mkdir -p "$DIR/modules"
    ln -sf /usr/lib/dovecot/modules/* "$DOVECOT_IMAP_ROOT"/usr/lib/dovecot/modules/* "$DIR/modules/"
    IMAP_SETTINGS="mail_plugin_dir = $DIR/modules"
    for exe in "$DOVECOT_IMAP_ROOT"/usr/lib/dovecot/imap*; do
        IMAP_SETTINGS="$IMAP_SETTINGS
service $(basename "$exe") {
  executable = $exe
}"
    done
fi
if [[ $IMAP_ZLIB == 1 ]]; then
    IMAP_SETTINGS="$IMAP_SETTINGS
protocol imap {
  mail_plugins = \$mail_plugins zlib imap_zlib
}"
fi

if [[ $(id -u) -eq 0 ]]; then
    MAILUSER=covemail
    if ! id "$MAILUSER" >/dev/null 2>&1; then
        useradd --system --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin --user-group "$MAILUSER"
        echo "created system user $MAILUSER" >&2
    fi
    MAILUID=$(id -u "$MAILUSER")
    MAILGID=$(id -g "$MAILUSER")
    # Dovecot's internal (dovecot) and login (dovenull) users need to walk
    # into DIR to reach the config and the sockets.
    chmod 755 "$DIR"
    chown "$MAILUID:$MAILGID" "$DIR/mail"
    d=$(dirname "$DIR")
    while [[ $d != / ]]; do
        if ! runuser -u dovecot -- test -x "$d" 2>/dev/null; then
            echo "dovecot's internal user cannot enter $d (mode $(stat -c %a "$d")); chmod o+x it or pick a DIR elsewhere" >&2
            exit 1
        fi
        d=$(dirname "$d")
    done
    PRIV_SETTINGS=""
else
    MAILUID=$(id -u)
    MAILGID=$(id -g)
    ME=$(id -un)
    # Non-root: every service runs as the invoking user, without chroots.
    PRIV_SETTINGS="default_internal_user = $ME
default_internal_group = $(id -gn)
default_login_user = $ME
service anvil {
  chroot =
}
service imap-login {
  chroot =
}
service pop3-login {
  chroot =
}"
fi

# passwd-file: user:password:uid:gid:gecos:home:shell:extra
USERS=$DIR/etc/users
: > "$USERS.new"
for ((i = 0; i < NUSERS; i++)); do
    echo "bench$i@example.com:$PASSWORD_HASH:$MAILUID:$MAILGID::$DIR/mail/example.com/bench$i::" >> "$USERS.new"
done
mv "$USERS.new" "$USERS"
chmod 644 "$USERS"

CONF=$DIR/etc/dovecot.conf
cat > "$CONF" <<CONF
# Generated by benches/dovecot/start.sh; self-contained (no conf.d includes).
base_dir = $DIR/run
state_dir = $DIR/state
instance_name = cove-bench-$PORT
log_path = $DIR/log/dovecot.log
info_log_path = $DIR/log/dovecot.log
debug_log_path = $DIR/log/dovecot.log

protocols = lmtp imap pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login

# Same durability promise as cove: data on disk before the 250 / OK.
mail_fsync = $MAIL_FSYNC
mail_location = maildir:$DIR/mail/%d/%n/Maildir
mail_uid = $MAILUID
mail_gid = $MAILGID
first_valid_uid = $MAILUID
last_valid_uid = $MAILUID
first_valid_gid = $MAILGID
last_valid_gid = $MAILGID
# Benchmarks open many sessions per user from one address.
mail_max_userip_connections = $USERIP_LIMIT
default_client_limit = $CLIENT_LIMIT

passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $USERS
}
userdb {
  driver = passwd-file
  args = username_format=%u $USERS
}

$PRIV_SETTINGS

service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = $PORT
  }
  # Long-lived lmtp processes (one per connection), so their CPU time can be
  # sampled from /proc during a run; exited ones still show up in the
  # master's cutime/cstime.
  service_count = 0
  client_limit = 1
  process_limit = 500
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $((PORT + 1))
  }
  inet_listener imaps {
    port = 0
  }
}
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = $((PORT + 2))
  }
  inet_listener pop3s {
    port = 0
  }
}
service imap {
  process_limit = $IMAP_CONNS
  vsz_limit = $IMAP_VSZ_LIMIT
}
$IMAP_SETTINGS
$(if [[ $SIEVE == 1 ]]; then printf 'protocol lmtp {\n  mail_plugins = $mail_plugins sieve\n}\nplugin {\n  sieve = file:~/sieve;active=~/.dovecot.sieve\n}\n'; fi)
service pop3 {
  process_limit = 1000
}
CONF

if ! doveconf -c "$CONF" -n >/dev/null 2>"$DIR/log/doveconf.err"; then
    echo "dovecot rejects the generated config $CONF:" >&2
    cat "$DIR/log/doveconf.err" >&2
    exit 1
fi

rm -f "$DIR/run/master.pid"
"$DOVECOT" -c "$CONF"

# Wait until the master wrote its PID and LMTP accepts connections.
for ((i = 0; i < 100; i++)); do
    if [[ -s $DIR/run/master.pid ]] && (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
        PID=$(cat "$DIR/run/master.pid")
        echo "dovecot $(dovecot --version | cut -d' ' -f1) running from $DIR: pid $PID, lmtp 127.0.0.1:$PORT, imap :$((PORT + 1)), pop3 :$((PORT + 2)), log $DIR/log/dovecot.log" >&2
        echo "$PID"
        exit 0
    fi
    sleep 0.1
done
echo "dovecot did not start listening on 127.0.0.1:$PORT within 10 s; log follows:" >&2
tail -n 20 "$DIR/log/dovecot.log" >&2 || true
exit 1
