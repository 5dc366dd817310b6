//! The machine and the source revision a run measured.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

/// The machine the figures come from, as Linux describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// `model name` from `/proc/cpuinfo`.
    pub cpu_model: Option<String>,
    /// CPUs this process may use (what `nproc` prints).
    pub nproc: usize,
    /// `MemTotal` from `/proc/meminfo`.
    pub memory_kib: Option<u64>,
    /// `/proc/sys/kernel/osrelease`.
    pub kernel: Option<String>,
    /// The 1, 5 and 15 minute load averages: what else the (shared)
    /// machine was doing when this was taken.
    pub load_average: Option<String>,
}

impl Machine {
    /// Reads `/proc`; what it cannot read stays `None`. Take it before the
    /// load starts, so the load average is the machine's, not the bench's.
    pub fn detect() -> Machine {
        Machine {
            cpu_model: read("/proc/cpuinfo").as_deref().and_then(cpu_model),
            nproc: std::thread::available_parallelism().map_or(1, usize::from),
            memory_kib: read("/proc/meminfo").as_deref().and_then(memory_kib),
            kernel: read("/proc/sys/kernel/osrelease"),
            load_average: read("/proc/loadavg").as_deref().map(load_average),
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "cpu_model": self.cpu_model,
            "nproc": self.nproc,
            "memory_kib": self.memory_kib,
            "kernel": self.kernel,
            "load_average": self.load_average,
        })
    }
}

/// The source a run measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitRevision {
    /// `git rev-parse HEAD`; `None` outside a checkout or without git.
    pub head: Option<String>,
    /// Whether the work tree had uncommitted changes (then `head` alone
    /// does not say what was measured).
    pub dirty: Option<bool>,
}

impl GitRevision {
    pub fn to_json(&self) -> Value {
        json!({ "head": self.head, "dirty": self.dirty })
    }
}

/// The checkout this crate was built from: benches always are built in
/// the workspace they measure.
pub fn git_revision() -> GitRevision {
    GitRevision {
        head: git(&["rev-parse", "HEAD"]),
        dirty: git(&["status", "--porcelain"]).map(|status| !status.is_empty()),
    }
}

/// A git answer about this checkout, or `None` outside one or without git.
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|text| text.trim().to_owned())
}

fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map(|(_, model)| model.trim().to_owned())
}

fn memory_kib(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

fn load_average(loadavg: &str) -> String {
    loadavg
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_model_and_memory_come_from_their_proc_lines() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n";
        assert_eq!(
            cpu_model(cpuinfo).as_deref(),
            Some("Intel(R) Xeon(R) CPU @ 2.20GHz")
        );
        let meminfo = "MemTotal:        8137576 kB\nMemFree:          123 kB\n";
        assert_eq!(memory_kib(meminfo), Some(8_137_576));
        assert_eq!(load_average("0.52 0.58 0.59 1/345 12345"), "0.52 0.58 0.59");
    }

    #[test]
    fn this_machine_has_at_least_one_cpu_and_a_kernel() {
        let machine = Machine::detect();
        assert!(machine.nproc >= 1);
        assert!(machine.kernel.is_some());
    }
}
