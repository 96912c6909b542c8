#!/usr/bin/env python3
"""Index growth over many deliveries and expunges of one user (issue 15).

Driven by benches/index_growth.sh, which starts cove; this script delivers
ROUND messages with `cove-load lmtp`, then over IMAP searches the bodies
(so the full-text index is used and refreshed), marks everything \\Deleted
and expunges it, and samples the user's files after every round:
index.sqlite (+ its WAL), fts.sqlite (+ WAL), and the row counts of the
change log, tombstones and expunged_guid (read-only SQLite queries on the
live files). After the last round it waits QUIET seconds with no mail and
samples again, to show what happens once the mail stops.

Prints one table row per sample on stdout (Markdown) and a summary line.
"""

import argparse
import imaplib
import os
import sqlite3
import subprocess
import sys
import time


def size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def pair(path):
    """Bytes of an SQLite database and its WAL."""
    return size(path), size(path + "-wal")


def rows(path, tables):
    """Row counts of `tables` in the SQLite file at `path` (None if absent)."""
    if not os.path.exists(path):
        return {t: None for t in tables}
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        out = {}
        for t in tables:
            try:
                out[t] = conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            except sqlite3.Error:
                out[t] = None
        return out
    finally:
        conn.close()


def kib(n):
    return f"{n / 1024:,.0f}"


def expunge_all(port, user, password, token):
    imap = imaplib.IMAP4("127.0.0.1", port)
    try:
        imap.login(user, password)
        typ, _ = imap.select("INBOX")
        if typ != "OK":
            raise RuntimeError("SELECT INBOX failed")
        typ, hits = imap.uid("SEARCH", "BODY", token)
        if typ != "OK":
            raise RuntimeError(f"SEARCH BODY failed: {hits}")
        found = len(hits[0].split()) if hits and hits[0] else 0
        typ, data = imap.uid("STORE", "1:*", "+FLAGS.SILENT", r"(\Deleted)")
        if typ != "OK":
            raise RuntimeError(f"STORE failed: {data}")
        typ, data = imap.expunge()
        if typ != "OK":
            raise RuntimeError(f"EXPUNGE failed: {data}")
        imap.logout()
        return found
    finally:
        try:
            imap.shutdown()
        except OSError:
            pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--load", required=True, help="path of cove-load")
    ap.add_argument("--lmtp", type=int, required=True)
    ap.add_argument("--imap", type=int, required=True)
    ap.add_argument("--home", required=True, help="the user's home (index.sqlite's directory)")
    ap.add_argument("--total", type=int, default=1_000_000)
    ap.add_argument("--round", type=int, default=10_000)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--conns", type=int, default=8)
    ap.add_argument("--samples", type=int, default=20, help="table rows while mail flows")
    ap.add_argument("--quiet", type=int, default=30, help="seconds without mail before the last sample")
    ap.add_argument("--user", default="bench0@example.com")
    ap.add_argument("--password", default="bench")
    args = ap.parse_args()

    index = os.path.join(args.home, "index.sqlite")
    fts = os.path.join(args.home, "fts.sqlite")
    tables = ["change", "tombstone", "expunged_guid", "message", "derived"]
    print("| delivered and expunged | index.sqlite KiB | index WAL KiB | fts.sqlite KiB | fts WAL KiB | change rows | tombstone rows | expunged_guid rows | live messages | cached views (derived rows) | contents in fts | elapsed s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    rounds = max(1, args.total // args.round)
    every = max(1, rounds // args.samples)
    start = time.monotonic()
    peak = {"index": 0, "fts": 0}
    half = None

    def sample(label):
        i, iw = pair(index)
        f, fw = pair(fts)
        r = rows(index, tables)
        in_fts = rows(fts, ["content"])["content"]
        peak["index"] = max(peak["index"], i + iw)
        peak["fts"] = max(peak["fts"], f + fw)
        print(f"| {label} | {kib(i)} | {kib(iw)} | {kib(f)} | {kib(fw)} | {r['change']} | {r['tombstone']} | {r['expunged_guid']} | {r['message']} | {r['derived']} | {in_fts} | {time.monotonic() - start:.0f} |", flush=True)
        return i + iw, f + fw

    for n in range(1, rounds + 1):
        subprocess.run(
            [args.load, "lmtp", "--addr", f"127.0.0.1:{args.lmtp}", "--conns", str(args.conns),
             "--messages", str(args.round), "--size", str(args.size), "--users", "1",
             "--rcpt-template", args.user, "--varied", "--label", f"round{n}"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        found = expunge_all(args.imap, args.user, args.password, "kumquat")
        if n == 1 and found == 0:
            print(f"note: SEARCH BODY found nothing in round 1", file=sys.stderr)
        if n % every == 0 or n == rounds:
            s = sample(f"{n * args.round:,}")
            if n * 2 >= rounds and half is None:
                half = s
    time.sleep(args.quiet)
    last = sample(f"{rounds * args.round:,}, {args.quiet} s later")
    print()
    print(f"SUMMARY total={rounds * args.round} peak_index_bytes={peak['index']} peak_fts_bytes={peak['fts']} "
          f"half_index_bytes={half[0] if half else 0} half_fts_bytes={half[1] if half else 0} "
          f"last_index_bytes={last[0]} last_fts_bytes={last[1]} elapsed_s={time.monotonic() - start:.0f}")


if __name__ == "__main__":
    main()
