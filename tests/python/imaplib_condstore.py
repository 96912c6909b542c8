"""CONDSTORE and QRESYNC (RFC 7162) with Python's imaplib against a running
cove: what a resynchronising client does.

Run by tests/tests/imap_imaplib.rs with COVE_IMAP=host:port, COVE_USER,
COVE_PASS; three messages are already in INBOX. Exits non-zero with a
message on the first thing that is wrong.
"""
import imaplib
import os
import re
import sys

from checks import check, ok


def code(imap, name):
    typ, data = imap.response(name)
    check(data and data[-1] is not None, f"no [{name}] response code")
    return data[-1].decode()


host, port = os.environ["COVE_IMAP"].rsplit(":", 1)
imap = imaplib.IMAP4(host, int(port), timeout=30)
for cap in ("CONDSTORE", "QRESYNC", "ENABLE"):
    check(cap in imap.capabilities, f"{cap} in {imap.capabilities}")
ok(imap.login(os.environ["COVE_USER"], os.environ["COVE_PASS"]), "login")
enabled = ok(imap.enable("QRESYNC"), "enable")
check(imap.response("ENABLED")[1][-1] == b"QRESYNC", "ENABLED QRESYNC")

ok(imap.select("INBOX"), "select")
highest = int(code(imap, "HIGHESTMODSEQ"))
validity = code(imap, "UIDVALIDITY")

# Nothing changed since: CHANGEDSINCE returns nothing.
data = ok(imap.fetch("1:*", f"(FLAGS) (CHANGEDSINCE {highest})"), "fetch changedsince")
check(data == [None], f"nothing changed yet: {data}")

# One flag change: only that message, with its MODSEQ.
ok(imap.store("2", "+FLAGS", "(\\Flagged)"), "store")
data = ok(imap.fetch("1:*", f"(FLAGS) (CHANGEDSINCE {highest})"), "fetch changedsince")
check(len(data) == 1 and data[0].startswith(b"2 (FLAGS (\\Flagged"), f"{data}")
changed = int(re.search(rb"MODSEQ \((\d+)\)", data[0]).group(1))
check(changed > highest, f"{changed} > {highest}")

# A conditional store as of before that change fails for message 2.
ok(imap.uid("STORE", "2", f"(UNCHANGEDSINCE {highest})", "+FLAGS", "(\\Seen)"), "uid store")
check(code(imap, "MODIFIED") == "2", "MODIFIED 2")

# Expunge message 1: with QRESYNC enabled it is VANISHED, not EXPUNGE.
ok(imap.store("1", "+FLAGS.SILENT", "(\\Deleted)"), "store deleted")
ok(imap.expunge(), "expunge")
check(imap.response("VANISHED")[1][-1] == b"1", "VANISHED 1")
imap.logout()

# A new session resynchronises from what the first one knew.
imap = imaplib.IMAP4(host, int(port), timeout=30)
ok(imap.login(os.environ["COVE_USER"], os.environ["COVE_PASS"]), "login")
ok(imap.enable("QRESYNC"), "enable")
typ, data = imap._simple_command("SELECT", f"INBOX (QRESYNC ({validity} {highest}))")
check(typ == "OK", f"select qresync: {typ} {data}")
check(imap.response("VANISHED")[1][-1] == b"(EARLIER) 1", "VANISHED (EARLIER) 1")
fetched = imap.response("FETCH")[1]
check(len(fetched) == 1 and b"UID 2 FLAGS (\\Flagged" in fetched[0], f"{fetched}")
imap.logout()
print("imaplib condstore ok")
