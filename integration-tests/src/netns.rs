//! Network namespaces for tests that need root: a namespace per pod, joined
//! by a bridge in the host's namespace as pods are by a node's network.
//! Everything made here is removed when its owner is dropped, pass or fail.

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;

use nix::sched::{CloneFlags, setns};

/// Why tests needing root cannot run here, if they cannot: not root, or a
/// tool missing.
pub fn cannot_run_as_root() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root for network namespaces and iptables".into());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for tool in [
        "ip",
        "iptables",
        "iptables-save",
        "iptables-restore",
        "setpriv",
        "bash",
        "timeout",
    ] {
        if !std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()) {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

/// Returns from the test, saying why, when it cannot run as root here.
#[macro_export]
macro_rules! require_root {
    () => {
        if let Some(reason) = $crate::netns::cannot_run_as_root() {
            eprintln!("skipping: {reason}");
            return;
        }
    };
}

/// Runs `program` and insists that it succeeds.
pub fn run(program: &str, args: &[&str]) -> Output {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("running {program}: {error}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A short name no other test of this run (or a concurrent run) uses.
fn unique_suffix() -> String {
    static CREATED: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}{}",
        std::process::id() % 100_000,
        CREATED.fetch_add(1, Ordering::Relaxed)
    )
}

/// A network namespace of its own with loopback up, deleted (with its
/// interfaces and rules) when dropped.
pub struct NetNs {
    name: String,
}

impl NetNs {
    pub fn new(role: &str) -> NetNs {
        let name = format!("trm{}-{role}", unique_suffix());
        run("ip", &["netns", "add", &name]);
        let ns = NetNs { name };
        // Redirected connections arrive over loopback.
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n <namespace> <args>`, which must succeed.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run("ip", &all);
    }

    /// A command that runs `program` inside the namespace (`ip netns exec`
    /// execs it, so the child's pid is the program's).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// Runs `program` inside the namespace to completion.
    pub fn exec(&self, program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Output {
        self.command(program)
            .args(args)
            .output()
            .expect("running ip netns exec")
    }

    /// Runs `work` on a thread that has entered this namespace; sockets it
    /// opens and processes it starts belong to the namespace.
    pub fn enter<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> T {
        enter(&self.name, work)
    }
}

/// [`NetNs::enter`] by the namespace's name, for holders of just the name.
pub fn enter<T: Send + 'static>(name: &str, work: impl FnOnce() -> T + Send + 'static) -> T {
    let path = Path::new("/run/netns").join(name);
    thread::spawn(move || {
        let ns = File::open(&path).expect("opening the namespace");
        setns(&ns, CloneFlags::CLONE_NEWNET).expect("entering the namespace");
        work()
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let deleted = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        if !matches!(deleted, Ok(status) if status.success()) {
            eprintln!("could not delete network namespace {}", self.name);
        }
    }
}

/// Pods on one node: a namespace per pod with an `eth0` in one /24, its
/// default route via a bridge in the host's namespace, where the control
/// plane listens on [`PodNetwork::gateway`].
pub struct PodNetwork {
    bridge: String,
    subnet: [u8; 3],
    pods: Vec<(String, NetNs, Ipv4Addr)>,
    /// Binaries copied where a non-root pod user can run them.
    bin_dir: tempfile::TempDir,
}

impl PodNetwork {
    /// One namespace per name in `pods`, addressed .10, .11, ... in order.
    pub fn create(pods: &[&str]) -> PodNetwork {
        let suffix = unique_suffix();
        let bridge = format!("trm{suffix}br");
        // 10.234.x.0/24, x from the suffix, so concurrent runs do not meet.
        let subnet = [10, 234, (suffix.parse::<u32>().unwrap_or(0) % 250) as u8];
        let bin_dir = tempfile::Builder::new()
            .prefix("trireme-pod-bin")
            .tempdir()
            .expect("a temp dir");
        set_mode(bin_dir.path(), 0o755);
        let mut network = PodNetwork {
            bridge,
            subnet,
            pods: Vec::new(),
            bin_dir,
        };
        network.add_bridge();
        for (index, name) in pods.iter().enumerate() {
            network.add_pod(name, 10 + index as u8);
        }
        network
    }

    fn add_bridge(&self) {
        let gateway = format!("{}/24", self.gateway());
        run("ip", &["link", "add", &self.bridge, "type", "bridge"]);
        run("ip", &["addr", "add", &gateway, "dev", &self.bridge]);
        run("ip", &["link", "set", &self.bridge, "up"]);
        // With br_netfilter loaded, bridged frames cross the host's FORWARD
        // chain, whose policy may be DROP (Docker sets it so).
        run("iptables", &self.forward_rule("-I"));
    }

    fn forward_rule<'a>(&'a self, action: &'a str) -> [&'a str; 8] {
        [
            action,
            "FORWARD",
            "-i",
            &self.bridge,
            "-o",
            &self.bridge,
            "-j",
            "ACCEPT",
        ]
    }

    fn add_pod(&mut self, name: &str, host: u8) {
        let ns = NetNs::new(name);
        let ip = self.address(host);
        let host_side = format!("{}v{host}", self.bridge.trim_end_matches("br"));
        run(
            "ip",
            &[
                "link",
                "add",
                &host_side,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns.name(),
            ],
        );
        run("ip", &["link", "set", &host_side, "master", &self.bridge]);
        run("ip", &["link", "set", &host_side, "up"]);
        ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        ns.ip(&["link", "set", "eth0", "up"]);
        ns.ip(&[
            "route",
            "add",
            "default",
            "via",
            &self.gateway().to_string(),
        ]);
        self.pods.push((name.to_owned(), ns, ip));
    }

    fn address(&self, host: u8) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, host)
    }

    /// The bridge's address: the node, where the control plane listens.
    pub fn gateway(&self) -> Ipv4Addr {
        self.address(1)
    }

    pub fn pod(&self, name: &str) -> &NetNs {
        &self.entry(name).1
    }

    pub fn ip(&self, name: &str) -> Ipv4Addr {
        self.entry(name).2
    }

    fn entry(&self, name: &str) -> &(String, NetNs, Ipv4Addr) {
        self.pods
            .iter()
            .find(|(pod, _, _)| pod == name)
            .unwrap_or_else(|| panic!("no pod {name} in this network"))
    }

    /// `binary`, linked (or copied) into a directory any user may read, so
    /// a pod's non-root proxy user can run it wherever the checkout lives.
    pub fn runnable_by_anyone(&self, binary: &Path) -> PathBuf {
        // Link the file itself: a link to a symlink would still lead back.
        let binary = &binary
            .canonicalize()
            .unwrap_or_else(|error| panic!("{}: {error}", binary.display()));
        let name = binary.file_name().expect("a binary's file name");
        let target = self.bin_dir.path().join(name);
        if !target.exists() && std::fs::hard_link(binary, &target).is_err() {
            std::fs::copy(binary, &target)
                .unwrap_or_else(|error| panic!("copying {}: {error}", binary.display()));
        }
        set_mode(&target, 0o755);
        target
    }
}

impl Drop for PodNetwork {
    fn drop(&mut self) {
        // Deleting a namespace deletes its veth pair.
        self.pods.clear();
        let _ = Command::new("iptables")
            .args(self.forward_rule("-D"))
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

/// chmod, for directories and files a pod's non-root user must reach.
pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|error| panic!("chmod {}: {error}", path.display()));
}
