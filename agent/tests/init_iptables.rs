//! `agent init` against the real iptables, in throwaway network namespaces.
//!
//! Most tests need root (network namespaces, iptables, switching uid). When
//! not root, or when a tool they use (`ip`, `iptables-save`, `bash`, ...) is
//! missing, they print why and pass without checking anything.
//! This machine and CI run as root, so there they run.

use std::{
    io::{ErrorKind, Read},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream},
    os::unix::process::CommandExt,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use integration_tests::netns::{NetNs, cannot_run_as_root, run};
use integration_tests::require_root;
use nix::sys::socket::{getsockopt, sockopt};

const AGENT: &str = env!("CARGO_BIN_EXE_agent");
const PROXY_UID: u32 = 1337;
/// Any uid but the proxy's: the app.
const APP_UID: u32 = 4242;
const POD_IP: Ipv4Addr = Ipv4Addr::new(10, 9, 9, 1);
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 9, 9, 9);
/// Long enough for a loaded CI machine; a connection that should arrive
/// arrives in milliseconds.
const ARRIVAL: Duration = Duration::from_secs(5);

/// What the capture tests do inside a namespace.
trait CaptureChecks {
    fn init(&self, args: &[&str]);
    fn nat(&self) -> String;
    fn listen(&self, addr: SocketAddrV4) -> TcpListener;
    fn connect_as(&self, uid: u32, gid: u32, to: SocketAddrV4, tag: &'static str) -> bool;
}

impl CaptureChecks for NetNs {
    /// Runs `agent init` inside the namespace and insists that it succeeds.
    fn init(&self, args: &[&str]) {
        let mut all = vec!["init"];
        all.extend_from_slice(args);
        let output = self.exec(AGENT, &all);
        assert!(
            output.status.success(),
            "agent {all:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The nat table without what changes from one save to the next (the
    /// timestamp comments and packet counters).
    fn nat(&self) -> String {
        let output = self.exec("iptables-save", &["-t", "nat"]);
        assert!(output.status.success(), "iptables-save failed");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|line| !line.starts_with('#'))
            .map(|line| match (line.starts_with(':'), line.rfind(" [")) {
                (true, Some(counters)) => &line[..counters],
                _ => line,
            })
            .map(|line| format!("{line}\n"))
            .collect()
    }

    fn listen(&self, addr: SocketAddrV4) -> TcpListener {
        let listener = self
            .enter(move || TcpListener::bind(addr))
            .unwrap_or_else(|error| panic!("listening on {addr}: {error}"));
        listener.set_nonblocking(true).unwrap();
        listener
    }

    /// Connects to `to` as a process of `uid` and `gid`, sends `tag`, and
    /// hangs up. False when it could not connect.
    fn connect_as(&self, uid: u32, gid: u32, to: SocketAddrV4, tag: &'static str) -> bool {
        self.enter(move || {
            Command::new("timeout")
                .args([
                    "5",
                    "bash",
                    "-c",
                    r#"exec 3<>"/dev/tcp/$0/$1" && printf %s "$2" >&3"#,
                ])
                .args([to.ip().to_string(), to.port().to_string(), tag.to_string()])
                .uid(uid)
                .gid(gid)
                .status()
                .expect("starting bash")
                .success()
        })
    }
}

/// A pod and a server machine joined by a veth pair: 10.9.9.1 and 10.9.9.9.
fn pod_and_server() -> (NetNs, NetNs) {
    let pod = NetNs::new("init");
    let server = NetNs::new("init");
    run(
        "ip",
        &[
            "link",
            "add",
            "eth0",
            "netns",
            pod.name(),
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            server.name(),
        ],
    );
    for (ns, addr) in [(&pod, "10.9.9.1/24"), (&server, "10.9.9.9/24")] {
        ns.ip(&["addr", "add", addr, "dev", "eth0"]);
        ns.ip(&["link", "set", "eth0", "up"]);
    }
    (pod, server)
}

/// The next connection `listener` has or gets within `limit`.
fn accept_within(listener: &TcpListener, limit: Duration) -> Option<TcpStream> {
    let deadline = Instant::now() + limit;
    loop {
        match listener.accept() {
            Ok((stream, _)) => return Some(stream),
            Err(error) if error.kind() == ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return None;
                }
                thread::sleep(Duration::from_millis(20));
            }
            Err(error) => panic!("accept: {error}"),
        }
    }
}

/// What the client sent before hanging up.
fn read_tag(mut stream: TcpStream) -> String {
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(ARRIVAL)).unwrap();
    let mut tag = String::new();
    stream.read_to_string(&mut tag).expect("reading the tag");
    tag
}

