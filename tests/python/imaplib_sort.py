"""SORT and THREAD (RFC 5256) with Python's imaplib against a running cove,
as a webmail sorting and threading a folder on the server does: the
capabilities, IMAP4.sort() and IMAP4.thread(), their UID forms, and a
charset cove does not know.

Run by tests/tests/imap_sort.rs with COVE_IMAP, COVE_USER, COVE_PASS;
INBOX holds the five messages described there (UIDs 2..6).
"""
import imaplib
import os

from checks import check, ok

host, port = os.environ["COVE_IMAP"].rsplit(":", 1)
imap = imaplib.IMAP4(host, int(port), timeout=30)
ok(imap.login(os.environ["COVE_USER"], os.environ["COVE_PASS"]), "login")
for cap in ("SORT", "SORT=DISPLAY", "THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES"):
    check(cap in imap.capabilities, f"{cap} in {imap.capabilities}")
ok(imap.select("INBOX"), "select")

data = ok(imap.sort("(REVERSE ARRIVAL)", "UTF-8", "ALL"), "sort arrival")
check(data == [b"1 2 3 4 5"], f"sort arrival: {data}")
data = ok(imap.sort("(SUBJECT REVERSE DATE)", "UTF-8", "ALL"), "sort subject")
check(data == [b"5 3 4 2 1"], f"sort subject: {data}")
data = ok(imap.sort("(DISPLAYFROM)", "UTF-8", "UNSEEN"), "sort displayfrom")
check(data == [b"5 2 3 4 1"], f"sort displayfrom: {data}")
data = ok(imap.uid("SORT", "(SIZE)", "UTF-8", "ALL"), "uid sort")
check(data == [b"3 6 2 5 4"], f"uid sort: {data}")

data = ok(imap.thread("REFERENCES", "UTF-8", "ALL"), "thread references")
check(data == [b"(3 5)(1 2 4)"], f"thread references: {data}")
data = ok(imap.thread("ORDEREDSUBJECT", "UTF-8", "SUBJECT", "plan"), "thread subject")
check(data == [b"(1 (2)(4))"], f"thread orderedsubject: {data}")
data = ok(imap.uid("THREAD", "REFERENCES", "UTF-8", "ALL"), "uid thread")
check(data == [b"(4 6)(2 3 5)"], f"uid thread: {data}")

typ, data = imap.sort("(DATE)", "KOI8-R", "ALL")
check(typ == "NO" and b"[BADCHARSET" in data[0], f"badcharset: {typ} {data}")
imap.logout()
print("imaplib sort ok")
