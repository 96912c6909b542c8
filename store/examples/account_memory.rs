//! What an open account costs in memory (issue 15), counted step by step
//! in one process:
//!
//!   cargo run --release -p cove-store --example account_memory -- [ACCOUNTS] [MESSAGES]
//!
//! Makes ACCOUNTS users (default 1,000; MESSAGES in each INBOX, default 0)
//! in a temporary data directory, closes the store, opens it again and
//! opens every account one after the other, holding them. After each step
//! it prints the process's RSS, the bytes the allocator has handed out and
//! not got back (glibc `mallinfo2`: live heap, whatever RSS fragmentation
//! adds), SQLite's own count of its allocations, and what the accounts
//! report ([`cove_store::AccountMemory`]), each divided by ACCOUNTS. Steps:
//! open, `malloc_trim` (what RSS keeps that nothing uses), one change-feed
//! listener each (IDLE sessions), a Maildir watch each, then the accounts'
//! idle close of their index connections
//! ([`cove_store::Account::close_index_if_idle`]).

use std::path::Path;
use std::sync::Arc;

use cove_store::{
    Account, AccountMemory, Address, Durability, Env, NewMessage, Store, StoreOptions,
};

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn heap_bytes() -> u64 {
    // SAFETY: mallinfo2 only reads the allocator's counters.
    let m = unsafe { libc::mallinfo2() };
    (m.uordblks + m.hblkhd) as u64
}

fn trim() {
    // SAFETY: malloc_trim only gives free memory back to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn sqlite_bytes() -> u64 {
    // SAFETY: reads SQLite's global allocation counter.
    u64::try_from(unsafe { rusqlite::ffi::sqlite3_memory_used() }).unwrap_or(0)
}

struct Sample {
    rss: u64,
    heap: u64,
    sqlite: u64,
    acct: AccountMemory,
}

fn sample(accounts: &[Arc<Account>]) -> Sample {
    let mut acct = AccountMemory::default();
    for a in accounts {
        let m = a.memory().expect("account memory");
        acct.page_cache += m.page_cache;
        acct.schema += m.schema;
        acct.statements += m.statements;
        acct.feed_ring += m.feed_ring;
    }
    Sample {
        rss: rss_kib() * 1024,
        heap: heap_bytes(),
        sqlite: sqlite_bytes(),
        acct,
    }
}

fn report(step: &str, base: &Sample, now: &Sample, n: usize) {
    let per = |a: u64, b: u64| (b as f64 - a as f64) / n as f64 / 1024.0;
    let each = |v: u64| v as f64 / n as f64 / 1024.0;
    println!(
        "| {step} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
        per(base.rss, now.rss),
        per(base.heap, now.heap),
        per(base.sqlite, now.sqlite),
        each(now.acct.page_cache),
        each(now.acct.schema),
        each(now.acct.statements),
        each(now.acct.feed_ring),
    );
}

fn open_store(dir: &Path) -> Store {
    Store::open(
        dir,
        StoreOptions {
            hostname: "bench".into(),
            env: Env::default(),
            durability: Durability::Batched,
        },
    )
    .expect("open store")
}

fn address(i: usize) -> Address {
    Address::parse(&format!("user{i}@example.com")).expect("address")
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let messages: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(0);
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let store = open_store(dir.path());
        for i in 0..=n {
            let user = store.add_user(&address(i), None, 0).expect("add user");
            let account = store.account(&user).expect("open");
            for m in 0..messages {
                let body = format!("Subject: {m}\r\nFrom: a@example.com\r\n\r\nbody {m}\r\n");
                let blob = store.blobs().put(body.as_bytes()).expect("blob");
                account
                    .deliver("INBOX", &blob, &NewMessage::default())
                    .expect("deliver");
            }
        }
    }
    let store = open_store(dir.path());
    let user = |i| store.user(&address(i)).expect("user").expect("known");
    // One account first, so the store's own state is in the baseline.
    let first = store.account(&user(n)).expect("open");
    trim();
    let base = sample(&[]);
    println!(
        "{n} accounts, {messages} messages each; per account, KiB: RSS and heap are growth since the baseline ({} KiB RSS with one account open)",
        base.rss / 1024
    );
    println!(
        "| step | RSS | heap in use | SQLite allocations | page cache | schema | statements | feed ring |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let accounts: Vec<Arc<Account>> = (0..n)
        .map(|i| store.account(&user(i)).expect("open"))
        .collect();
    report("opened", &base, &sample(&accounts), n);
    trim();
    report("malloc_trim", &base, &sample(&accounts), n);
    let feeds: Vec<_> = accounts.iter().map(|a| a.subscribe()).collect();
    trim();
    report("+ a feed listener each", &base, &sample(&accounts), n);
    let watches: Vec<_> = accounts.iter().map(|a| store.watcher().watch(a)).collect();
    std::thread::sleep(std::time::Duration::from_secs(1));
    trim();
    report("+ a Maildir watch each", &base, &sample(&accounts), n);
    for a in &accounts {
        a.close_index_if_idle(std::time::Duration::ZERO);
    }
    trim();
    report("+ index closed while idle", &base, &sample(&accounts), n);
    drop(watches);
    drop(feeds);
    drop(first);
}
