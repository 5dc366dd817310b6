//! The injector's output really runs (needs root; skipped otherwise).
//! Bookinfo's productpage and reviews Deployments go through `trireme
//! kube-inject`'s library with an injector config as an operator would
//! write it for this node (citadel's and pilot's addresses); each injected
//! pod then runs from its spec alone, in a network namespace of its own on
//! a bridge: `istio-init`'s args as root with its capabilities, then
//! `istio-proxy`'s args and environment (downward-API fields resolved from
//! the pod's facts) as the container's user, its volume mounts laid out
//! under a directory standing in for its filesystem. Both pods must become
//! ready on 15021, reviews' rewritten readiness probe must follow its app,
//! and productpage's plain HTTP to the reviews service must arrive over
//! mTLS with productpage's identity.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use injector::workloads::{self, Rewritten};
use injector::{Injector, InjectorConfig, SidecarTemplate};
use integration_tests::agent::Agent;
use integration_tests::backend::Backend;
use integration_tests::config_dir::ConfigDir;
use integration_tests::http_client::HttpRequest;
use integration_tests::injected_pod::{self, PodFacts, VolumeSources};
use integration_tests::netns::{self, PodNetwork};
use integration_tests::pilot::Pilot;
use integration_tests::workload::CaFixture;
use integration_tests::{binary, eventually, free_port, require_root, tool};
use serde_json::Value;

const NAMESPACE: &str = "bookinfo";
const NODE: &str = "node-1";
const APP_PORT: u16 = 9080;
const REVIEWS_HOST: &str = "reviews.bookinfo.svc.cluster.local";
/// The reviews Service's cluster IP, what productpage dials.
const REVIEWS_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 20);
const REQUESTS: usize = 200;
/// The name in citadel's serving certificate that a cluster's CA_ADDR
/// (`citadel.istio-system.svc:15012`) carries.
const CITADEL_NAME: &str = "citadel.istio-system.svc";

/// Bookinfo's productpage (the caller) and reviews (with a readiness probe
/// on its named app port), in a namespace labelled for injection.
const WORKLOADS: &str = r#"apiVersion: v1
kind: Namespace
metadata:
  name: bookinfo
  labels:
    istio-injection: enabled
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: productpage-v1
  namespace: bookinfo
  labels: {app: productpage, version: v1}
spec:
  replicas: 1
  selector:
    matchLabels: {app: productpage, version: v1}
  template:
    metadata:
      labels: {app: productpage, version: v1}
    spec:
      serviceAccountName: bookinfo-productpage
      containers:
      - name: productpage
        image: docker.io/istio/examples-bookinfo-productpage-v1:1.20.2
        ports:
        - containerPort: 9080
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: reviews-v1
  namespace: bookinfo
  labels: {app: reviews, version: v1}
spec:
  replicas: 1
  selector:
    matchLabels: {app: reviews, version: v1}
  template:
    metadata:
      labels: {app: reviews, version: v1}
    spec:
      serviceAccountName: bookinfo-reviews
      containers:
      - name: reviews
        image: docker.io/istio/examples-bookinfo-reviews-v1:1.20.2
        ports:
        - name: http
          containerPort: 9080
        readinessProbe:
          httpGet: {path: /ready, port: http}
          periodSeconds: 2
"#;

/// The injector's config for this node: citadel and pilot listen on the
/// bridge (the node's address); pilot's xDS is plain text here, as in the
/// other capture tests.
fn injector_config(citadel: SocketAddr, pilot_xds: SocketAddr) -> String {
    format!(
        r#"values:
  global:
    caAddress: "{citadel}"
meshConfig:
  trustDomain: cluster.local
  defaultConfig:
    discoveryAddress: "{pilot_xds}"
    controlPlaneAuthPolicy: NONE
"#
    )
}

/// The reviews service (what Kubernetes would give pilot: a VIP and the
/// pod's endpoint), STRICT mTLS in the namespace.
fn mesh_yaml(reviews_ip: Ipv4Addr) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{ name: reviews, namespace: {NAMESPACE} }}
spec:
  hosts: [{REVIEWS_HOST}]
  addresses: [{REVIEWS_VIP}]
  location: MESH_INTERNAL
  ports:
  - {{ number: {APP_PORT}, name: http, protocol: HTTP, targetPort: {APP_PORT} }}
  resolution: STATIC
  workloadSelector: {{ labels: {{ app: reviews }} }}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{ name: reviews-v1, namespace: {NAMESPACE} }}
