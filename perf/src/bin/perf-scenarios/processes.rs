//! The processes a scenario measures or drives: nats-server, pilot (as its
//! own process, reading the bus as in production), the load tool and the
//! floor server. Each is stopped when dropped, so a failed scenario leaves
//! nothing running.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::http::get_json;

/// Where the release binaries and the tools are.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub dir: PathBuf,
    pub nats_server: PathBuf,
    /// Scratch space for logs and dumps.
    pub work: PathBuf,
}

impl Binaries {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The third-party baseline server (perf/baseline, built into
    /// target/baseline/release by `make bench`), when it was built.
    pub fn baseline(&self) -> Option<PathBuf> {
        let path = self
            .dir
            .parent()?
            .join("baseline")
            .join("release")
            .join("xds-baseline");
        path.exists().then_some(path)
    }
}

/// A child process stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Running {
    pub name: String,
    child: Child,
}

impl Running {
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> anyhow::Result<Running> {
        let log_file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        command
            .stdout(Stdio::from(log_file.try_clone()?))
            .stderr(Stdio::from(log_file));
        let child = command
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Running {
            name: name.to_string(),
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills at once, as a crash would (the reconnect storm).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "perf-scenarios: {} ignored SIGTERM for 5 s; killing it",
            self.name
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free local port")
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Polls `check` every 50 ms until it gives a value or `limit` passes.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// nats-server with JetStream on a free port.
pub struct Nats {
    pub url: String,
    _process: Running,
}

impl Nats {
    pub async fn start(bins: &Binaries) -> anyhow::Result<Nats> {
        let port = free_port();
        let store = bins.work.join(format!("jetstream-{port}"));
        let mut command = Command::new(&bins.nats_server);
        command
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(&store);
        let process = Running::spawn("nats-server", command, &bins.work.join("nats.log"))?;
        wait_for("nats-server", Duration::from_secs(10), || async move {
            tokio::net::TcpStream::connect(local(port)).await.ok()
        })
        .await?;
        Ok(Nats {
            url: format!("nats://127.0.0.1:{port}"),
            _process: process,
        })
    }
}

/// pilot reading the config bucket, plaintext xDS only.
pub struct Pilot {
    pub xds: SocketAddr,
    pub http: SocketAddr,
    pub process: Running,
}

impl Pilot {
    /// Starts pilot on `xds` (a free port when `None`) and waits until it
    /// has read the bucket.
    pub async fn start(
        bins: &Binaries,
        nats_url: &str,
        xds: Option<SocketAddr>,
    ) -> anyhow::Result<Pilot> {
        let xds = xds.unwrap_or_else(|| local(free_port()));
        let http = local(free_port());
        let mut command = Command::new(bins.path("pilot"));
        command
            .args(["--nats-url", nats_url, "--xds-tls-addr", "none"])
            .args([
                "--xds-addr",
                &xds.to_string(),
                "--http-addr",
                &http.to_string(),
            ])
            .args(["--pod-name", "pilot-bench"])
            .env("TRIREME_LOG_LEVEL", "warn");
        let process = Running::spawn(
            "pilot",
            command,
            &bins.work.join(format!("pilot-{}.log", xds.port())),
        )?;
        wait_for(
            "pilot to be ready",
            Duration::from_secs(60),
            || async move {
                crate::http::get_text(http, "/healthz/ready")
                    .await
                    .ok()
                    .filter(|(status, _)| *status == 200)
            },
        )
        .await?;
        Ok(Pilot { xds, http, process })
    }

    /// The sum of pilot's `pilot_xds_pushes` series of `xds_type` (Istio's
    /// type label: cds, eds, lds, rds).
    pub async fn pushes(&self, xds_type: &str) -> anyhow::Result<f64> {
        let (_, text) = crate::http::get_text(self.http, "/metrics").await?;
        let needle = format!("type=\"{xds_type}\"");
        Ok(text
            .lines()
            .filter(|line| line.starts_with("pilot_xds_pushes") && line.contains(&needle))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }
}

/// How the load tool's proxies behave.
#[derive(Debug, Clone, Copy)]
pub struct LoadSettings {
    pub proxies: usize,
    pub namespaces: usize,
    pub delta: bool,
}

/// The load tool, with its report address.
pub struct Load {
    pub report: SocketAddr,
    _process: Running,
}

impl Load {
    pub async fn start(
        bins: &Binaries,
        server: SocketAddr,
        settings: LoadSettings,
        dump_dir: Option<&Path>,
    ) -> anyhow::Result<Load> {
        let report = local(free_port());
        let mut command = Command::new(bins.path("xds-load"));
        command
            .args(["--pilot", &server.to_string()])
            .args(["--proxies", &settings.proxies.to_string()])
            .args(["--namespaces", &settings.namespaces.to_string()])
            .args(["--report-addr", &report.to_string()]);
        if settings.delta {
            command.arg("--delta");
        }
        // One address has about 28k ephemeral ports.
        if settings.proxies > 20_000 {
            command.args(["--source-ips", "127.0.0.2-127.0.0.9"]);
        }
        if let Some(dir) = dump_dir {
            command.arg("--dump-dir").arg(dir);
        }
        let log = bins.work.join(format!("xds-load-{}.log", report.port()));
        let process = Running::spawn("xds-load", command, &log)?;
        wait_for(
            "the load tool's report port",
            Duration::from_secs(20),
            || async move { get_json(report, "/stats").await.ok() },
        )
        .await?;
        Ok(Load {
            report,
            _process: process,
        })
    }

    /// Waits until every proxy has ACKed its full config; returns the
    /// tool's `/ready_times`.
    pub async fn wait_ready(&self, limit: Duration) -> anyhow::Result<Value> {
        let report = self.report;
        wait_for("every proxy to ACK its full config", limit, || async move {
            match crate::http::get_text(report, "/ready").await {
                Ok((200, _)) => Some(()),
                _ => None,
            }
        })
        .await?;
        get_json(report, "/ready_times").await
    }

    pub async fn stats(&self) -> anyhow::Result<Value> {
        get_json(self.report, "/stats").await
    }

    /// `/converged` for `xds_type` since `since_ns`.
    pub async fn converged(&self, since_ns: u64, xds_type: &str) -> anyhow::Result<Value> {
        get_json(
            self.report,
            &format!("/converged?since={since_ns}&type={xds_type}"),
        )
        .await
    }

    /// Waits until every proxy heard `xds_type` after `since_ns`; returns
    /// the `/converged` answer then.
    pub async fn wait_converged(
        &self,
        since_ns: u64,
        xds_type: &str,
        limit: Duration,
    ) -> anyhow::Result<Value> {
        wait_for(
            &format!("every proxy to receive {xds_type}"),
            limit,
            || async move {
                let answer = self.converged(since_ns, xds_type).await.ok()?;
                (answer["updated"] == answer["of"]).then_some(answer)
            },
        )
        .await
    }
}

/// A server replaying a dump of pilot's responses: this machine's floor
/// (xds-floor) or the third-party baseline (xds-baseline); both take the
/// same flags.
pub struct Floor {
    pub xds: SocketAddr,
    pub http: SocketAddr,
    _process: Running,
}

impl Floor {
    pub async fn start_program(
        bins: &Binaries,
        program: &Path,
        dump_dir: &Path,
    ) -> anyhow::Result<Floor> {
        let xds = local(free_port());
        let http = local(free_port());
        let mut command = Command::new(program);
        command
            .arg("--dump-dir")
            .arg(dump_dir)
            .args([
                "--xds-addr",
                &xds.to_string(),
                "--http-addr",
                &http.to_string(),
            ])
            .env("RUST_LOG", "warn");
        let name = program
            .file_name()
            .map_or("replay".into(), |n| n.to_string_lossy().into_owned());
        let log = bins.work.join(format!("{name}-{}.log", xds.port()));
        let process = Running::spawn(&name, command, &log)?;
        wait_for(&name, Duration::from_secs(10), || async move {
            tokio::net::TcpStream::connect(xds).await.ok()
        })
        .await?;
        Ok(Floor {
            xds,
            http,
            _process: process,
        })
    }

    pub fn pid(&self) -> u32 {
        self._process.pid()
    }

    /// Re-sends every type to every stream with a new version.
    pub async fn push(&self) -> anyhow::Result<()> {
        let (status, body) = crate::http::post(self.http, "/push").await?;
        if status / 100 != 2 {
            bail!("xds-floor /push answered {status}: {body}");
        }
        Ok(())
    }
}

/// Unix time in nanoseconds, the load tool's clock.
pub use perf::sys::unix_nanos as unix_ns;

/// The Envoy binary (`ENVOY_BIN`, else `.tools/bin/envoy`), absolute when it
/// can be, so processes with another working directory find it too.
pub fn envoy_bin() -> PathBuf {
    let path = std::env::var_os("ENVOY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".tools/bin/envoy"));
    std::fs::canonicalize(&path).unwrap_or(path)
}
