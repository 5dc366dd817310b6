//! CPU time and peak memory of a process, read from /proc.

use std::process::Command;

use anyhow::{Context, bail};

/// Converts /proc's CPU times, counted in clock ticks, to seconds.
pub struct CpuClock {
    ticks_per_second: f64,
}

impl CpuClock {
    /// The tick rate comes from `getconf CLK_TCK`; 100 when that fails, the
    /// value Linux reports to user space on every common architecture.
    pub fn new() -> Self {
        let ticks = Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|output| String::from_utf8(output.stdout).ok())
            .and_then(|text| text.trim().parse::<f64>().ok())
            .filter(|ticks| *ticks > 0.0)
            .unwrap_or(100.0);
        Self {
            ticks_per_second: ticks,
        }
    }

    /// User plus system CPU seconds `pid` has used so far (all threads).
    pub fn process_seconds(&self, pid: u32) -> anyhow::Result<f64> {
        self.seconds_from(&format!("/proc/{pid}/stat"))
    }

    /// The same for this bench process: the load generator's share.
    pub fn own_seconds(&self) -> anyhow::Result<f64> {
        self.seconds_from("/proc/self/stat")
    }

    fn seconds_from(&self, path: &str) -> anyhow::Result<f64> {
        let stat = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
        Ok(
            cpu_ticks(&stat).with_context(|| format!("parsing {path}"))? as f64
                / self.ticks_per_second,
        )
    }
}

/// utime + stime from a /proc/<pid>/stat line. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted after its last
/// `)`: there, state is field 3, utime 14 and stime 15.
fn cpu_ticks(stat: &str) -> anyhow::Result<u64> {
    let Some((_, after_name)) = stat.rsplit_once(')') else {
        bail!("no command name");
    };
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |number: usize| -> anyhow::Result<u64> {
        let text = fields
            .get(number - 3)
            .with_context(|| format!("field {number} missing"))?;
        Ok(text.parse()?)
    };
    Ok(field(14)? + field(15)?)
}

/// Peak resident memory of `pid` (VmHWM) in KiB.
pub fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .with_context(|| format!("no VmHWM in {path}"))?;
    let kib = line.trim().trim_end_matches("kB").trim();
    kib.parse()
        .with_context(|| format!("VmHWM {line:?} in {path}"))
}
