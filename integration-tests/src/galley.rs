//! galley as a process, publishing a watched config directory to the bus.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::{Process, binary, eventually, free_port, http_get, log_tail};

/// A running galley; killed when dropped (printing its log tail if the
/// test is failing).
pub struct Galley {
    pub http_addr: SocketAddr,
    process: Process,
    log_dir: tempfile::TempDir,
}

impl Galley {
    /// Starts galley on free ports publishing `config_dir` to the bus at
    /// `nats_url`; returns once it has published the directory once.
    pub fn start(config_dir: &Path, nats_url: &str) -> Galley {
        let http_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let log_dir = tempfile::tempdir().expect("a temp dir for galley's log");
        let log = log_dir.path().join("galley.log");
        let mut command = Command::new(binary("galley"));
        command
            .arg("--config-dir")
            .arg(config_dir)
            .args(["--nats-url", nats_url])
            .args(["--http-addr", &http_addr.to_string()])
            // The webhook has its own tests; several galleys share a host here.
            .args(["--webhook-addr", "none"])
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or("info".into()),
            );
        let mut process = Process::spawn_logged("galley", command, &log);
        eventually("galley /healthz/ready", Duration::from_secs(20), || {
            if let Some(status) = process.exited() {
                panic!("galley exited with {status}:\n{}", log_tail(&log, 30));
            }
            http_get(http_addr, "/healthz/ready")
                .ok()
                .filter(|(code, _)| *code == 200)
        });
        Galley {
            http_addr,
            process,
            log_dir,
        }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log_dir.path().join("galley.log"), lines)
    }

    pub fn kill(&mut self) {
        self.process.kill();
    }
}

impl Drop for Galley {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- galley log tail ---\n{}", self.log_tail(40));
        }
    }
}
