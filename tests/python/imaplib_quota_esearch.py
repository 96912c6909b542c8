"""QUOTA (RFC 9208) and ESEARCH (RFC 4731) with Python's imaplib against a
running cove: what a client showing the user's usage, or counting a
folder's unread mail, does.

Run by tests/tests/imap_imaplib.rs with COVE_IMAP, COVE_USER, COVE_PASS;
three messages are already in INBOX and the user's quota is 1 MiB.
"""
import imaplib
import os
import re

from checks import check, ok

host, port = os.environ["COVE_IMAP"].rsplit(":", 1)
imap = imaplib.IMAP4(host, int(port), timeout=30)
ok(imap.login(os.environ["COVE_USER"], os.environ["COVE_PASS"]), "login")
check("QUOTA" in imap.capabilities, f"QUOTA in {imap.capabilities}")
typ, data = imap.getquotaroot("INBOX")
check(typ == "OK", f"getquotaroot: {typ} {data}")
roots, quotas = data
check(roots == [b'INBOX ""'], f"roots: {roots}")
m = re.fullmatch(rb'"" \(STORAGE (\d+) (\d+)\)', quotas[0])
check(m is not None and m.group(2) == b"1024", f"quota: {quotas}")
data = ok(imap.getquota('""'), "getquota")
check(data == quotas, f"getquota: {data}")
typ, data = imap.setquota('""', "(STORAGE 1)")
check(typ == "NO" and b"[CANNOT]" in data[0], f"setquota: {typ} {data}")

check("ESEARCH" in imap.capabilities, f"ESEARCH in {imap.capabilities}")
ok(imap.select("INBOX"), "select")
ok(imap.store("2", "+FLAGS", "(\\Seen)"), "store")
typ, data = imap._simple_command("SEARCH", "RETURN (COUNT MIN ALL) UNSEEN")
check(typ == "OK", f"esearch: {typ} {data}")
typ, data = imap._untagged_response(typ, data, "ESEARCH")
check(data and data[-1].endswith(b") MIN 1 COUNT 2 ALL 1,3"), f"esearch: {data}")
imap.logout()
print("imaplib quota esearch ok")
