//! Istio YAML, as an operator would write it, for the objects every gateway
//! test needs: a Gateway, and backends registered as a ServiceEntry plus
//! WorkloadEntries.

/// A Gateway `name` in `namespace` for pods labelled `istio: ingressgateway`,
/// serving plain HTTP for every host on `port`.
pub fn gateway(name: &str, namespace: &str, port: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: {name}
  namespace: {namespace}
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: {port}
      name: http
      protocol: HTTP
    hosts:
    - \"*\"
"
    )
}

/// A mesh-internal ServiceEntry for `host` with one HTTP port, whose
/// endpoints are the WorkloadEntries labelled `app: <app>`.
pub fn service_entry(name: &str, namespace: &str, host: &str, port: u16, app: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: {name}
  namespace: {namespace}
spec:
  hosts:
  - {host}
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - number: {port}
    name: http
    protocol: HTTP
  workloadSelector:
    labels:
      app: {app}
"
    )
}

/// A WorkloadEntry on 127.0.0.1 labelled `app: <app>, version: <version>`
/// whose `http` port is `port` (a backend's own port).
pub fn workload_entry(name: &str, namespace: &str, app: &str, version: &str, port: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: {name}
  namespace: {namespace}
spec:
  address: 127.0.0.1
  labels:
    app: {app}
    version: {version}
  ports:
    http: {port}
"
    )
}

/// Joins documents into one multi-document YAML file.
pub fn documents<S: AsRef<str>>(docs: &[S]) -> String {
    docs.iter()
        .map(|doc| doc.as_ref().trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n---\n")
        + "\n"
}
