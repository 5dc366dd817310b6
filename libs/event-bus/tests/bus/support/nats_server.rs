//! A real nats-server with JetStream, one per test, on a free port with its
//! own store directory; killed when dropped.

use std::{
    fs::File,
    net::{Ipv4Addr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tempfile::TempDir;

const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);

pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    /// Holds `store/` (JetStream data, kept across restarts) and `nats.log`.
    dir: TempDir,
    process: Option<Child>,
}

impl NatsServer {
    /// Starts a server on a free port.
    pub async fn running() -> NatsServer {
        let mut server = NatsServer::stopped();
        server.start().await;
        server
    }

    /// Picks the binary, a free port and a store directory, without starting.
    pub fn stopped() -> NatsServer {
        super::init_tracing();
        NatsServer {
            binary: nats_server_binary(),
            port: free_port(),
            dir: tempfile::tempdir().expect("create a temporary directory for nats-server"),
            process: None,
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again), on the same port and store directory, and
    /// waits until it accepts connections.
    pub async fn start(&mut self) {
        assert!(self.process.is_none(), "nats-server is already running");
        let log_path = self.log_path();
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("open the nats-server log file");
        let process = Command::new(&self.binary)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.dir.path().join("store"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("duplicate the log file handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", self.binary.display()));
        self.process = Some(process);
        self.wait_until_accepting().await;
    }

    /// Kills the server at once (like a crash: no lame-duck, no goodbye) and
    /// waits until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats.log")
    }

    async fn wait_until_accepting(&mut self) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_ok() {
                return;
            }
            let process = self.process.as_mut().expect("server process");
            if let Ok(Some(status)) = process.try_wait() {
                panic!(
                    "nats-server exited with {status} before accepting connections; log:\n{}",
                    read_log(&self.log_path())
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "nats-server did not accept connections on port {} within {STARTUP_TIMEOUT:?}; log:\n{}",
                    self.port,
                    read_log(&self.log_path())
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `$NATS_SERVER_BIN`, else the project's `.tools/bin/nats-server`, else
/// `nats-server` on `PATH`. Missing everywhere is a failure, not a skip: these
/// tests are the only proof the bus code works against a real server.
fn nats_server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NATS_SERVER_BIN") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "NATS_SERVER_BIN={} is not a file",
            path.display()
        );
        return path;
    }
    let project_tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools/bin/nats-server");
    if project_tools.is_file() {
        return project_tools;
    }
    if let Some(on_path) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nats-server"))
            .find(|candidate| candidate.is_file())
    }) {
        return on_path;
    }
    panic!(
        "nats-server not found (looked at $NATS_SERVER_BIN, {}, and PATH); \
         run scripts/install-tools.sh to install it",
        project_tools.display()
    );
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("find a free port")
        .port()
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|error| format!("(no log: {error})"))
}