spec:
  address: {reviews_ip}
  serviceAccount: bookinfo-reviews
  labels: {{ app: reviews, version: v1, security.istio.io/tlsMode: istio }}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{ name: default, namespace: {NAMESPACE} }}
spec:
  mtls: {{ mode: STRICT }}
"#
    )
}

/// The pod template of Deployment `name` in the rewritten stream.
fn pod_template(rewritten: &Rewritten, name: &str) -> Value {
    rewritten
        .yaml
        .split("\n---\n")
        .map(|document| serde_yaml_ng::from_str::<Value>(document).expect("kube-inject wrote YAML"))
        .find(|object| object["kind"] == "Deployment" && object["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no Deployment {name} in:\n{}", rewritten.yaml))["spec"]["template"]
        .clone()
}

/// GET `path` from `addr` (from the host, as the kubelet probes a pod, or
/// inside `netns`): the status, or the error.
fn get(netns: Option<&str>, addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let path = path.to_owned();
    let request = move || {
        HttpRequest::get(&path)
            .timeout(Duration::from_secs(5))
            .send(addr)
            .map(|response| (response.status, response.body))
            .map_err(|error| error.to_string())
    };
    match netns {
        Some(netns) => netns::enter(netns, request),
        None => request(),
    }
}

/// `/proc/<pid>/status` as a map.
fn proc_status(pid: i32) -> BTreeMap<String, String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|error| panic!("reading /proc/{pid}/status: {error}"))
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.to_owned(), value.trim().to_owned()))
        .collect()
}

/// Asserts that process `pid` (`what`) runs as `uid`/`gid` with no
/// supplementary groups, no effective capabilities and no_new_privs, as
/// the proxy container's securityContext says.
fn assert_runs_as(what: &str, pid: i32, uid: u32, gid: u32) {
    let status = proc_status(pid);
    let all = |key: &str, id: u32| {
        status[key]
            .split_whitespace()
            .all(|value| value == id.to_string())
    };
    assert!(
        all("Uid", uid) && all("Gid", gid),
        "{what} (pid {pid}) runs as uid {} gid {}",
        status["Uid"],
        status["Gid"]
    );
    assert_eq!(status["Groups"], "", "{what}'s supplementary groups");
    assert_eq!(
        status["CapEff"], "0000000000000000",
        "{what}'s capabilities"
    );
    assert_eq!(status["NoNewPrivs"], "1", "{what}'s no_new_privs");
}

fn borrowed<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect()
}

/// Asserts that process `pid` was started as `agent` with exactly `args`
/// and exactly the environment `env`.
fn assert_started_with(
    what: &str,
    pid: i32,
    agent: &Path,
    args: &[String],
    env: &[(String, String)],
) {
    let split = |file: &str| -> Vec<String> {
        let bytes = std::fs::read(format!("/proc/{pid}/{file}")).unwrap();
        bytes
            .split(|byte| *byte == 0)
            .filter(|part| !part.is_empty())
            .map(|part| String::from_utf8_lossy(part).into_owned())
            .collect()
    };
    let mut expected = vec![agent.to_string_lossy().into_owned()];
    expected.extend_from_slice(args);
    assert_eq!(split("cmdline"), expected, "{what}'s command line");
    let environ: BTreeMap<String, String> = split("environ")
        .into_iter()
        .filter_map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect();
    let expected: BTreeMap<String, String> = env.iter().cloned().collect();
    assert_eq!(environ, expected, "{what}'s environment");
}

