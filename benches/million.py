"""A mailbox of 1,000,000 messages (issue 15), for benches/million.sh.

    python3 benches/million.py gen MAILDIR COUNT TOKEN_EVERY [--body B]
        Writes a Dovecot Maildir (cur/ files with LF line ends, named as
        Dovecot names them, and a dovecot-uidlist v3 giving UIDs 1..COUNT)
        of COUNT messages (the headers a delivered message has, and a text
        body of B-400..B characters: ~1.3-1.7 KiB with the default B=900,
        ~4 KiB with B=3600). Two in three are \\Seen, one in
        twenty \\Flagged; one in TOKEN_EVERY has the word `marzipan` in its
        Subject.

    python3 benches/million.py measure HOST:PORT USER PASSWORD --label L
        [--pid PID] [--sessions 10] [--expect N] [--hits H]
        Against one running server: LOGIN, then
          - SELECT INBOX (the first of this server process, and the next
            sessions' SELECTs: median);
          - UID FETCH 1:* (FLAGS), every message answered;
          - UID SEARCH SUBJECT marzipan, first and repeated (H hits);
          - RSS growth of the server with 1 and with SESSIONS sessions
            holding the mailbox selected (growth / sessions), RSS summed
            over the server's processes, and PSS (shared pages split);
          - a QRESYNC resync: 10 flag changes by one session, then a new
            session's SELECT INBOX (QRESYNC (uidvalidity modseq)): wall
            time, bytes, and that it reports the 10 changed messages.
        Prints RESULT lines of key=value pairs. A benchmark: it checks the
        answers (counts) and exits non-zero when one is wrong.
"""
import argparse
import os
import random
import re
import socket
import statistics
import sys
import time

TOKEN = "marzipan"


# ---------------------------------------------------------------- gen
def gen(maildir, count, token_every, body_max=900):
    rnd = random.Random(15)
    words = ["".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 9)))
             for _ in range(4096)]
    pool = " ".join(words)
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(maildir, sub), exist_ok=True)
    cur = os.path.join(maildir, "cur")
    t0 = 1750000000
    lines = []
    for i in range(1, count + 1):
        r = random.Random(i)
        sender = r.randrange(997)
        subject = " ".join(r.choice(words) for _ in range(r.randint(3, 8)))
        if i % token_every == 0:
            subject += " " + TOKEN
        off = r.randrange(len(pool) - body_max - 300)
        body = pool[off:off + r.randint(body_max - 400, body_max)]
        body = "\n".join(body[j:j + 72] for j in range(0, len(body), 72))
        t = t0 + i * 7
        msg = (
            f"Return-Path: <sender{sender}@example.org>\n"
            f"Delivered-To: bench0@example.com\n"
            f"Received: from mx{sender % 7}.example.org (mx{sender % 7}.example.org [192.0.2.{sender % 250}])\n"
            f"\tby bench with LMTP id {i:08x}; {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime(t))}\n"
            f"From: \"Sender {sender}\" <sender{sender}@example.org>\n"
            f"To: bench0@example.com\n"
            f"Subject: {subject}\n"
            f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime(t - 5))}\n"
            f"Message-ID: <{i}.{sender}@example.org>\n"
            f"MIME-Version: 1.0\n"
            f"Content-Type: text/plain; charset=utf-8\n"
            f"\n{body}\n"
        ).encode()
        crlf = len(msg) + msg.count(b"\n")
        base = f"{t}.M{i}P1.gen,S={len(msg)},W={crlf}"
        letters = ("F" if i % 20 == 0 else "") + ("S" if i % 3 else "")
        with open(os.path.join(cur, f"{base}:2,{letters}"), "wb") as fh:
            fh.write(msg)
        lines.append(f"{i} :{base}\n")
    with open(os.path.join(maildir, "dovecot-uidlist"), "w") as fh:
        fh.write(f"3 V1700000000 N{count + 1} G{0xc0ffee:032x}\n")
        fh.writelines(lines)


