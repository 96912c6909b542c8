#!/usr/bin/env python3
"""Memory per idle IMAP session, plaintext or TLS (benches/idle_memory.sh).

Opens CONNS connections to an IMAP server (SETUP at a time), each LOGIN as
one of USERS users (round-robin), SELECT INBOX, IDLE; once all are idle,
samples the server's resident memory (VmRSS and Pss of every process given
by --pid, summed) and prints

  RESULT proto=imap mode=idle_memory label=L tls=0|1 conns=N users=U ...
         rss_before_kib=.. rss_after_kib=.. rss_per_conn_kib=..
         pss_before_kib=.. pss_after_kib=.. pss_per_conn_kib=..

"before" is taken after a warm-up (WARMUP whole sessions, one per user
first, so each user's account is open and the allocator warm): the growth
is then what the idle sessions themselves cost. With --cold-users the
warm-up logs in only the first user, so the growth also holds what the
other users' accounts cost (that is how a harness that logs in many users
for the first time measures it). Then every session sends DONE and LOGOUT.
"""

import argparse
import asyncio
import os
import ssl
import subprocess
import sys
import time


def mem_kib(pids):
    rss = pss = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
        except FileNotFoundError:
            pass
    return rss, pss


def pids_of(root):
    """The process and its descendants (Dovecot runs one per session)."""
    children = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(p))
        except (FileNotFoundError, ProcessLookupError, IndexError):
            pass
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def trim(pids):
    """Make each process give its allocator's free pages back (glibc
    malloc_trim through gdb): what RSS then holds is what is in use."""
    for pid in pids:
        subprocess.run(
            ["gdb", "-p", str(pid), "-batch", "-ex", "call (int)malloc_trim(0)"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
        )


class Session:
    def __init__(self, reader, writer):
        self.r, self.w, self.n = reader, writer, 0

    async def cmd(self, text):
        self.n += 1
        tag = f"a{self.n}"
        self.w.write(f"{tag} {text}\r\n".encode())
        await self.w.drain()
        while True:
            line = await self.r.readline()
            if not line:
                raise ConnectionError(f"closed during {text.split()[0]}")
            if line.startswith(tag.encode() + b" "):
                if not line.startswith(tag.encode() + b" OK"):
                    raise RuntimeError(line.decode(errors="replace").strip())
                return


async def open_session(args, i, ctx):
    reader, writer = await asyncio.open_connection(
        args.host, args.port, ssl=ctx, server_hostname="localhost" if ctx else None,
        limit=8192,
    )
    greeting = await reader.readline()
    if not greeting.startswith(b"* OK"):
        raise RuntimeError(f"greeting {greeting!r}")
    s = Session(reader, writer)
    user = args.user_template.replace("{n}", str(args.first_user + i % args.users))
    await s.cmd(f'LOGIN "{user}" "{args.password}"')
    await s.cmd("SELECT INBOX")
    return s


async def idle(s):
    s.w.write(b"i IDLE\r\n")
    await s.w.drain()
    line = await s.r.readline()
    if not line.startswith(b"+"):
        raise RuntimeError(f"IDLE: {line!r}")


async def done(s):
    try:
        s.w.write(b"DONE\r\n")
        await s.w.drain()
        while True:
            line = await s.r.readline()
            if not line or line.startswith(b"i "):
                break
        await s.cmd("LOGOUT")
    except Exception:
        pass
    s.w.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--conns", type=int, default=1000)
    ap.add_argument("--users", type=int, default=1)
    ap.add_argument("--first-user", type=int, default=1)
    ap.add_argument("--user-template", default="bench{n}@example.com")
    ap.add_argument("--password", default="bench")
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--label", default="server")
    ap.add_argument("--setup", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=16)
    ap.add_argument("--cold-users", action="store_true")
    ap.add_argument("--settle", type=float, default=2.0)
    ap.add_argument("--trim", action="store_true",
                    help="malloc_trim the server (gdb) before both samples")
    args = ap.parse_args()
    ctx = None
    if args.tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE

    # Warm-up: whole sessions, closed again.
    warm = args.warmup if args.cold_users else max(args.warmup, args.users)
    for i in range(warm):
        j = 0 if args.cold_users else i
        s = await open_session(args, j, ctx)
        await s.cmd("LOGOUT")
        s.w.close()
    await asyncio.sleep(args.settle)
    if args.trim:
        trim(pids_of(args.pid))
    before = mem_kib(pids_of(args.pid))

    sessions, failed = [], 0
    sem = asyncio.Semaphore(args.setup)
    t0 = time.monotonic()

    async def one(i):
        nonlocal failed
        async with sem:
            try:
                s = await open_session(args, i, ctx)
                await idle(s)
                sessions.append(s)
            except Exception as e:
                failed += 1
                if failed <= 3:
                    print(f"session {i}: {e}", file=sys.stderr)

    await asyncio.gather(*(one(i) for i in range(args.conns)))
    setup_s = time.monotonic() - t0
    await asyncio.sleep(args.settle)
    if args.trim:
        trim(pids_of(args.pid))
    after = mem_kib(pids_of(args.pid))
    n = len(sessions)
    per = lambda a, b: f"{(b - a) / n:.2f}" if n else "NA"
    print(
        f"RESULT proto=imap mode=idle_memory label={args.label} tls={int(args.tls)} "
        f"conns={args.conns} users={args.users} cold_users={int(args.cold_users)} trim={int(args.trim)} "
        f"conns_ok={n} setup_failed={failed} setup_s={setup_s:.2f} "
        f"rss_before_kib={before[0]} rss_after_kib={after[0]} rss_per_conn_kib={per(before[0], after[0])} "
        f"pss_before_kib={before[1]} pss_after_kib={after[1]} pss_per_conn_kib={per(before[1], after[1])}"
    )
    sys.stdout.flush()
    for k in range(0, n, 256):
        await asyncio.gather(*(done(s) for s in sessions[k : k + 256]))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
