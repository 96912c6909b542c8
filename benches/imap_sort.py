"""SORT and THREAD figures (issue 14), against one running server (cove or
Dovecot): `SORT (ARRIVAL)`, `SORT (DATE)`, `SORT (SUBJECT)`, `SORT (FROM)`
and `THREAD REFERENCES` over a whole INBOX, then `UID SEARCH SUBJECT
marzipan` (one message in 1,000), each timed cold (the first time the
server is asked since delivery) and warm (the median of three more runs,
from whatever the server cached), with the server's CPU for the cold pass
when PID (or Dovecot's master, --dovecot-master) is given.

    python3 benches/imap_sort.py HOST:PORT USER PASSWORD
        [--pid PID | --dovecot-master PID] [--load N --lmtp HOST:PORT]
        [--only-load]

--load delivers N messages over LMTP first: threads of replies (Re:
subjects, References and In-Reply-To chains), 300 senders with display
names, Cc on some, Date: spread over a year in several time zones. The
same seed gives both servers the same messages. Prints one RESULT line,
with a hash of each answer (equal answers from two servers: equal hashes).
A benchmark, not a test: it asserts nothing but that the commands succeed.
"""
import hashlib
import os
import random
import smtplib
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from imap_resync import cpu, login, parser, session_pid  # noqa: E402

COMMANDS = [
    ("arrival", "SORT (ARRIVAL) UTF-8 ALL"),
    ("date", "SORT (DATE) UTF-8 ALL"),
    ("subject", "SORT (SUBJECT) UTF-8 ALL"),
    ("from", "SORT (FROM) UTF-8 ALL"),
    ("thread", "THREAD REFERENCES UTF-8 ALL"),
    ("search_subject", "UID SEARCH SUBJECT marzipan"),
]
WORDS = ("budget plan release meeting review draft invoice travel report "
         "migration outage backup schedule contract hiring launch security "
         "update question minutes proposal").split()


def messages(user, n):
    rnd = random.Random(5256)
    sent = []  # (message-id, subject, references)
    for i in range(n):
        name = f"Sender {i % 300:03d}"
        frm = f'"{name}" <s{rnd.randrange(300)}@example{rnd.randrange(20)}.org>'
        date = 1_767_225_600 + rnd.randrange(365 * 86400)
        tz = rnd.choice(["+0000", "+0100", "-0500", "+0530", "-0800"])
        when = time.strftime("%a, %d %b %Y %H:%M:%S", time.gmtime(date)) + " " + tz
        mid = f"<{i}.{rnd.randrange(1 << 30)}@bench>"
        headers = [f"From: {frm}", f"To: {user}", f"Date: {when}", f"Message-ID: {mid}"]
        if sent and rnd.random() < 0.6:
            parent_id, subject, refs = sent[max(0, len(sent) - 300) + rnd.randrange(min(300, len(sent)))]
            refs = (refs + [parent_id])[-20:]
            subject = ("Re: " if rnd.random() < 0.8 else "Fwd: ") + subject
            headers += [f"Subject: {subject}", f"In-Reply-To: {parent_id}",
                        "References: " + "\r\n ".join(refs)]
        else:
            subject = " ".join(rnd.choice(WORDS) for _ in range(4))
            if i % 1000 == 999:
                subject += " marzipan"  # and so do the replies to it
            refs = []
            headers.append(f"Subject: {subject}")
        if rnd.random() < 0.3:
            headers.append(f"Cc: c{rnd.randrange(50)}@example.net")
        sent.append((mid, subject, refs))
        body = " ".join(rnd.choice(WORDS) for _ in range(150))
        yield ("\r\n".join(headers) + f"\r\n\r\n{body}\r\n").encode()


def load(lmtp, user, n, conns=1):
    """Deliver the N messages over CONNS LMTP connections at once (more
    than one: the arrival order, and so the UIDs, differ from run to run;
    benches/imap_sort.sh COPY=1 copies one server's mailbox to the other)."""
    host, port = lmtp.rsplit(":", 1)
    all_messages = list(messages(user, n))

    def send(part):
        with smtplib.LMTP(host, int(port)) as s:
            for msg in part:
                s.sendmail("bench@example.org", [user], msg)

    threads = [threading.Thread(target=send, args=(all_messages[i::conns],)) for i in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def main():
    p = parser()
    p.add_argument("--only-load", action="store_true")
    p.add_argument("--conns", type=int, default=1, help="LMTP connections for --load")
    a = p.parse_args()
    if a.load:
        load(a.lmtp, a.user, a.load, a.conns)
    if a.only_load:
        return
    w = login(a.imap, a.user, a.password)
    pid = session_pid(a)
    lines = w.cmd("EXAMINE INBOX")
    exists = int(next(l for l in lines if l.endswith(b" EXISTS\r\n")).split()[1])
    out = [f"messages={exists}"]
    for name, command in COMMANDS:
        c0, t = cpu(pid), time.perf_counter()
        r = w.cmd(command)
        cold_ms, cold_cpu = (time.perf_counter() - t) * 1000, cpu(pid) - c0
        parts = r[0].split(b" ", 2) if len(r) > 1 else []
        answer = parts[2] if len(parts) > 2 else b""
        warm, warm_cpu = [], []
        for _ in range(3):
            c0, t = cpu(pid), time.perf_counter()
            w.cmd(command)
            warm.append((time.perf_counter() - t) * 1000)
            warm_cpu.append(cpu(pid) - c0)
        out.append(f"{name}_cold_ms={cold_ms:.0f} {name}_cold_cpu_s={cold_cpu:.2f} "
                   f"{name}_warm_ms={statistics.median(warm):.0f} "
                   f"{name}_warm_cpu_s={statistics.median(warm_cpu):.2f} {name}_bytes={len(answer)} "
                   f"{name}_sha={hashlib.sha256(answer).hexdigest()[:12]}")
        if name == "thread":
            out.append(f"threads={answer.count(b')(') + 1 if answer.strip() else 0}")
    print("RESULT " + " ".join(out))


if __name__ == "__main__":
    main()
