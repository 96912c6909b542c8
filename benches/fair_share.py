#!/usr/bin/env python3
"""Fair sharing under hostile load: what one user's costly commands cost others.

Starts a cove binary on a temporary data directory (loopback only) and
measures
  1. LIST with a backtracking pattern (default `*a*a*a*a*b`) against a
     mailbox whose name is 200 `a`s: the time of the LIST itself;
  2. the latency of LMTP deliveries to a third user while two users each
     run N SEARCHes that read and decode every message (`NOT BODY`, which
     the full-text index cannot narrow) over M copies of a large message.

Usage: benches/fair_share.py [--cove target/release/cove] [--searches 32]
                             [--doublings 7] [--deliveries 10]
Stops by itself; prints one line per figure. Standard library only.
"""

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

PASS = "pw"


def start(cove, extra=""):
    d = tempfile.mkdtemp(prefix="cove-fair-")
    cfg = os.path.join(d, "cove.toml")
    with open(cfg, "w") as f:
        f.write(
            f'data_dir = "{d}/data"\nhostname = "bench.test"\n'
            '[lmtp]\nlisten = ["127.0.0.1:0"]\n'
            '[imap]\nlisten = ["127.0.0.1:0"]\nauth_failure_delay_ms = 10\n'
            "max_connections_per_user = 100\n" + extra
        )
    p = subprocess.Popen(
        [cove, "serve", "--config", cfg],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        env=dict(os.environ, COVE_LOG="warn,cove=info"),
        text=True,
    )
    addrs = {}
    deadline = time.time() + 60
    while len(addrs) < 2 and time.time() < deadline:
        line = p.stderr.readline()
        if not line:
            break
        m = re.search(r"(lmtp|imap) listening on (\S+)", line)
        if m:
            host, port = m.group(2).rsplit(":", 1)
            addrs[m.group(1)] = (host, int(port))
    if len(addrs) < 2:
        p.kill()
        sys.exit("cove did not start")
    threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
    return p, d, cfg, addrs


def add_user(cove, cfg, email):
    subprocess.run(
        [cove, "user", "add", email, "--password-stdin", "--config", cfg],
        input=PASS + "\n",
        text=True,
        check=True,
        stdout=subprocess.DEVNULL,
    )


class Imap:
    def __init__(self, addr):
        self.s = socket.create_connection(addr, timeout=600)
        self.f = self.s.makefile("rb")
        self.f.readline()
        self.n = 0

    def send(self, cmd):
        self.n += 1
        tag = f"t{self.n}"
        self.s.sendall(f"{tag} {cmd}\r\n".encode())
        return tag

    def wait(self, tag):
        while True:
            line = self.f.readline()
            if not line:
                raise RuntimeError("connection closed")
            if line.startswith(tag.encode() + b" "):
                if not line.startswith(tag.encode() + b" OK"):
                    raise RuntimeError(line)
                return

    def cmd(self, cmd):
        self.wait(self.send(cmd))

    def login(self, user):
        self.cmd(f'LOGIN "{user}" "{PASS}"')
        return self


def lmtp_deliver(addr, rcpt, body):
    s = socket.create_connection(addr, timeout=600)
    f = s.makefile("rb")

    def reply():
        while True:
            line = f.readline()
            if line[3:4] != b"-":
                return line

    reply()
    for line in ["LHLO bench", "MAIL FROM:<s@bench.test>", f"RCPT TO:<{rcpt}>", "DATA"]:
        s.sendall(line.encode() + b"\r\n")
        reply()
    s.sendall(body.encode() + b"\r\n.\r\n")
    r = reply()
    s.sendall(b"QUIT\r\n")
    s.close()
    if not r.startswith(b"250"):
        raise RuntimeError(r)


def message(ident, text):
    return f"From: s@bench.test\r\nSubject: {ident}\r\nMessage-ID: <{ident}@bench>\r\n\r\n{text}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cove", default="target/release/cove")
    ap.add_argument("--pattern", default="*a*a*a*a*b")
    ap.add_argument("--searches", type=int, default=32, help="per user")
    ap.add_argument("--doublings", type=int, default=7)
    ap.add_argument("--deliveries", type=int, default=10)
    ap.add_argument("--list-timeout", type=float, default=120)
    args = ap.parse_args()
    p, d, cfg, addrs = start(args.cove)
    try:
        for u in ["a@x.org", "b@x.org", "c@x.org"]:
            add_user(args.cove, cfg, u)

        # 1. LIST with a backtracking pattern.
        c = Imap(addrs["imap"]).login("a@x.org")
        c.cmd("CREATE " + "a" * 200)
        c.s.settimeout(args.list_timeout)
        t0 = time.perf_counter()
        try:
            c.cmd(f'LIST "" "{args.pattern}"')
            print(f"list pattern={args.pattern} name=200 chars: {time.perf_counter() - t0:.4f} s")
        except socket.timeout:
            print(f"list pattern={args.pattern}: no answer within {args.list_timeout} s")
            return

        # 2. Deliveries while two users search.
        big = message("big", "The quick brown fox jumps over the lazy dog again and again.\r\n" * 4096)
        for u in ["a@x.org", "b@x.org"]:
            lmtp_deliver(addrs["lmtp"], u, big)
            c = Imap(addrs["imap"]).login(u)
            c.cmd("SELECT INBOX")
            for _ in range(args.doublings):
                c.cmd("COPY 1:* INBOX")
        quiet = []
        for i in range(args.deliveries):
            t0 = time.perf_counter()
            lmtp_deliver(addrs["lmtp"], "c@x.org", message(f"q{i}", "hello"))
            quiet.append(time.perf_counter() - t0)
        searchers = []
        for u in ["a@x.org", "b@x.org"]:
            for _ in range(args.searches):
                s = Imap(addrs["imap"]).login(u)
                s.cmd("SELECT INBOX")
                searchers.append(s)
        tags = [s.send("UID SEARCH NOT BODY zzzzqqq") for s in searchers]
        time.sleep(1)
        loaded = []
        for i in range(args.deliveries):
            t0 = time.perf_counter()
            lmtp_deliver(addrs["lmtp"], "c@x.org", message(f"l{i}", "hello"))
            loaded.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for s, t in zip(searchers, tags):
            s.wait(t)
        searches_done = time.perf_counter() - t0
        n = 2 ** args.doublings
        med = lambda xs: sorted(xs)[len(xs) // 2]
        print(
            f"lmtp delivery, idle: median {med(quiet) * 1000:.1f} ms, max {max(quiet) * 1000:.1f} ms"
        )
        print(
            f"lmtp delivery, while 2 users x {args.searches} SEARCH NOT BODY over {n} x 256 KiB: "
            f"median {med(loaded) * 1000:.1f} ms, max {max(loaded) * 1000:.1f} ms "
            f"(searches all answered {searches_done:.1f} s after the last delivery)"
        )
    finally:
        p.kill()
        p.wait()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
