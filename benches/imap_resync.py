"""IMAP resynchronisation and compression figures (issue 14), against one
running server (cove or Dovecot):

- a QRESYNC SELECT after 10 flag changes (bytes received, wall time)
  against what a client without QRESYNC does, SELECT and FETCH 1:* (UID
  FLAGS);
- FETCH 1:N BODY.PEEK[] with and without COMPRESS=DEFLATE (bytes on the
  wire, and the server's CPU time from /proc/PID/stat when PID is given,
  or the session's imap process with --dovecot-master).

Each figure is the median of --runs (3) sessions.

    python3 benches/imap_resync.py HOST:PORT USER PASSWORD [--pid PID]
        [--dovecot-master PID] [--load N --lmtp HOST:PORT] [--fetch 1000]
        [--runs 3]

--load delivers N varied ~4 KiB messages over LMTP first. Prints one
RESULT line of key=value pairs. A benchmark, not a test: it asserts
nothing but that the commands succeed.
"""
import argparse
import os
import random
import smtplib
import socket
import statistics
import time
import zlib


class Wire:
    """A raw IMAP connection counting the bytes it receives."""

    def __init__(self, addr):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=600)
        self.received = 0
        self.buf = b""
        self.inflate = None
        self.deflate = None
        self.n = 0
        self.line()  # greeting

    def _recv(self):
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise EOFError("closed")
        self.received += len(chunk)
        self.buf += self.inflate.decompress(chunk) if self.inflate else chunk

    def line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                out, self.buf = self.buf[: i + 2], self.buf[i + 2 :]
                # A literal: read its bytes too.
                if out.endswith(b"}\r\n") and b"{" in out:
                    n = int(out[out.rindex(b"{") + 1 : -3])
                    while len(self.buf) < n:
                        self._recv()
                    out += self.buf[:n]
                    self.buf = self.buf[n:]
                    return out + self.line()
                return out
            self._recv()

    def cmd(self, text):
        self.n += 1
        tag = f"t{self.n}"
        data = f"{tag} {text}\r\n".encode()
        if self.deflate:
            data = self.deflate.compress(data) + self.deflate.flush(zlib.Z_SYNC_FLUSH)
        self.sock.sendall(data)
        lines = []
        while True:
            l = self.line()
            lines.append(l)
            if l.startswith(tag.encode() + b" "):
                if not l.startswith(tag.encode() + b" OK"):
                    raise RuntimeError(f"{text}: {l!r}")
                return lines

    def compress(self):
        self.cmd("COMPRESS DEFLATE")
        self.deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
        self.inflate = zlib.decompressobj(-15)


def cpu(pid):
    if not pid:
        return 0.0
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def session_pid(a):
    """The process whose CPU a session costs: cove's (--pid), or with
    --dovecot-master the newest `imap` child of Dovecot's master (Dovecot
    runs one imap process per session: call it right after the login)."""
    if not a.dovecot_master:
        return a.pid
    best = (0, 0)
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = open(f"/proc/{d}/stat").read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1: stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        if comm == "imap" and int(fields[1]) == a.dovecot_master:
            best = max(best, (int(fields[19]), int(d)))
    return best[1]


