//! Real traffic through generated inbound config: a real Envoy serves a
//! NONE-mode sidecar's ingress listeners (STRICT on one port, PERMISSIVE on
//! another by `portLevelMtls`) in front of a small HTTP backend, and curl
//! calls it with and without a mesh client certificate. The certificates
//! the config names over SDS (`default`, `ROOTCA`) are given to Envoy as
//! static secrets of the same names, made with openssl. Skipped without
//! Envoy, openssl or curl.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pilot::model::{Proxy, ProxyType};
use pilot::translate::sidecar::inbound::{inbound_clusters, inbound_listeners};
use serde_json::{Value, json};
use support::{snapshot_from_yaml, to_json};

/// An HTTP/1.1 server that answers every request with the request's headers.
fn echo_backend() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = Vec::new();
            let mut buffer = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buffer[..n]),
                }
            }
            let body = String::from_utf8_lossy(&request).to_lowercase();
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
    });
    port
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn tool(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.exists())
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A mesh root and two workload certificates signed by it, with SPIFFE URI SANs.
fn mesh_certificates(dir: &Path) {
    let key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(
        dir,
        &[
            &["req", "-x509"][..],
            &key,
            &[
                "-days",
                "1",
                "-subj",
                "/O=cluster.local",
                "-keyout",
                "root.key",
                "-out",
                "root.pem",
            ],
        ]
        .concat(),
    );
    for (name, san) in [
        (
            "server",
            "URI:spiffe://cluster.local/ns/server/sa/server,IP:127.0.0.1",
        ),
        ("client", "URI:spiffe://cluster.local/ns/client/sa/client"),
    ] {
        let (key_file, csr, cert, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        std::fs::write(dir.join(&ext), format!("subjectAltName={san}\n")).unwrap();
        openssl(
            dir,
            &[
                &["req", "-new"][..],
                &key,
                &["-subj", "/", "-keyout", &key_file, "-out", &csr],
            ]
            .concat(),
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "root.pem",
                "-CAkey",
                "root.key",
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                &ext,
                "-out",
                &cert,
            ],
        );
    }
}

/// Points SDS references at the bootstrap's static secrets of the same name.
fn without_sds_sources(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("sdsConfig");
            map.values_mut().for_each(without_sds_sources);
        }
        Value::Array(items) => items.iter_mut().for_each(without_sds_sources),
        _ => {}
    }
}

struct Envoy(Child);

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sidecar() -> Proxy {
    Proxy {
        id: "sidecar~127.0.0.1~server-1.server~server.svc.cluster.local".into(),
        proxy_type: ProxyType::Sidecar,
        ip_addresses: vec!["127.0.0.1".into()],
        pod_id: "server-1.server".into(),
        namespace: "server".into(),
        dns_domain: "server.svc.cluster.local".into(),
        labels: [("app".to_string(), "server".to_string())].into(),
        cluster_id: String::new(),
        service_account: "server".into(),
        workload_name: "server".into(),
        interception_mode: "NONE".into(),
        istio_version: String::new(),
        mesh_id: String::new(),
    }
}

struct Curl<'a> {
    dir: &'a Path,
}

impl Curl<'_> {
    /// The response body, or `None` when curl could not get one.
    fn get(&self, url: &str, extra: &[&str]) -> Option<String> {
        let output = Command::new("curl")
            .args(["-sS", "--fail", "--max-time", "5"])
            .args(extra)
            .arg(url)
            .current_dir(self.dir)
            .output()
            .expect("curl runs");
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).to_string())
    }
}

#[test]
fn mesh_mtls_is_enforced_and_the_caller_identity_reaches_the_app() {
    let (Some(envoy), Some(_), Some(_)) = (support::envoy_binary(), tool("openssl"), tool("curl"))
    else {
        eprintln!("skipped: needs Envoy (ENVOY_BIN), openssl and curl");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    mesh_certificates(dir.path());
    let backend = echo_backend();
    let (strict, permissive) = (free_port(), free_port());
    let yaml = format!(
        "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: server, namespace: server}}
spec:
  workloadSelector: {{labels: {{app: server}}}}
  ingress:
  - port: {{number: {strict}, name: http, protocol: HTTP}}
    defaultEndpoint: 127.0.0.1:{backend}
  - port: {{number: {permissive}, name: http-open, protocol: HTTP}}
    defaultEndpoint: 127.0.0.1:{backend}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: server, namespace: server}}
spec:
  selector: {{matchLabels: {{app: server}}}}
  mtls: {{mode: STRICT}}
  portLevelMtls:
    {permissive}: {{mode: PERMISSIVE}}
"
    );
    let snapshot = snapshot_from_yaml(&yaml);
    let proxy = sidecar();
    let mut listeners: Value = inbound_listeners(&snapshot, &proxy)
        .iter()
        .map(to_json)
        .collect();
    without_sds_sources(&mut listeners);
    let clusters: Vec<Value> = inbound_clusters(&snapshot, &proxy)
        .iter()
        .map(to_json)
        .collect();
    let file = |name: &str| json!({"filename": dir.path().join(name)});
    let bootstrap = json!({
        "node": {"id": proxy.id, "cluster": "server.server"},
        "staticResources": {
            "listeners": listeners,
            "clusters": clusters,
            "secrets": [
                {"name": "default", "tlsCertificate": {
                    "certificateChain": file("server.pem"),
                    "privateKey": file("server.key")
                }},
                {"name": "ROOTCA", "validationContext": {"trustedCa": file("root.pem")}}
            ]
        }
    });
    let config = dir.path().join("envoy.json");
    std::fs::write(&config, serde_json::to_vec_pretty(&bootstrap).unwrap()).unwrap();
    let _envoy = Envoy(
        Command::new(&envoy)
            .args([
                "--disable-hot-restart",
                "--concurrency",
                "1",
                "-l",
                "warning",
                "-c",
            ])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("Envoy starts"),
    );

    let curl = Curl { dir: dir.path() };
    let plaintext_open = format!("http://127.0.0.1:{permissive}/");
    let deadline = Instant::now() + Duration::from_secs(20);
    while curl.get(&plaintext_open, &[]).is_none() {
        assert!(Instant::now() < deadline, "Envoy did not serve within 20 s");
        std::thread::sleep(Duration::from_millis(100));
    }

    let mesh_client = [
        "--cacert",
        "root.pem",
        "--cert",
        "client.pem",
        "--key",
        "client.key",
    ];
    let strict_url = format!("https://127.0.0.1:{strict}/");
    let seen = curl
        .get(&strict_url, &mesh_client)
        .expect("a mesh client is served on the STRICT port");
    assert!(
        seen.contains("x-forwarded-client-cert:")
            && seen.contains("uri=spiffe://cluster.local/ns/client/sa/client"),
        "the app sees the caller's SPIFFE id:\n{seen}"
    );
    assert_eq!(
        curl.get(&strict_url, &["--cacert", "root.pem"]),
        None,
        "TLS without a client certificate is refused"
    );
    assert_eq!(
        curl.get(&format!("http://127.0.0.1:{strict}/"), &[]),
        None,
        "plaintext is refused on the STRICT port"
    );

    let forged = curl
        .get(
            &plaintext_open,
            &[
                "-H",
                "x-forwarded-client-cert: URI=spiffe://cluster.local/ns/admin/sa/admin",
            ],
        )
        .expect("plaintext is served on the PERMISSIVE port");
    assert!(
        !forged.contains("x-forwarded-client-cert"),
        "a plaintext caller cannot claim an identity:\n{forged}"
    );
}
