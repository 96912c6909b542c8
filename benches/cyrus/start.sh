#!/usr/bin/env bash
# Starts a private Cyrus IMAP (Debian's 3.6 packages) entirely under DIR, as
# the second reference beside Dovecot (issue 15), set up for benchmarks:
#   LMTP on 127.0.0.1:PORT (preauthenticated, `lmtpd -a`), IMAP on PORT+1
#   (plaintext LOGIN allowed) (no POP3: Debian packs it apart, cyrus-pop3d); its own imapd.conf and
#   cyrus.conf under DIR/etc, spool DIR/spool, config directory DIR/conf;
#   no system service and nothing under /etc or /var is used.
#   Users bench0 .. bench<USERS-1> (RCPT bench<N>@example.com; virtual
#   domains by user id, default domain example.com), password "bench" in a
#   private sasldb; each INBOX is made on its first delivery
#   (`autocreate_post`), or up front with PRECREATE=1 (what the benches use,
#   so that no run pays for creating mailboxes).
# Prints the master PID on stdout (the only thing on stdout). Stop it with
# stop.sh DIR.
#
# Usage: start.sh DIR PORT [USERS]     (USERS defaults to 100)
# CYRUS_CONF_EXTRA: lines added to imapd.conf; CYRUS_SERVICES_EXTRA: lines
# added to cyrus.conf's SERVICES; e.g. replication (benches/catchup_cyrus.sh).
# Needs cyrus-common (master, lmtpd, ctl_cyrusdb) and sasl2-bin, and Cyrus's
# imapd. Do NOT `apt-get install cyrus-imapd` where Dovecot is installed:
# both packages provide and conflict with "imap-server", so apt removes
# dovecot-imapd (and, through cyrus-common's Recommends, may swap
# dovecot-pop3d for cyrus-pop3d), which the tests and the other benches
# need. Unpack Cyrus's imapd beside Dovecot instead:
#   apt-get install -y --no-install-recommends cyrus-common cyrus-admin sasl2-bin
#   cd /tmp && apt-get download cyrus-imapd && dpkg-deb -x cyrus-imapd_*.deb /opt/cyrus-imapd
# (CYRUS_IMAPD names another imapd.)
# As root, Cyrus runs as its system user "cyrus" (the package makes it);
# DIR must be reachable by that user.
set -euo pipefail

