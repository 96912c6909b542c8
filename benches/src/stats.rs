//! Measurement helpers shared by every protocol mode: latency percentiles,
//! server CPU time from /proc, and the report lines.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, Result};

/// Latency samples of one run (one per transaction).
#[derive(Default)]
pub struct Latencies(Vec<Duration>);

impl Latencies {
    pub fn push(&mut self, d: Duration) {
        self.0.push(d);
    }

    pub fn extend(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }

    /// Percentile `p` (0..=100) in milliseconds, nearest-rank; None if empty.
    pub fn percentile_ms(&mut self, p: f64) -> Option<f64> {
        if self.0.is_empty() {
            return None;
        }
        self.0.sort_unstable();
        let n = self.0.len();
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        let idx = rank.clamp(1, n) - 1;
        Some(self.0[idx].as_secs_f64() * 1000.0)
    }
}

/// CPU time (user + system) of a process tree, in clock ticks.
///
/// For a server PID this is the sum, over the PID and every live descendant
/// (found through the ppid field of /proc/*/stat), of
/// utime + stime + cutime + cstime. The process-level /proc/PID/stat already
/// includes all threads. cutime/cstime hold the times of children that have
/// exited and been reaped, so a worker process (Dovecot's lmtp, imap...) that
/// dies during the run is still counted through its parent, and a process that
/// was alive at the first sample and reaped at the second moves from its own
/// utime/stime to its parent's cutime/cstime without being counted twice.
/// Only children whose parent exits without reaping them are lost.
pub fn tree_cpu_ticks(root: u32) -> Result<u64> {
    let procs = read_all_stats();
    if !procs.contains_key(&root) {
        anyhow::bail!("process {root} not found in /proc");
    }
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (&pid, st) in &procs {
        children.entry(st.ppid).or_default().push(pid);
    }
    let mut total = 0u64;
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        if let Some(st) = procs.get(&pid) {
            total += st.utime + st.stime + st.cutime + st.cstime;
        }
        if let Some(kids) = children.get(&pid) {
            stack.extend(kids.iter().copied());
        }
    }
    Ok(total)
}

/// PID and all its live descendants (through the ppid field of /proc/*/stat).
pub fn tree_pids(root: u32) -> Result<Vec<u32>> {
    let procs = read_all_stats();
    if !procs.contains_key(&root) {
        anyhow::bail!("process {root} not found in /proc");
    }
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (&pid, st) in &procs {
        children.entry(st.ppid).or_default().push(pid);
    }
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        out.push(pid);
        if let Some(kids) = children.get(&pid) {
            stack.extend(kids.iter().copied());
        }
    }
    Ok(out)
}

/// Memory of a process tree, summed over its processes (KiB).
#[derive(Clone, Copy, Debug, Default)]
pub struct MemSample {
    pub processes: u64,
    /// VmRSS from /proc/PID/status: resident pages, shared ones counted in
    /// every process that maps them.
    pub rss_kib: u64,
    /// Pss from /proc/PID/smaps_rollup: shared pages divided among the
    /// processes sharing them (sums to what the tree really holds).
    pub pss_kib: u64,
    /// Private_Clean + Private_Dirty from smaps_rollup: pages only that
    /// process maps.
    pub private_kib: u64,
}

/// Samples the memory of `root` and all its descendants. A process that
/// exits while being read is skipped.
pub fn tree_memory(root: u32) -> Result<MemSample> {
    let mut m = MemSample::default();
    for pid in tree_pids(root)? {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        m.processes += 1;
        m.rss_kib += kib_field(&status, "VmRSS:").unwrap_or(0);
        if let Ok(rollup) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
            m.pss_kib += kib_field(&rollup, "Pss:").unwrap_or(0);
            m.private_kib += kib_field(&rollup, "Private_Clean:").unwrap_or(0)
                + kib_field(&rollup, "Private_Dirty:").unwrap_or(0);
        }
    }
    Ok(m)
}

/// VmRSS of `root` and its descendants, summed (KiB); cheaper than
/// `tree_memory` (no smaps).
pub fn tree_rss_kib(root: u32) -> Result<u64> {
    Ok(tree_pids(root)?
        .into_iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|s| kib_field(&s, "VmRSS:"))
        .sum())
}

/// MemAvailable from /proc/meminfo (KiB).
pub fn mem_available_kib() -> Result<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    kib_field(&text, "MemAvailable:").context("no MemAvailable in /proc/meminfo")
}

/// `Key:   1234 kB` → 1234.
fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// CPU ticks (user + system) of this process so far.
pub fn self_cpu_ticks() -> Result<u64> {
    let text = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
    let st = parse_stat(&text).context("parsing /proc/self/stat")?;
    Ok(st.utime + st.stime)
}

