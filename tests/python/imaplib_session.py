"""A whole IMAP session with Python's imaplib against a running cove.

Run by tests/tests/imap_imaplib.rs with COVE_IMAP=host:port, COVE_USER,
COVE_PASS; three messages (subjects "first", "second", "third") are already
in INBOX. Exits non-zero with a message on the first thing that is wrong.
"""
import imaplib
import os
import re
import sys
import time

from checks import check, ok


host, port = os.environ["COVE_IMAP"].rsplit(":", 1)
imap = imaplib.IMAP4(host, int(port), timeout=30)
check("IMAP4REV1" in imap.capabilities, f"capabilities {imap.capabilities}")
ok(imap.login(os.environ["COVE_USER"], os.environ["COVE_PASS"]), "login")

names = [line.decode() for line in ok(imap.list(), "list")]
for wanted in ["INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive"]:
    check(any(n.endswith(" " + wanted) or n.endswith(f'"{wanted}"') for n in names), f"{wanted} in LIST {names}")
check(any("\\Sent" in n for n in names), f"special-use in LIST {names}")

count = int(ok(imap.select("INBOX"), "select")[0])
check(count == 3, f"3 messages in INBOX, got {count}")

data = ok(imap.fetch("1:*", "(UID FLAGS RFC822.SIZE ENVELOPE)"), "fetch envelope")
check(len([d for d in data if isinstance(d, bytes) and b"ENVELOPE" in d]) == 3, f"three envelopes: {data}")
check(b'"test first"' in data[0], f"subject in envelope: {data[0]}")

data = ok(imap.fetch("2", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])"), "fetch header field")
check(b"Subject: test second" in data[0][1], f"header field: {data}")

data = ok(imap.fetch("3", "(BODY[])"), "fetch body")
check(b"Subject: test third" in data[0][1], f"body: {data}")
data = ok(imap.fetch("3", "(FLAGS)"), "fetch flags")
check(b"\\Seen" in data[0], f"BODY[] sets \\Seen: {data}")

data = ok(imap.search(None, "SUBJECT", "second"), "search subject")
check(data[0].split() == [b"2"], f"search subject: {data}")
data = ok(imap.uid("SEARCH", None, "UNSEEN"), "uid search unseen")
check(len(data[0].split()) == 2, f"two unseen: {data}")
data = ok(imap.search(None, "BODY", '"body of second"'), "search body")
check(data[0].split() == [b"2"], f"search body: {data}")

ok(imap.store("1", "+FLAGS", "(\\Flagged work)"), "store")
data = ok(imap.fetch("1", "(FLAGS)"), "fetch after store")
check(b"\\Flagged" in data[0] and b"work" in data[0], f"flags after store: {data}")

typ, data = imap.copy("1", "Archive")
check(typ == "OK", f"copy: {typ} {data}")
typ, data = imap._simple_command("MOVE", "2", "Trash")
check(typ == "OK", f"move: {typ} {data}")
count = int(ok(imap.select("INBOX"), "reselect")[0])
check(count == 2, f"2 messages after move, got {count}")

ok(imap.store("1", "+FLAGS", "(\\Deleted)"), "store deleted")
data = ok(imap.expunge(), "expunge")
check(data[0] == b"1", f"expunge response: {data}")

msg = b"From: a@example.org\r\nSubject: appended\r\n\r\nappended body\r\n"
typ, data = imap.append("Sent", "(\\Seen)", imaplib.Time2Internaldate(time.time()), msg)
check(typ == "OK" and b"APPENDUID" in data[0], f"append: {typ} {data}")

status = ok(imap.status("Archive", "(MESSAGES UIDNEXT)"), "status")
check(re.search(rb"MESSAGES 1\b", status[0]) is not None, f"status Archive: {status}")
status = ok(imap.status("Trash", "(MESSAGES)"), "status trash")
check(re.search(rb"MESSAGES 1\b", status[0]) is not None, f"status Trash: {status}")

ok(imap.create("Projects.2026"), "create")
ok(imap.rename("Projects.2026", "Projects.2027"), "rename")
names = [line.decode() for line in ok(imap.list('""', "Projects*"), "list projects")]
check(any("Projects.2027" in n for n in names), f"renamed in LIST {names}")
ok(imap.delete("Projects.2027"), "delete")

imap.logout()
print("imaplib ok")