# ---------------------------------------------------------------- measure
class Imap:
    """A raw IMAP connection that reads whole responses in bulk (a
    line-by-line reader is too slow in Python for a million FETCH lines)."""

    def __init__(self, addr):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=1800)
        self.received = 0
        self.n = 0
        self.buf = bytearray()
        while b"\r\n" not in self.buf:
            self._recv()
        self.buf.clear()

    def _recv(self):
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise EOFError("server closed the connection")
        self.received += len(chunk)
        self.buf += chunk

    def cmd(self, text):
        """Send a command; the whole response (untagged lines and the
        tagged one), its wall time in ms and its size in bytes."""
        self.n += 1
        tag = f"m{self.n}".encode()
        start, before = time.perf_counter(), self.received
        self.sock.sendall(tag + b" " + text.encode() + b"\r\n")
        self.buf.clear()
        while True:
            # The tagged line comes last: look only at the last line.
            if self.buf.endswith(b"\r\n"):
                i = self.buf.rfind(b"\r\n", 0, len(self.buf) - 2)
                last = bytes(self.buf[i + 2 if i >= 0 else 0:])
                if last.startswith(tag + b" "):
                    break
            self._recv()
        ms = (time.perf_counter() - start) * 1000
        data = bytes(self.buf)
        if not last.startswith(tag + b" OK"):
            raise RuntimeError(f"{text}: {last[:200]!r}")
        return data, ms, self.received - before


def proc_tree(pid):
    """The server's process and its descendants."""
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def memory_kib(pid):
    """(RSS, PSS) in KiB summed over the server's processes."""
    rss = pss = 0
    for p in proc_tree(pid):
        try:
            for line in open(f"/proc/{p}/smaps_rollup"):
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            pass
    return rss, pss


