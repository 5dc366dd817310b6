//! Harness for multi-process tests: find the workspace's binaries, pick free
//! ports, start real peers (nats-server) and make sure every process started
//! here is gone when the test ends, pass or fail.
//!
//! Gateway tests add: a real Envoy started from a bootstrap that points at
//! pilot ([`envoy`]), pilot itself over a watched config directory
//! ([`pilot`], [`config_dir`]), small HTTP backends with failure and delay
//! knobs ([`backend`]), a blocking HTTP/1.1 client ([`http_client`]) and the
//! Istio YAML that registers backends ([`istio_yaml`]).
//!
//! Workload identity tests add a citadel with the token and root-cert files
//! a pod would have ([`workload`]).
//!
//! Injection tests run an injected pod spec's containers as a node would
//! ([`injected_pod`]).

pub mod agent;
pub mod backend;
pub mod citadel;
pub mod config_dir;
pub mod envoy;
pub mod galley;
pub mod http_client;
pub mod injected_pod;
pub mod istio_yaml;
pub mod netns;
pub mod pilot;
pub mod sidecar_mesh;
pub mod workload;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use nix::{sys::signal, unistd::Pid};

/// The workspace root (where `.tools/` lives).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration-tests sits inside the workspace")
        .to_path_buf()
}

/// Path of a binary built from this workspace (`make test` builds them all
/// first). Panics with a hint when it is missing.
pub fn binary(name: &str) -> PathBuf {
    // Test executables live in target/<profile>/deps; binaries one level up.
    let exe = std::env::current_exe().expect("the test knows where it runs");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binaries live in target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --bins`, which `make test` does)",
        path.display()
    );
    path
}

/// A real peer binary from `ENV_VAR`, else `.tools/bin/<name>` (installed by
/// `scripts/install-tools.sh`), else PATH.
pub fn tool(env_var: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env_var).filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let local = workspace_root().join(".tools/bin").join(name);
    if local.exists() {
        return local;
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|candidate| candidate.exists())
        })
        .unwrap_or_else(|| {
            panic!("{name} not found: set {env_var} or run scripts/install-tools.sh")
        })
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("the OS hands out a free port")
}

/// A child process that is killed (and reaped) when dropped.
pub struct Process {
    pub name: String,
    child: Option<Child>,
}

impl Process {
    /// Starts `command`. Its output is discarded (so it never blocks on a full
    /// pipe) unless `TRIREME_TEST_LOGS=1` asks to see it.
    pub fn spawn(name: &str, mut command: Command) -> Process {
        command.stdin(Stdio::null());
        if std::env::var_os("TRIREME_TEST_LOGS").is_none() {
            command.stdout(Stdio::null()).stderr(Stdio::null());
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Process {
            name: name.to_string(),
            child: Some(child),
        }
    }

    /// Like [`Process::spawn`], but keeps the output in `log` (unless
    /// `TRIREME_TEST_LOGS=1` shows it live), so a failing test can print
    /// what the process said with [`log_tail`].
    pub fn spawn_logged(name: &str, mut command: Command, log: &Path) -> Process {
        if std::env::var_os("TRIREME_TEST_LOGS").is_none() {
            let file = std::fs::File::create(log)
                .unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
            let copy = file.try_clone().expect("duplicating a log file handle");
            command.stdout(file).stderr(copy);
        }
        command.stdin(Stdio::null());
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Process {
            name: name.to_string(),
            child: Some(child),
        }
    }

    /// The exit status if the process has ended, without waiting.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self
            .child
            .as_mut()?
            .try_wait()
            .expect("polling the child")?;
        self.child = None;
        Some(status)
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("running").id() as i32)
    }

    pub fn signal(&self, signal: signal::Signal) {
        signal::kill(self.pid(), signal).expect("signalling the child");
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_for_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().expect("polling the child") {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A real `nats-server -js` on a free loopback port with its own store,
/// which can be stopped and started again (same port, same store).
pub struct NatsServer {
    pub port: u16,
    process: Option<Process>,
    store: tempfile::TempDir,
}

impl NatsServer {
    pub fn start() -> NatsServer {
        let store = tempfile::tempdir().expect("a temp dir for JetStream");
        let mut server = NatsServer {
            port: free_port(),
            process: None,
            store,
        };
        server.start_again();
        server
    }

    /// Stops the server (SIGKILL: an outage, not a goodbye).
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Starts it again where it was, with what JetStream had stored.
    pub fn start_again(&mut self) {
        let mut command = Command::new(tool("NATS_SERVER_BIN", "nats-server"));
        command
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.store.path());
        self.process = Some(Process::spawn("nats-server", command));
        wait_for_port(self.port, Duration::from_secs(10));
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

/// Waits until something accepts connections on the loopback `port`.
pub fn wait_for_port(port: u16, limit: Duration) {
    let deadline = Instant::now() + limit;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listened on port {port} within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A minimal HTTP/1.1 GET, enough for health and metrics endpoints:
/// returns the status code and body.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not HTTP: {response:?}")))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `limit`
/// describing `what` was awaited.
pub fn eventually<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last `lines` lines of a log file, for failure messages.
pub fn log_tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
