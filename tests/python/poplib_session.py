"""A whole POP3 session with Python's poplib against a running cove.

Run by tests/tests/pop3_poplib.rs with COVE_POP3=host:port (plain),
COVE_POP3S=host:port (implicit TLS), COVE_CERT (the server's certificate),
COVE_USER, COVE_PASS; three messages (subjects "first", "second", "third")
are in INBOX, the second with a line that starts with a dot. The mode is
the first argument: "plain", "stls" or "tls". Exits non-zero with a message
on the first thing that is wrong.
"""
import os
import poplib
import ssl
import sys


def check(cond, what):
    if not cond:
        print("FAILED: " + what, file=sys.stderr)
        sys.exit(1)


mode = sys.argv[1]
context = ssl.create_default_context(cafile=os.environ["COVE_CERT"])
context.check_hostname = False
if mode == "tls":
    host, port = os.environ["COVE_POP3S"].rsplit(":", 1)
    pop = poplib.POP3_SSL(host, int(port), context=context, timeout=30)
else:
    host, port = os.environ["COVE_POP3"].rsplit(":", 1)
    pop = poplib.POP3(host, int(port), timeout=30)
check(pop.getwelcome().startswith(b"+OK"), f"welcome {pop.getwelcome()}")
caps = pop.capa()
for c in ["TOP", "UIDL", "PIPELINING", "RESP-CODES", "USER", "SASL"]:
    check(c in caps, f"{c} in CAPA {caps}")
if mode == "stls":
    check("STLS" in caps, f"STLS offered: {caps}")
    pop.stls(context)
    caps = pop.capa()
    check("STLS" not in caps, f"no STLS inside TLS: {caps}")
elif mode == "tls":
    check("STLS" not in caps, f"no STLS inside TLS: {caps}")

pop.user(os.environ["COVE_USER"])
pop.pass_(os.environ["COVE_PASS"])
count, size = pop.stat()
check(count == 3, f"3 messages, got {count}")
resp, listing, _ = pop.list()
sizes = [int(l.split()[1]) for l in listing]
check(len(sizes) == 3 and sum(sizes) == size, f"LIST {listing} vs STAT {size}")
resp, uidls, _ = pop.uidl()
check(len(set(u.split()[1] for u in uidls)) == 3, f"UIDL {uidls}")

for n, subject in [(1, "first"), (2, "second"), (3, "third")]:
    resp, lines, octets = pop.retr(n)
    check(resp.startswith(b"+OK"), f"RETR {n}: {resp}")
    check(f"Subject: test {subject}".encode() in lines, f"subject of {n}: {lines}")
    # poplib removes the stuffing and counts the CRLF form.
    check(octets == sizes[n - 1], f"octets of {n}: {octets} vs LIST {sizes[n - 1]}")
resp, lines, _ = pop.retr(2)
check(b".leading dot" in lines, f"dot-stuffing undone: {lines}")
resp, lines, _ = pop.top(3, 0)
check(lines[-1] == b"" and b"Subject: test third" in lines, f"TOP 3 0: {lines}")

pop.dele(1)
check(pop.stat()[0] == 2, "DELE leaves 2")
pop.rset()
check(pop.stat()[0] == 3, "RSET gives 3 back")
pop.dele(3)
pop.noop()
pop.quit()

if mode == "tls":
    pop = poplib.POP3_SSL(host, int(port), context=context, timeout=30)
else:
    pop = poplib.POP3(host, int(port), timeout=30)
    if mode == "stls":
        pop.stls(context)
try:
    pop.user(os.environ["COVE_USER"])
    pop.pass_("wrong")
    check(False, "a wrong password is refused")
except poplib.error_proto as e:
    check(b"[AUTH]" in e.args[0], f"[AUTH] code: {e}")
pop.user(os.environ["COVE_USER"])
pop.pass_(os.environ["COVE_PASS"])
check(pop.stat()[0] == 2, "QUIT removed message 3")
pop.quit()
print("poplib ok")
