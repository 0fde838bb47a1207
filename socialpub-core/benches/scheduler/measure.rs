//! CPU time and percentiles.

use std::time::Duration;

/// The PostgreSQL URL, without TLS unless it asks for it: graphile-worker's client (node-pg)
/// connects without TLS by default and sqlx negotiates it when the server offers it, so an
/// unqualified URL would compare an encrypted connection with a plain one.
/// CPU time this process has used, user and system, all threads (from `/proc/self/stat`, in
/// ticks of 1/100 s, Linux's `USER_HZ`); `None` where there is no such file. A drain's rate
/// moves with what else the machine runs; the CPU it took moves far less.
pub(super) fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces; the fields after it are plain numbers.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // Fields 14 and 15 of the file (utime, stime) are the 12th and 13th after the name.
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// The CPU time every process on the machine has used since boot (user, nice, system, irq,
/// softirq and steal from the first line of `/proc/stat`, in its ticks of 10 ms): on
/// PostgreSQL, the server's part of the work as well as the bench's.
pub(super) fn machine_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal
    let busy = [0, 1, 2, 5, 6, 7]
        .iter()
        .map(|&i| ticks.get(i).copied().unwrap_or(0))
        .sum::<u64>();
    Some(Duration::from_millis(busy * 10))
}

/// The CPU used since `before`, per item, in microseconds, for the results table.
pub(super) fn cpu_per_item(before: Option<Duration>, now: Option<Duration>, n: usize) -> String {
    match (before, now) {
        (Some(b), Some(a)) => format!(
            "{:.1} µs CPU each",
            a.saturating_sub(b).as_secs_f64() * 1e6 / n as f64
        ),
        _ => "CPU not measured".to_owned(),
    }
}

pub(super) fn percentile(sorted: &[i64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1000.0
}
