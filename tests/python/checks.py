"""What the imaplib scripts share: stop on the first thing that is wrong."""
import sys


def check(cond, what):
    if not cond:
        print("FAILED: " + what, file=sys.stderr)
        sys.exit(1)


def ok(resp, what):
    typ, data = resp
    check(typ == "OK", f"{what}: {typ} {data}")
    return data