pub fn ticks_to_ms(ticks: u64) -> f64 {
    ticks as f64 * 1000.0 / clock_ticks_per_sec() as f64
}

fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

struct ProcStat {
    ppid: u32,
    utime: u64,
    stime: u64,
    cutime: u64,
    cstime: u64,
}

fn read_all_stats() -> HashMap<u32, ProcStat> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // A process may exit between readdir and read: skip it.
        if let Ok(text) = std::fs::read_to_string(entry.path().join("stat"))
            && let Some(st) = parse_stat(&text)
        {
            out.insert(pid, st);
        }
    }
    out
}

/// Parses /proc/PID/stat. The command name (field 2) is in parentheses and
/// may contain spaces or parentheses, so fields are counted from the last ')'.
fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state): ppid = field 4, utime..cstime = fields 14..17.
    let num = |i: usize| f.get(i)?.parse::<u64>().ok();
    Some(ProcStat {
        ppid: num(1)? as u32,
        utime: num(11)?,
        stime: num(12)?,
        cutime: num(13)?,
        cstime: num(14)?,
    })
}

/// Key=value pairs for the machine-readable `RESULT` line, kept in order.
#[derive(Default)]
pub struct Report {
    pairs: Vec<(String, String)>,
}

impl Report {
    pub fn add(&mut self, key: &str, value: impl std::fmt::Display) -> &mut Self {
        // Values never contain whitespace, so the line splits on spaces.
        let v: String = value
            .to_string()
            .chars()
            .map(|c| if c.is_whitespace() { '_' } else { c })
            .collect();
        self.pairs.push((key.to_string(), v));
        self
    }

    pub fn add_f(&mut self, key: &str, value: Option<f64>, decimals: usize) -> &mut Self {
        match value {
            Some(v) => self.add(key, format!("{v:.decimals$}")),
            None => self.add(key, "NA"),
        }
    }

    pub fn result_line(&self) -> String {
        let mut s = String::from("RESULT");
        for (k, v) in &self.pairs {
            let _ = write!(s, " {k}={v}");
        }
        s
    }
}

/// Samples server CPU before and after a run.
pub struct CpuProbe {
    pid: Option<u32>,
    server_start: u64,
    self_start: u64,
}

impl CpuProbe {
    pub fn start(pid: Option<u32>) -> Result<Self> {
        let server_start = match pid {
            Some(p) => tree_cpu_ticks(p)?,
            None => 0,
        };
        Ok(Self {
            pid,
            server_start,
            self_start: self_cpu_ticks()?,
        })
    }

    /// (server CPU ms if a PID was given, load generator CPU ms).
    pub fn finish(&self) -> Result<(Option<f64>, f64)> {
        let server = match self.pid {
            Some(p) => {
                let end = tree_cpu_ticks(p)
                    .with_context(|| format!("server process {p} is gone after the run"))?;
                Some(ticks_to_ms(end.saturating_sub(self.server_start)))
            }
            None => None,
        };
        let me = ticks_to_ms(self_cpu_ticks()?.saturating_sub(self.self_start));
        Ok((server, me))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_comm() {
        let line =
            "1234 (we ird) name)) S 1 1234 1234 0 -1 4194560 100 0 0 0 7 3 11 13 20 0 1 0 5 0 0";
        let st = parse_stat(line).unwrap();
        assert_eq!(st.ppid, 1);
        assert_eq!((st.utime, st.stime, st.cutime, st.cstime), (7, 3, 11, 13));
    }

    #[test]
    fn percentiles() {
        let mut l = Latencies::default();
        for i in 1..=100 {
            l.push(Duration::from_millis(i));
        }
        assert_eq!(l.percentile_ms(50.0), Some(50.0));
        assert_eq!(l.percentile_ms(99.0), Some(99.0));
        assert_eq!(l.percentile_ms(100.0), Some(100.0));
        assert!(Latencies::default().percentile_ms(50.0).is_none());
    }

    #[test]
    fn own_tree_is_found() {
        let pid = std::process::id();
        tree_cpu_ticks(pid).unwrap();
        let m = tree_memory(pid).unwrap();
        assert!(m.processes >= 1 && m.rss_kib > 0 && m.pss_kib > 0, "{m:?}");
        assert_eq!(kib_field("VmRSS:\t  1234 kB\n", "VmRSS:"), Some(1234));
        assert!(tree_rss_kib(pid).unwrap() > 0);
        assert!(mem_available_kib().unwrap() > 0);
    }
}