if [[ $# -lt 2 ]]; then
    echo "usage: $0 DIR PORT [USERS]" >&2
    exit 2
fi
DIR=$1
PORT=$2
NUSERS=${3:-100}
PRECREATE=${PRECREATE:-1}
MASTER=${CYRUS_MASTER:-/usr/sbin/cyrmaster}
BIN=/usr/lib/cyrus/bin
IMAPD=${CYRUS_IMAPD:-}
if [[ -z $IMAPD ]]; then
    for t in "$BIN/imapd" /opt/cyrus-imapd/usr/lib/cyrus/bin/imapd; do
        [[ -x $t ]] && { IMAPD=$t; break; }
    done
fi

for t in "$MASTER" "${IMAPD:-imapd}" "$BIN/lmtpd" "$BIN/ctl_cyrusdb" /usr/sbin/saslpasswd2; do
    if [[ ! -x $t ]]; then
        echo "$t is missing: see the top of $0 for how to install Cyrus beside Dovecot" >&2
        exit 1
    fi
done
# shellcheck source=benches/private_server.sh
source "$(dirname "${BASH_SOURCE[0]}")/../private_server.sh"
DIR=$(private_dir cyrus "$DIR")
mkdir -p "$DIR/etc" "$DIR/run" "$DIR/conf" "$DIR/spool" "$DIR/log" "$DIR/conf/socket" "$DIR/conf/proc" "$DIR/conf/lock"

cat > "$DIR/etc/imapd.conf" <<CONF
configdirectory: $DIR/conf
partition-default: $DIR/spool
defaultpartition: default
servername: bench
admins: cyrus
virtdomains: userid
defaultdomain: example.com
unixhierarchysep: yes
altnamespace: yes
allowplaintext: yes
sasl_pwcheck_method: auxprop
sasl_auxprop_plugin: sasldb
sasl_sasldb_path: $DIR/conf/sasldb2
sasl_mech_list: PLAIN LOGIN
autocreate_post: yes
autocreate_quota: 0
duplicatesuppression: no
lmtpsocket: $DIR/conf/socket/lmtp
idlesocket: $DIR/conf/socket/idle
notifysocket: $DIR/conf/socket/notify
mboxname_lockpath: $DIR/conf/lock
proc_path: $DIR/conf/proc
syslog_prefix: cyrus-bench
tls_server_cert: disabled
tls_server_key: disabled
${CYRUS_CONF_EXTRA:-}
CONF

cat > "$DIR/etc/cyrus.conf" <<CONF
START {
  recover cmd="$BIN/ctl_cyrusdb -C $DIR/etc/imapd.conf -r"
}
SERVICES {
  imap cmd="$IMAPD -C $DIR/etc/imapd.conf -U 1000" listen="127.0.0.1:$((PORT + 1))" prefork=1 maxchild=2000
  lmtp cmd="$BIN/lmtpd -C $DIR/etc/imapd.conf -a -U 100000" listen="127.0.0.1:$PORT" prefork=1 maxchild=200
${CYRUS_SERVICES_EXTRA:-}
}
EVENTS {
  checkpoint cmd="$BIN/ctl_cyrusdb -C $DIR/etc/imapd.conf -c" period=30
}
CONF

for ((i = 0; i < NUSERS; i++)); do
    printf 'bench\n' | /usr/sbin/saslpasswd2 -f "$DIR/conf/sasldb2" -p -c -u bench "bench$i"
done
if [[ $(id -u) -eq 0 ]]; then
    chmod 755 "$DIR"
    chown -R cyrus:mail "$DIR"
    AS_CYRUS=(runuser -u cyrus --)
else
    AS_CYRUS=()
fi
# Directories a fresh config directory needs (mkimap's job, done by hand
# here so that nothing outside DIR is read).
for d in db sieve quota user msg ptclient log sync; do
    "${AS_CYRUS[@]}" mkdir -p "$DIR/conf/$d"
done

rm -f "$DIR/run/master.pid"
"$MASTER" -C "$DIR/etc/imapd.conf" -M "$DIR/etc/cyrus.conf" -p "$DIR/run/master.pid" \
    >>"$DIR/log/master.log" 2>&1 &

for ((i = 0; i < 100; i++)); do
    if [[ -s $DIR/run/master.pid ]] && (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
        PID=$(cat "$DIR/run/master.pid")
        break
    fi
    sleep 0.1
done
if [[ -z ${PID:-} ]]; then
    echo "cyrus did not start listening on 127.0.0.1:$PORT within 10 s; log follows:" >&2
    tail -n 20 "$DIR/log/master.log" >&2 || true
    exit 1
fi
if [[ $PRECREATE == 1 ]]; then
    # One delivery per user makes each INBOX (autocreate_post), then the
    # mailboxes are emptied again so that runs start from empty INBOXes.
    python3 - "$PORT" "$NUSERS" <<'PY'
import smtplib, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
lmtp = smtplib.LMTP("127.0.0.1", port)
for i in range(n):
    lmtp.sendmail("setup@bench.example", [f"bench{i}@example.com"],
                  b"Subject: setup\r\n\r\nmailbox created\r\n")
lmtp.quit()
PY
    "${AS_CYRUS[@]}" "$BIN/ipurge" -C "$DIR/etc/imapd.conf" -f -d 0 'user/*' >/dev/null 2>&1 || true
fi
echo "cyrus $($BIN/cyr_info -C "$DIR/etc/imapd.conf" version 2>/dev/null || echo 3.6) running from $DIR: pid $PID, lmtp 127.0.0.1:$PORT, imap :$((PORT + 1)), log $DIR/log/master.log and syslog" >&2
echo "$PID"