def cpu_s(pid):
    total = 0.0
    for p in proc_tree(pid):
        try:
            f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            total += (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            pass
    return total


def field(data, name):
    m = re.search(rb"\[" + name.encode() + rb" (\d+)\]", data)
    return int(m.group(1)) if m else None


def measure(a):
    results = {}
    errors = []

    def check(ok, what):
        if not ok:
            errors.append(what)
            print(f"ERROR {a.label}: {what}", file=sys.stderr)

    def timed(name, conn, command):
        c0 = cpu_s(a.pid) if a.pid else 0.0
        data, ms, size = conn.cmd(command)
        results[f"{name}_ms"] = f"{ms:.1f}"
        if a.pid:
            results[f"{name}_cpu_ms"] = f"{(cpu_s(a.pid) - c0) * 1000:.0f}"
        print(f"{a.label}: {command}: {ms:.1f} ms, {size} bytes", file=sys.stderr)
        return data, size

    def login():
        c = Imap(a.addr)
        c.cmd(f'LOGIN "{a.user}" "{a.password}"')
        return c

    time.sleep(1)
    base_rss, base_pss = memory_kib(a.pid) if a.pid else (0, 0)
    first = login()
    first.cmd("ENABLE QRESYNC")
    data, _ = timed("select_first", first, "SELECT INBOX")
    exists = int(re.search(rb"\* (\d+) EXISTS", data).group(1))
    check(exists == a.expect, f"SELECT: {exists} EXISTS, expected {a.expect}")
    validity = field(data, "UIDVALIDITY")
    known = field(data, "HIGHESTMODSEQ")
    check(validity is not None and known is not None, "SELECT: no UIDVALIDITY or HIGHESTMODSEQ")
    rss1, pss1 = memory_kib(a.pid) if a.pid else (0, 0)

    data, size = timed("fetch_flags", first, "UID FETCH 1:* (FLAGS)")
    n = data.count(b" FETCH (")
    check(n == exists, f"UID FETCH 1:* (FLAGS): {n} answers, expected {exists}")
    results["fetch_flags_bytes"] = size
    # The mailbox's UIDs (an import may have given some fresh ones).
    uids = [int(u) for u in re.findall(rb"UID (\d+)", data)]
    data, ms2, _ = first.cmd("UID FETCH 1:* (FLAGS)")
    results["fetch_flags_repeat_ms"] = f"{ms2:.1f}"

    for run in ("first", "repeat"):
        data, _ = timed(f"search_subject_{run}", first, f"UID SEARCH SUBJECT {TOKEN}")
        line = next((l for l in data.split(b"\r\n") if l.startswith(b"* SEARCH")), b"* SEARCH")
        hits = len(line.split()) - 2
        check(hits == a.hits, f"SEARCH SUBJECT {run}: {hits} hits, expected {a.hits}")

    # More sessions with the mailbox selected: what each one more costs,
    # from here (the first session's FETCH and SEARCH buffers, kept by the
    # allocator, are already in the base).
    time.sleep(1)
    rss_mid, pss_mid = memory_kib(a.pid) if a.pid else (0, 0)
    sessions = [first]
    selects = []
    for _ in range(a.sessions - 1):
        c = login()
        _, ms, _ = c.cmd("SELECT INBOX")
        selects.append(ms)
        sessions.append(c)
    time.sleep(1)
    rssn, pssn = memory_kib(a.pid) if a.pid else (0, 0)
    if selects:
        results["select_next_median_ms"] = f"{statistics.median(selects):.1f}"
        results["select_next_max_ms"] = f"{max(selects):.1f}"
    results["rss_base_kib"] = base_rss
    results["rss_1_growth_kib"] = rss1 - base_rss
    results["pss_1_growth_kib"] = pss1 - base_pss
    results["sessions"] = a.sessions
    results["rss_n_growth_kib"] = rssn - base_rss
    results["rss_per_session_kib"] = f"{(rssn - base_rss) / a.sessions:.0f}"
    results["pss_per_session_kib"] = f"{(pssn - base_pss) / a.sessions:.0f}"
    more = max(1, a.sessions - 1)
    results["rss_per_more_session_kib"] = f"{(rssn - rss_mid) / more:.0f}"
    results["pss_per_more_session_kib"] = f"{(pssn - pss_mid) / more:.0f}"

    # Ten flag changes, then a QRESYNC resync from what the first SELECT saw.
    # Different messages each run: a run on kept data must change flags.
    changed = sorted(random.Random(time.time_ns()).sample(uids, 10))
    for uid in changed:
        first.cmd(f"UID STORE {uid} +FLAGS.SILENT (\\Flagged \\Answered)")
    r = login()
    r.cmd("ENABLE QRESYNC")
    data, size = timed("qresync", r, f"SELECT INBOX (QRESYNC ({validity} {known}))")
    results["qresync_bytes"] = size
    got = sorted(int(m) for m in re.findall(rb"\* \d+ FETCH \(.*?UID (\d+)", data))
    check(set(changed) <= set(got), f"QRESYNC: changed UIDs {changed}, reported {got[:20]}")
    results["qresync_fetches"] = len(got)
    data, ms, _ = r.cmd(f"SELECT INBOX (QRESYNC ({validity} {known}))")
    results["qresync_repeat_ms"] = f"{ms:.1f}"
    for c in sessions + [r]:
        try:
            c.cmd("LOGOUT")
        except (RuntimeError, OSError, EOFError):
            pass
    results["messages"] = exists
    results["ok"] = "false" if errors else "true"
    print(f"RESULT label={a.label} " + " ".join(f"{k}={v}" for k, v in results.items()))
    return 1 if errors else 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="what", required=True)
    g = sub.add_parser("gen")
    g.add_argument("maildir")
    g.add_argument("count", type=int)
    g.add_argument("token_every", type=int)
    g.add_argument("--body", type=int, default=900)
    m = sub.add_parser("measure")
    m.add_argument("addr")
    m.add_argument("user")
    m.add_argument("password")
    m.add_argument("--label", required=True)
    m.add_argument("--pid", type=int, default=0)
    m.add_argument("--sessions", type=int, default=10)
    m.add_argument("--expect", type=int, required=True)
    m.add_argument("--hits", type=int, required=True)
    a = p.parse_args()
    if a.what == "gen":
        gen(a.maildir, a.count, a.token_every, a.body)
        return 0
    return measure(a)


if __name__ == "__main__":
    sys.exit(main())