/// Where the client was headed before REDIRECT rewrote the destination,
/// which is what Envoy's original-destination listener reads.
fn original_destination(stream: &TcpStream) -> SocketAddrV4 {
    let addr = getsockopt(stream, sockopt::OriginalDst).expect("SO_ORIGINAL_DST");
    SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr)),
        u16::from_be(addr.sin_port),
    )
}

/// The rules of one chain, in order.
fn chain<'a>(table: &'a str, name: &str) -> Vec<&'a str> {
    let prefix = format!("-A {name} ");
    table
        .lines()
        .filter(|line| line.starts_with(&prefix))
        .collect()
}

fn dry_run(args: &[&str]) -> String {
    let output = Command::new(AGENT)
        .args(["init", "--dry-run"])
        .args(args)
        .output()
        .expect("running agent");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn installs_what_dry_run_shows_the_same_way_twice_and_cleans_up() {
    require_root!();
    let pod = NetNs::new("init");
    // Somebody else's rule, which init must leave alone.
    let foreign = "-A OUTPUT -d 192.0.2.1/32 -j RETURN";
    let output = pod.exec(
        "iptables",
        &[
            "-t",
            "nat",
            "-A",
            "OUTPUT",
            "-d",
            "192.0.2.1/32",
            "-j",
            "RETURN",
        ],
    );
    assert!(output.status.success());

    let flags = [
        "--exclude-inbound-ports=22",
        "--exclude-outbound-ip-ranges=169.254.169.254/32",
        "--exclude-outbound-ports=3306",
    ];
    pod.init(&flags);
    let installed = pod.nat();
    let planned = dry_run(&flags);
    for name in [
        "ISTIO_INBOUND",
        "ISTIO_IN_REDIRECT",
        "ISTIO_OUTPUT",
        "ISTIO_REDIRECT",
        "PREROUTING",
    ] {
        assert!(!chain(&planned, name).is_empty(), "{name} planned empty");
        assert_eq!(chain(&installed, name), chain(&planned, name), "{name}");
    }
    let mut output_chain = vec![foreign];
    output_chain.extend(chain(&planned, "OUTPUT"));
    assert_eq!(chain(&installed, "OUTPUT"), output_chain);

    pod.init(&flags);
    assert_eq!(pod.nat(), installed, "a second run changed the rules");

    // New flags replace the capture rather than adding to it.
    pod.init(&["--inbound-ports=9080"]);
    let replaced = pod.nat();
    assert_eq!(
        chain(&replaced, "PREROUTING"),
        ["-A PREROUTING -p tcp -j ISTIO_INBOUND"]
    );
    assert_eq!(
        chain(&replaced, "OUTPUT"),
        [foreign, "-A OUTPUT -p tcp -j ISTIO_OUTPUT"]
    );
    assert!(replaced.contains("-A ISTIO_INBOUND -p tcp -m tcp --dport 9080 -j ISTIO_IN_REDIRECT"));
    assert!(!replaced.contains("169.254.169.254"), "{replaced}");

    pod.init(&["--cleanup"]);
    let cleaned = pod.nat();
    assert!(!cleaned.contains("ISTIO_"), "{cleaned}");
    assert_eq!(chain(&cleaned, "OUTPUT"), [foreign]);
    assert!(chain(&cleaned, "PREROUTING").is_empty());

    // Nothing installed: cleanup still succeeds and changes nothing.
    pod.init(&["--cleanup"]);
    assert_eq!(pod.nat(), cleaned);
}

#[test]
fn dry_run_needs_no_privileges_and_changes_nothing() {
    let expect_plan = |stdout: &[u8]| {
        let plan = String::from_utf8_lossy(stdout);
        assert!(plan.contains("*nat\n:ISTIO_INBOUND - [0:0]\n"), "{plan}");
        assert!(
            plan.contains("-A OUTPUT -p tcp -j ISTIO_OUTPUT\n"),
            "{plan}"
        );
        assert!(plan.ends_with("COMMIT\n"), "{plan}");
    };
    if cannot_run_as_root().is_some() {
        // Already unprivileged: running it at all is the test.
        expect_plan(dry_run(&[]).as_bytes());
        return;
    }
    let pod = NetNs::new("init");
    let before = pod.nat();
    let output = pod.enter(|| {
        Command::new(AGENT)
            .args(["init", "--dry-run"])
            .uid(65534)
            .gid(65534)
            .output()
            .expect("running agent as nobody")
    });
    assert!(output.status.success(), "{output:?}");
    expect_plan(&output.stdout);
    assert_eq!(pod.nat(), before);
}

#[test]
fn bad_values_are_refused_naming_flag_and_value() {
    for (flag, value) in [
        ("--exclude-outbound-ip-ranges", "10.0.0.0/33"),
        ("--outbound-ip-ranges", "10.0.0/8"),
        ("--inbound-ports", "80,http"),
        ("--exclude-outbound-ports", "65536"),
    ] {
        let output = Command::new(AGENT)
            .args(["init", "--dry-run", flag, value])
            .output()
            .expect("running agent");
        assert!(!output.status.success(), "{flag} {value} was accepted");
        assert!(output.stdout.is_empty(), "printed rules despite the error");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(flag) && stderr.contains(value),
            "{flag} {value}: {stderr}"
        );
    }
}