/// One injected pod: its spec, facts and running sidecar.
struct Pod {
    spec: Value,
    facts: PodFacts,
    /// What this node adds to the proxy container's environment.
    runtime_env: Vec<(&'static str, String)>,
    agent: Agent,
}

#[test]
fn injected_pods_run_from_their_spec_become_ready_and_serve_mtls() {
    require_root!();
    let started = Instant::now();
    // Locals drop in reverse: processes before the namespaces they live in.
    let network = PodNetwork::create(&["productpage", "reviews"]);
    let node_ip = network.gateway();
    let config = ConfigDir::new();
    config.write("mesh.yaml", &mesh_yaml(network.ip("reviews")));
    let pilot = Pilot::start_on(
        config.path(),
        (node_ip, free_port()).into(),
        (node_ip, free_port()).into(),
    );
    let ca = CaFixture::start_on(node_ip.into(), NAMESPACE, "bookinfo-productpage");

    // 1. Injection, as `trireme kube-inject` does it.
    let injector_config =
        InjectorConfig::from_yaml(&injector_config(ca.citadel.grpc_addr, pilot.xds_addr))
            .expect("the injector config reads");
    let injector = Injector::new(injector_config, SidecarTemplate::built_in());
    let rewritten = workloads::rewrite(&injector, WORKLOADS, NAMESPACE).expect("injection");
    for report in &rewritten.reports {
        assert!(report.injected, "not injected: {report:?}");
    }
    assert_eq!(rewritten.reports.len(), 2, "{:?}", rewritten.reports);

    // 2. Each pod run from its spec.
    let envoy = network.runnable_by_anyone(&tool("ENVOY_BIN", "envoy"));
    let envoy = envoy.to_string_lossy().into_owned();
    let roots = tempfile::tempdir().unwrap();
    let mut pods: BTreeMap<&str, Pod> = [
        (
            "productpage",
            "productpage-v1",
            "productpage-v1-6b746f74dc-x7k2p",
        ),
        ("reviews", "reviews-v1", "reviews-v1-5b5d6494f4-q8lzn"),
    ]
    .into_iter()
    .map(|(pod, deployment, pod_name)| {
        let spec = pod_template(&rewritten, deployment);
        let ip = network.ip(pod).to_string();
        let facts = PodFacts::of(&spec, pod_name, NAMESPACE, &ip, &node_ip.to_string(), NODE);
        let volumes = VolumeSources {
            tokens: [(
                "istio-ca".to_owned(),
                ca.issuer.token(NAMESPACE, &facts.service_account),
            )]
            .into(),
            config_maps: [(
                "istio-ca-root-cert".to_owned(),
                [("root-cert.pem".to_owned(), ca.citadel.root_cert_pem())].into(),
            )]
            .into(),
        };
        let root = roots.path().join(pod);
        // What this node provides differently from a real one:
        let runtime_env = vec![
            // The image has envoy on PATH; here it is the test's Envoy.
            ("ENVOY_BIN", envoy.clone()),
            // The container's filesystem (with the volume mounts) is a
            // directory of the host's.
            (
                "TRIREME_AGENT_ROOT_DIR",
                root.to_string_lossy().into_owned(),
            ),
            // CA_ADDR is citadel's IP on the node here; in a cluster it is
            // citadel's Service name (citadel.istio-system.svc:15012),
            // which citadel's serving certificate carries. That certificate
            // names no IP (only the Service and `localhost`), and nothing
            // resolves the Service name inside the pod's namespace, so the
            // agent is told the name to verify.
            ("TRIREME_CA_SERVER_NAME", CITADEL_NAME.to_owned()),
        ];
        let agent = Agent::start_injected(
            &network,
            pod,
            &spec,
            &facts,
            &root,
            &volumes,
            &borrowed(&runtime_env),
        );
        (
            pod,
            Pod {
                spec,
                facts,
                runtime_env,
                agent,
            },
        )
    })
    .collect();

    // 3. Ready on the proxy's readiness probe: inside the pod, and from
    // the node at the pod's IP as the kubelet probes it.
    let ready_by = Instant::now() + Duration::from_secs(30);
    for (name, pod) in pods.iter_mut() {
        let proxy = injected_pod::container(&pod.spec, "containers", "istio-proxy");
        let (port, path) = injected_pod::http_probe(proxy, "readinessProbe");
        assert_eq!((port, path.as_str()), (15021, "/healthz/ready"));
        pod.agent
            .wait_ready(ready_by.saturating_duration_since(Instant::now()));
        let pod_ip: Ipv4Addr = pod.facts.pod_ip.parse().unwrap();
        let answer = get(None, (pod_ip, port).into(), &path);
        assert!(
            matches!(answer, Ok((200, _))),
            "the kubelet's readiness probe of {name}: {answer:?}"
        );
        eprintln!("{name} ready after {:?}", started.elapsed());
    }
    let reviews_ip = network.ip("reviews");

    // The rewritten app probe follows the app: failing before it listens,
    // 200 once it does.
    let reviews = &pods["reviews"];
    let app = injected_pod::container(&reviews.spec, "containers", "reviews");
    let (probe_port, probe_path) = injected_pod::http_probe(app, "readinessProbe");
    assert_eq!(
        (probe_port, probe_path.as_str()),
        (15020, "/app-health/reviews/readyz")
    );
    let probe = (reviews_ip, probe_port).into();
    let before = get(None, probe, &probe_path);
    assert!(
        !matches!(before, Ok((200, _))),
        "the app probe succeeded before the app listened: {before:?}"
    );
    let reviews_app =
        Backend::start_in_netns("reviews-v1", network.pod("reviews").name(), APP_PORT);
    eventually(
        "reviews' rewritten readiness probe to pass",
        Duration::from_secs(10),
        || matches!(get(None, probe, &probe_path), Ok((200, _))).then_some(()),
    );
    assert!(
        reviews_app
            .requests()
            .iter()
            .any(|request| request.path == "/ready"),
        "the agent ran the original probe (GET /ready) against the app"
    );

    // 4. productpage's plain HTTP to the reviews service, through both
    // sidecars.
    let productpage_ns = network.pod("productpage").name().to_owned();
    let service: SocketAddr = (REVIEWS_VIP, APP_PORT).into();
    eventually(
        "a first answer through both sidecars",
        Duration::from_secs(15),
        || matches!(get(Some(&productpage_ns), service, "/"), Ok((200, _))).then_some(()),
    );
    let failures: Vec<String> = (0..REQUESTS)
        .filter_map(|_| match get(Some(&productpage_ns), service, "/") {
            Ok((200, body)) if body == "reviews-v1" => None,
            other => Some(format!("{other:?}")),
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {REQUESTS} requests failed, e.g. {:?}",
        failures.len(),
        failures.first()
    );
    let served: Vec<_> = reviews_app
        .requests()
        .into_iter()
        .filter(|request| request.path == "/")
        .collect();
    assert!(
        served.len() > REQUESTS,
        "the app saw {} requests",
        served.len()
    );
    let caller = "URI=spiffe://cluster.local/ns/bookinfo/sa/bookinfo-productpage";
    for request in &served {
        let xfcc = request
            .header("x-forwarded-client-cert")
            .unwrap_or_default();
        assert!(xfcc.contains(caller), "XFCC: {xfcc:?}");
    }
    // Under STRICT, plain text from outside the mesh is refused at
    // reviews' captured app port.
    let outsider = get(None, (reviews_ip, APP_PORT).into(), "/");
    assert!(
        !matches!(outsider, Ok((200, _))),
        "plain text from the node was served under STRICT: {outsider:?}"
    );

    // 5. The containers ran as their specs say.
    for (name, pod) in &pods {
        let proxy = injected_pod::container(&pod.spec, "containers", "istio-proxy");
        let context = injected_pod::SecurityContext::of(proxy);
        assert_eq!((context.uid, context.gid), (1337, 1337));
        let agent_pid = pod.agent.process.pid().as_raw();
        assert_runs_as(&format!("{name}'s agent"), agent_pid, 1337, 1337);
        let env = injected_pod::container_env(proxy, &pod.facts, &borrowed(&pod.runtime_env));
        assert_started_with(
            &format!("{name}'s agent"),
            agent_pid,
            &network.runnable_by_anyone(&binary("agent")),
            &injected_pod::args(proxy),
            &env,
        );
        // The downward API's fields, as the kubelet would resolve them.
        let value = |key: &str| {
            env.iter()
                .find(|(name, _)| name == key)
                .map(|(_, v)| v.as_str())
        };
        let facts = &pod.facts;
        assert_eq!(value("POD_NAME"), Some(facts.name.as_str()));
        assert_eq!(value("POD_NAMESPACE"), Some(NAMESPACE));
        assert_eq!(
            value("INSTANCE_IP"),
            Some(network.ip(name).to_string().as_str())
        );
        assert_eq!(
            value("SERVICE_ACCOUNT"),
            Some(format!("bookinfo-{name}").as_str())
        );
        assert_eq!(value("HOST_IP"), Some(node_ip.to_string().as_str()));
        assert_eq!(value("ISTIO_META_NODE_NAME"), Some(NODE));
        let envoy_pid = pod.agent.envoy_pid().expect("the agent's Envoy is running");
        assert_runs_as(&format!("{name}'s Envoy"), envoy_pid, 1337, 1337);

        let rules = network.pod(name).exec("iptables-save", &["-t", "nat"]);
        let rules = String::from_utf8_lossy(&rules.stdout);
        for expected in [
            ":ISTIO_INBOUND",
            ":ISTIO_IN_REDIRECT",
            ":ISTIO_OUTPUT",
            ":ISTIO_REDIRECT",
            "-A PREROUTING -p tcp -j ISTIO_INBOUND",
            "-A OUTPUT -p tcp -j ISTIO_OUTPUT",
            "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN",
            "-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN",
        ] {
            assert!(
                rules.contains(expected),
                "{name}: no {expected:?} in\n{rules}"
            );
        }
    }
    eprintln!(
        "{REQUESTS} requests productpage -> reviews over mTLS, 0 failed; {:?} in all",
        started.elapsed()
    );
}
