//! Supervising Envoy: started as the proxy's uid, restarted with backoff when
//! it dies, drained gracefully when the agent is asked to stop.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::admin::AdminClient;

/// How Envoy is started.
#[derive(Debug, Clone)]
pub struct EnvoyCommand {
    pub binary: PathBuf,
    pub bootstrap: PathBuf,
    /// Run as this uid/gid when the agent runs as root (Istio's 1337), so the
    /// capture rules can tell Envoy's own traffic from the application's.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub concurrency: u32,
    pub log_level: String,
    pub drain_time: Duration,
}

impl EnvoyCommand {
    fn command(&self) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .arg("-c")
            .arg(&self.bootstrap)
            .args(["--log-level", &self.log_level])
            .args(["--concurrency", &self.concurrency.to_string()])
            .args([
                "--drain-time-s",
                &self.drain_time.as_secs().max(1).to_string(),
            ])
            // Several proxies may share a host (interception mode NONE), and
            // the agent restarts Envoy itself: no hot-restart shared memory.
            .arg("--disable-hot-restart")
            .args(["--drain-strategy", "immediate"])
            .stdin(Stdio::null())
            .kill_on_drop(true);
        // Envoy must not outlive its agent (killed, crashed): nothing would
        // supervise or drain it, and a restarted agent could not bind its
        // ports. Runs after the uid change, which would otherwise clear it.
        // SAFETY: prctl is async-signal-safe and nothing is allocated here.
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
        if running_as_root() {
            if let Some(gid) = self.gid.or(self.uid) {
                command.gid(gid);
            }
            if let Some(uid) = self.uid {
                command.uid(uid);
            }
        }
        command
    }
}

fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Where Envoy stands, for readiness and the status server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvoyState {
    Starting,
    Running {
        pid: u32,
    },
    /// Died; restarting after a backoff.
    Restarting,
    Stopped,
}

/// Backoff between restarts: 200 ms doubling to 30 s, reset once Envoy has
/// stayed up for a minute.
const FIRST_RESTART_DELAY: Duration = Duration::from_millis(200);
const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// How long Envoy gets to exit after SIGTERM before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// How a graceful stop drains.
#[derive(Debug, Clone)]
pub struct DrainSettings {
    pub admin: AdminClient,
    /// Istio's `terminationDrainDuration`: the longest wait for open
    /// connections to finish.
    pub duration: Duration,
}

/// Runs Envoy until `stop` is cancelled, restarting it whenever it exits on
/// its own; then drains and stops it.
pub async fn supervise(
    command: EnvoyCommand,
    drain: DrainSettings,
    state: watch::Sender<EnvoyState>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut delay = FIRST_RESTART_DELAY;
    loop {
        state.send_replace(EnvoyState::Starting);
        let mut child = command
            .command()
            .spawn()
            .map_err(|error| anyhow::anyhow!("starting {}: {error}", command.binary.display()))?;
        let pid = child.id().unwrap_or_default();
        tracing::info!(pid, binary = %command.binary.display(), "Envoy started");
        state.send_replace(EnvoyState::Running { pid });
        let started = Instant::now();
        tokio::select! {
            exit = child.wait() => {
                let exit = exit.map(|status| status.to_string()).unwrap_or_else(|e| e.to_string());
                if started.elapsed() > STABLE_AFTER {
                    delay = FIRST_RESTART_DELAY;
                }
                tracing::warn!(%exit, restart_in = ?delay, "Envoy exited; restarting");
                state.send_replace(EnvoyState::Restarting);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.cancelled() => break,
                }
                delay = (delay * 2).min(MAX_RESTART_DELAY);
            }
            _ = stop.cancelled() => {
                drain_and_stop(&mut child, &drain).await;
                break;
            }
        }
    }
    state.send_replace(EnvoyState::Stopped);
    Ok(())
}

/// Istio's termination: stop accepting inbound connections, let the open
/// ones finish (at most the drain duration), then stop Envoy.
async fn drain_and_stop(child: &mut Child, drain: &DrainSettings) {
    match drain
        .admin
        .post("/drain_listeners?inboundonly&graceful")
        .await
    {
        Ok(_) => tracing::info!(limit = ?drain.duration, "draining inbound listeners"),
        Err(error) => tracing::warn!(%error, "asking Envoy to drain failed"),
    }
    let deadline = Instant::now() + drain.duration;
    while Instant::now() < deadline {
        match drain.admin.active_downstream_connections().await {
            Ok(0) => break,
            Ok(_) | Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    if let Some(pid) = child.id() {
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    }
    if tokio::time::timeout(EXIT_GRACE, child.wait())
        .await
        .is_err()
    {
        tracing::warn!("Envoy did not exit after SIGTERM; killing it");
        let _ = child.kill().await;
    }
    tracing::info!("Envoy stopped");
}
