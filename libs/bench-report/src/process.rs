//! Another process's CPU time and memory, read from `/proc`: what the
//! measured server cost while the load ran.

use std::io;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

/// One sample of a process's usage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessUsage {
    /// When it was taken.
    pub at: Instant,
    /// User plus system CPU seconds so far, all threads.
    pub cpu_seconds: f64,
    /// Resident memory now (VmRSS).
    pub rss_kib: u64,
    /// Peak resident memory since start (VmHWM), or since
    /// [`ProcessUsage::reset_peak`].
    pub peak_rss_kib: u64,
}

impl ProcessUsage {
    /// Samples process `pid`.
    pub fn sample(pid: u32) -> io::Result<ProcessUsage> {
        sample_at(&format!("/proc/{pid}"))
    }

    /// Samples this process (e.g. the load generator's own share).
    pub fn sample_self() -> io::Result<ProcessUsage> {
        sample_at("/proc/self")
    }

    /// CPU seconds the process used per wall second between two samples
    /// of it: 1.0 is one core busy all the time.
    pub fn cpu_per_wall_second(start: &ProcessUsage, end: &ProcessUsage) -> f64 {
        let wall = end.at.saturating_duration_since(start.at).as_secs_f64();
        if wall > 0.0 {
            (end.cpu_seconds - start.cpu_seconds) / wall
        } else {
            0.0
        }
    }

    /// Restarts `pid`'s VmHWM at its current RSS (writing 5 to
    /// `clear_refs`), so a later peak is one phase's, not the start-up's.
    pub fn reset_peak(pid: u32) -> io::Result<()> {
        std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
    }
}

/// The unit of `/proc`'s CPU times: `getconf CLK_TCK`, asked once; 100
/// when that fails, the value Linux reports on every common architecture.
pub fn clock_ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|output| String::from_utf8(output.stdout).ok())
            .and_then(|text| text.trim().parse::<f64>().ok())
            .filter(|ticks| *ticks > 0.0)
            .unwrap_or(100.0)
    })
}

fn sample_at(proc_dir: &str) -> io::Result<ProcessUsage> {
    let at = Instant::now();
    let stat = read(&format!("{proc_dir}/stat"))?;
    let status = read(&format!("{proc_dir}/status"))?;
    Ok(ProcessUsage {
        at,
        cpu_seconds: cpu_ticks(&stat).ok_or_else(|| invalid(proc_dir, "stat"))? as f64
            / clock_ticks_per_second(),
        rss_kib: status_kib(&status, "VmRSS:").ok_or_else(|| invalid(proc_dir, "VmRSS"))?,
        peak_rss_kib: status_kib(&status, "VmHWM:").ok_or_else(|| invalid(proc_dir, "VmHWM"))?,
    })
}

fn read(path: &str) -> io::Result<String> {
    std::fs::read_to_string(path)
        .map_err(|error| io::Error::new(error.kind(), format!("reading {path}: {error}")))
}

fn invalid(proc_dir: &str, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("no readable {what} in {proc_dir}"),
    )
}

/// utime + stime from a `/proc/<pid>/stat` line. The command name (field
/// 2) may hold spaces and parentheses, so fields are counted after its
/// last `)`: there, state is field 3, utime 14 and stime 15.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let (_, after_name) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |number: usize| fields.get(number - 3)?.parse::<u64>().ok();
    Some(field(14)? + field(15)?)
}

/// A `kB` line of `/proc/<pid>/status`, e.g. `VmHWM:     1234 kB`.
fn status_kib(status: &str, label: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(label))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_counted_after_a_name_with_spaces_and_parentheses() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 5 0 0";
        assert_eq!(cpu_ticks(stat), Some(10));
    }

    #[test]
    fn status_lines_are_read_in_kib() {
        let status = "Name:\tpilot\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(status_kib(status, "VmHWM:"), Some(20_480));
        assert_eq!(status_kib(status, "VmRSS:"), Some(10_240));
        assert_eq!(status_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn this_process_uses_cpu_and_memory() {
        let start = ProcessUsage::sample(std::process::id()).unwrap();
        let spin = Instant::now();
        while spin.elapsed().as_millis() < 50 {
            std::hint::black_box(spin.elapsed());
        }
        let end = ProcessUsage::sample_self().unwrap();
        assert!(end.rss_kib > 0 && end.peak_rss_kib >= end.rss_kib);
        assert!(end.cpu_seconds >= start.cpu_seconds);
        assert!(ProcessUsage::cpu_per_wall_second(&start, &end) >= 0.0);
    }
}