def load(lmtp, user, n):
    host, port = lmtp.rsplit(":", 1)
    words = open("/usr/share/dict/words").read().split() if os.path.exists("/usr/share/dict/words") else [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    rnd = random.Random(14)
    with smtplib.LMTP(host, int(port)) as s:
        for i in range(n):
            body = " ".join(rnd.choice(words) for _ in range(600))
            msg = (f"From: sender{i % 97}@example.org\r\nTo: {user}\r\n"
                   f"Subject: message {i} {rnd.choice(words)}\r\nMessage-ID: <{i}@bench>\r\n\r\n{body}\r\n")
            s.sendmail("bench@example.org", [user], msg.encode())


def login(addr, user, password):
    w = Wire(addr)
    w.cmd(f'LOGIN "{user}" "{password}"')
    return w


def parser():
    """The arguments the IMAP benches share: HOST:PORT USER PASSWORD
    [--pid PID | --dovecot-master PID] [--load N --lmtp HOST:PORT]."""
    p = argparse.ArgumentParser()
    p.add_argument("imap")
    p.add_argument("user")
    p.add_argument("password")
    p.add_argument("--pid", type=int, default=0)
    p.add_argument("--dovecot-master", type=int, default=0)
    p.add_argument("--load", type=int, default=0)
    p.add_argument("--lmtp")
    return p


def main():
    p = parser()
    p.add_argument("--fetch", type=int, default=1000)
    p.add_argument("--runs", type=int, default=3)
    a = p.parse_args()
    if a.load:
        load(a.lmtp, a.user, a.load)

    # What the client knew: UIDVALIDITY and HIGHESTMODSEQ.
    w = login(a.imap, a.user, a.password)
    w.cmd("ENABLE QRESYNC")
    lines = w.cmd("SELECT INBOX")
    validity = next(l for l in lines if b"[UIDVALIDITY " in l).split(b"[UIDVALIDITY ")[1].split(b"]")[0].decode()
    known = next(l for l in lines if b"[HIGHESTMODSEQ " in l).split(b"[HIGHESTMODSEQ ")[1].split(b"]")[0].decode()
    exists = int(next(l for l in lines if l.endswith(b" EXISTS\r\n")).split()[1])
    # Ten flag changes by someone else.
    for seq in random.Random(7).sample(range(1, exists + 1), 10):
        w.cmd(f"STORE {seq} +FLAGS.SILENT (\\Flagged)")

    def qresync():
        r = login(a.imap, a.user, a.password)
        r.cmd("ENABLE QRESYNC")
        before, t = r.received, time.perf_counter()
        r.cmd(f"SELECT INBOX (QRESYNC ({validity} {known}))")
        return r.received - before, (time.perf_counter() - t) * 1000

    def full():
        f = login(a.imap, a.user, a.password)
        before, t = f.received, time.perf_counter()
        f.cmd("SELECT INBOX")
        f.cmd("FETCH 1:* (UID FLAGS)")
        return f.received - before, (time.perf_counter() - t) * 1000

    n = min(a.fetch, exists)

    def bodies(compress):
        w = login(a.imap, a.user, a.password)
        pid = session_pid(a)
        if compress:
            w.compress()
        w.cmd("EXAMINE INBOX")
        before, c0, t = w.received, cpu(pid), time.perf_counter()
        w.cmd(f"FETCH 1:{n} BODY.PEEK[]")
        return w.received - before, (time.perf_counter() - t) * 1000, cpu(pid) - c0

    def median(runs, i):
        return statistics.median(r[i] for r in runs)

    q = [qresync() for _ in range(a.runs)]
    fl = [full() for _ in range(a.runs)]
    plain = [bodies(False) for _ in range(a.runs)]
    z = [bodies(True) for _ in range(a.runs)]
    qresync_bytes, qresync_ms = median(q, 0), median(q, 1)
    full_bytes, full_ms = median(fl, 0), median(fl, 1)
    plain_bytes, plain_ms, plain_cpu = median(plain, 0), median(plain, 1), median(plain, 2)
    z_bytes, z_ms, z_cpu = median(z, 0), median(z, 1), median(z, 2)

    print(f"RESULT runs={a.runs} messages={exists} qresync_select_bytes={qresync_bytes} qresync_select_ms={qresync_ms:.1f} "
          f"select_fetch_flags_bytes={full_bytes} select_fetch_flags_ms={full_ms:.1f} "
          f"fetch={n} body_bytes={plain_bytes} body_ms={plain_ms:.0f} body_cpu_s={plain_cpu:.2f} "
          f"compressed_bytes={z_bytes} compressed_ms={z_ms:.0f} compressed_cpu_s={z_cpu:.2f}")


if __name__ == "__main__":
    main()