#[test]
fn outbound_connections_reach_the_proxy_unless_the_proxy_makes_them() {
    require_root!();
    let (pod, server) = pod_and_server();
    pod.init(&[]);
    // Stands in for Envoy's outbound listener: it only accepts.
    let proxy_outbound = pod.listen(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 15001));
    let web = server.listen(SocketAddrV4::new(SERVER_IP, 80));
    let target = SocketAddrV4::new(SERVER_IP, 80);

    assert!(pod.connect_as(APP_UID, APP_UID, target, "app"));
    let captured = accept_within(&proxy_outbound, ARRIVAL).expect("the app was not captured");
    assert_eq!(original_destination(&captured), target);
    assert_eq!(read_tag(captured), "app");
    assert!(
        accept_within(&web, Duration::ZERO).is_none(),
        "the app bypassed the proxy"
    );

    // The proxy's own connections must go out as they are, or they would
    // loop back into it; by uid and by gid alike.
    for (uid, gid, tag) in [
        (PROXY_UID, PROXY_UID, "proxy"),
        (APP_UID, PROXY_UID, "proxy group"),
    ] {
        assert!(
            pod.connect_as(uid, gid, target, tag),
            "{tag} could not connect"
        );
        let direct = accept_within(&web, ARRIVAL)
            .unwrap_or_else(|| panic!("{tag} did not reach the server"));
        assert_eq!(read_tag(direct), tag);
        assert!(
            accept_within(&proxy_outbound, Duration::ZERO).is_none(),
            "{tag} was captured"
        );
    }

    // An excluded range is reached directly by the app too.
    pod.init(&["--exclude-outbound-ip-ranges=10.9.9.9/32"]);
    assert!(pod.connect_as(APP_UID, APP_UID, target, "excluded"));
    let direct = accept_within(&web, ARRIVAL).expect("excluded range did not bypass the proxy");
    assert_eq!(read_tag(direct), "excluded");
    assert!(accept_within(&proxy_outbound, Duration::ZERO).is_none());
}

#[test]
fn inbound_connections_reach_the_proxy_except_on_its_own_ports() {
    require_root!();
    let (pod, server) = pod_and_server();
    pod.init(&[]);
    let any = |port| SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port);
    // Stands in for Envoy's inbound listener.
    let proxy_inbound = pod.listen(any(15006));
    let app = pod.listen(any(8080));
    let health = pod.listen(any(15021));
    let app_port = SocketAddrV4::new(POD_IP, 8080);

    assert!(server.connect_as(0, 0, app_port, "client"));
    let captured = accept_within(&proxy_inbound, ARRIVAL).expect("inbound was not captured");
    assert_eq!(original_destination(&captured), app_port);
    assert_eq!(read_tag(captured), "client");
    assert!(accept_within(&app, Duration::ZERO).is_none());

    // Kubelet's probe of the proxy's health port goes straight to it.
    assert!(server.connect_as(0, 0, SocketAddrV4::new(POD_IP, 15021), "kubelet"));
    let probe = accept_within(&health, ARRIVAL).expect("health port was captured");
    assert_eq!(read_tag(probe), "kubelet");
    assert!(accept_within(&proxy_inbound, Duration::ZERO).is_none());

    // The proxy calling its own pod IP (a Service that resolved to this very
    // pod) passes the inbound side of the proxy as any caller would...
    assert!(pod.connect_as(PROXY_UID, PROXY_UID, app_port, "via service"));
    let looped = accept_within(&proxy_inbound, ARRIVAL).expect("proxy-to-self was not captured");
    assert_eq!(original_destination(&looped), app_port);
    assert_eq!(read_tag(looped), "via service");

    // ...while the app talking to itself on its pod IP is left alone.
    assert!(pod.connect_as(APP_UID, APP_UID, app_port, "self"));
    let direct = accept_within(&app, ARRIVAL).expect("app-to-self did not reach the app");
    assert_eq!(read_tag(direct), "self");
    assert!(accept_within(&proxy_inbound, Duration::ZERO).is_none());
}
