#!/usr/bin/env python3
"""The derived-data table keyed by content first vs by kind first: CPU of a
pass over one kind (benches/results/derived-layout-2026-12-07.md)."""
import os, sqlite3, time, random, statistics
sizes = {31: 350, 32: 600, 33: 400, 34: 285, 36: 100, 22: 8}
N = 100_000
random.seed(1)
ids = [os.urandom(32) for _ in range(N)]
out = {}
for name, pk in (("content_first", "content_id, kind"), ("kind_first", "kind, content_id")):
    path = f"/tmp/derived_{name}.sqlite"
    if os.path.exists(path): os.remove(path)
    c = sqlite3.connect(path)
    c.execute(f"CREATE TABLE d(content_id BLOB NOT NULL, kind INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY({pk})) WITHOUT ROWID")
    with c:
        for i in ids:
            c.executemany("INSERT INTO d VALUES (?,?,?)", [(i, k, os.urandom(s)) for k, s in sizes.items()])
    c.close()
    times = []
    for _ in range(5):
        c = sqlite3.connect(path)
        c.execute("PRAGMA cache_size=-512"); c.execute("PRAGMA mmap_size=0")
        t = time.process_time()
        n = sum(1 for _ in c.execute("SELECT content_id, data FROM d WHERE kind = 34"))
        times.append(time.process_time() - t)
        c.close()
    out[name] = (statistics.median(times), os.path.getsize(path) / 1e6, n)
    os.remove(path)
for k, v in out.items():
    print(f"{k}: median CPU {v[0]*1000:.0f} ms for {v[2]} rows of kind 34, table {v[1]:.0f} MB")
