use mesh_config::parse_all;

use super::*;
use crate::model::{ConfigSet, MeshSettings, ProxyType};

fn snapshot(yaml: &str) -> MeshSnapshot {
    snapshot_with(yaml, MeshSettings::default())
}

fn snapshot_with(yaml: &str, settings: MeshSettings) -> MeshSnapshot {
    let resources = parse_all("scope.yaml", yaml).expect("test config parses");
    let config = ConfigSet::from_resources(resources.into_iter().map(|r| r.resource));
    MeshSnapshot::from_config(config, settings)
}

fn sidecar(namespace: &str, labels: &[(&str, &str)]) -> Proxy {
    Proxy {
        id: format!("sidecar~10.1.0.5~app-1.{namespace}~{namespace}.svc.cluster.local"),
        proxy_type: ProxyType::Sidecar,
        ip_addresses: vec!["10.1.0.5".into()],
        pod_id: format!("app-1.{namespace}"),
        namespace: namespace.into(),
        dns_domain: format!("{namespace}.svc.cluster.local"),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        cluster_id: String::new(),
        service_account: String::new(),
        workload_name: String::new(),
        interception_mode: String::new(),
        istio_version: String::new(),
        mesh_id: String::new(),
    }
}

/// A MESH_INTERNAL service `<name>.<namespace>.svc.cluster.local` on port 80.
fn service(name: &str, namespace: &str, export_to: &str) -> String {
    format!(
        "---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  hosts: [{name}.{namespace}.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http}}]
  exportTo: [{export_to}]
"
    )
}

fn hostnames(scope: &ProxyScope, snapshot: &MeshSnapshot) -> Vec<String> {
    scope
        .services(snapshot)
        .map(|s| s.hostname.clone())
        .collect()
}

#[test]
fn egress_hosts_read_namespace_and_name() {
    let parse = |h| EgressHost::parse(h, "app");
    let own = parse("./*").unwrap();
    assert!(own.matches("app", "a.app.svc.cluster.local"));
    assert!(!own.matches("other", "a.other.svc.cluster.local"));
    let any = parse("*/api.example.com").unwrap();
    assert!(any.matches("ext", "api.example.com"));
    assert!(!any.matches("ext", "www.example.com"));
    let named = parse("istio-system/*.svc.cluster.local").unwrap();
    assert!(named.matches("istio-system", "istiod.istio-system.svc.cluster.local"));
    assert!(!named.matches("app", "a.app.svc.cluster.local"));
    let nothing = parse("~/*").unwrap();
    assert!(!nothing.matches("app", "a.app.svc.cluster.local"));
    assert!(
        parse("api.example.com").is_none(),
        "a namespace is required"
    );
    assert!(parse("ns/").is_none());
}

#[test]
fn wildcard_hosts_intersect_both_ways() {
    assert!(hosts_intersect("*", "a.example.com"));
    assert!(hosts_intersect("*.example.com", "a.example.com"));
    assert!(hosts_intersect("a.example.com", "*.example.com"));
    assert!(hosts_intersect("*.a.example.com", "*.example.com"));
    assert!(!hosts_intersect("*.example.com", "example.com"));
    assert!(!hosts_intersect("*.example.com", "*.example.org"));
    assert!(hosts_intersect("A.example.com", "a.EXAMPLE.com"));
}

#[test]
fn export_to_follows_istio() {
    let none: Vec<String> = Vec::new();
    let list = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert!(
        exported_to(&none, "a", "b"),
        "everything is exported by default"
    );
    assert!(exported_to(&list(&["*"]), "a", "b"));
    assert!(exported_to(&list(&["."]), "a", "a"));
    assert!(!exported_to(&list(&["."]), "a", "b"));
    assert!(exported_to(&list(&["b", "c"]), "a", "b"));
    assert!(!exported_to(&list(&["b"]), "a", "a"), "not even to its own");
    assert!(!exported_to(&list(&["~"]), "a", "a"));
}

#[test]
fn export_to_hides_services_virtual_services_and_rules() {
    let yaml = format!(
        "{}{}{}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: private, namespace: shop}}
spec:
  hosts: [public.shop.svc.cluster.local]
  exportTo: ['.']
  http: [{{route: [{{destination: {{host: public.shop.svc.cluster.local}}}}]}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: local, namespace: shop}}
spec:
  host: public.shop.svc.cluster.local
  exportTo: ['~']
",
        service("public", "shop", "'*'"),
        service("private", "shop", "'.'"),
        service("hidden", "shop", "'~'"),
    );
    let snapshot = snapshot(&yaml);
    let from_shop = ProxyScope::new(&snapshot, &sidecar("shop", &[]));
    assert_eq!(
        hostnames(&from_shop, &snapshot),
        [
            "private.shop.svc.cluster.local",
            "public.shop.svc.cluster.local"
        ]
    );
    assert_eq!(
        from_shop.egress_listeners()[0]
            .virtual_services(&snapshot)
            .count(),
        1
    );
    let from_web = ProxyScope::new(&snapshot, &sidecar("web", &[]));
    assert_eq!(
        hostnames(&from_web, &snapshot),
        ["public.shop.svc.cluster.local"]
    );
    assert_eq!(
        from_web.egress_listeners()[0]
            .virtual_services(&snapshot)
            .count(),
        0
    );
    let host = "public.shop.svc.cluster.local";
    assert!(
        snapshot.destination_rule(host, "shop").is_some(),
        "a rule always applies in its own namespace"
    );
    assert!(snapshot.destination_rule(host, "web").is_none());
}

const SIDECARS: &str = "
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: istio-system}
spec:
  egress: [{hosts: ['istio-system/*']}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: shop}
spec:
  egress: [{hosts: ['./*']}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: cart, namespace: shop}
spec:
  workloadSelector: {labels: {app: cart}}
  egress: [{hosts: ['./*', 'web/*']}]
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: selective, namespace: istio-system}
spec:
  workloadSelector: {labels: {app: cart}}
  egress: [{hosts: ['*/*']}]
";

fn mesh_with_sidecars() -> MeshSnapshot {
    snapshot(&format!(
        "{}{}{}{SIDECARS}",
        service("istiod", "istio-system", "'*'"),
        service("cart", "shop", "'*'"),
        service("web", "web", "'*'"),
    ))
}

fn sidecar_name(snapshot: &MeshSnapshot, proxy: &Proxy) -> Option<String> {
    ProxyScope::new(snapshot, proxy)
        .sidecar(snapshot)
        .map(|s| format!("{}/{}", namespace_of(s), s.metadata.name))
}

#[test]
fn a_selecting_sidecar_beats_the_namespace_default_which_beats_the_root() {
    let snapshot = mesh_with_sidecars();
    assert_eq!(
        sidecar_name(&snapshot, &sidecar("shop", &[("app", "cart")])).as_deref(),
        Some("shop/cart")
    );
    assert_eq!(
        sidecar_name(&snapshot, &sidecar("shop", &[("app", "other")])).as_deref(),
        Some("shop/default")
    );
    // The root namespace's default applies to namespaces without their own;
    // its selecting Sidecar only to workloads of the root namespace.
    assert_eq!(
        sidecar_name(&snapshot, &sidecar("web", &[("app", "cart")])).as_deref(),
        Some("istio-system/default")
    );
    let gateway = Proxy {
        proxy_type: ProxyType::Router,
        ..sidecar("shop", &[("app", "cart")])
    };
    assert_eq!(
        sidecar_name(&snapshot, &gateway),
        None,
        "gateways have none"
    );
}

#[test]
fn egress_hosts_decide_which_services_a_sidecar_sees() {
    let snapshot = mesh_with_sidecars();
    let cart = ProxyScope::new(&snapshot, &sidecar("shop", &[("app", "cart")]));
    assert_eq!(
        hostnames(&cart, &snapshot),
        ["cart.shop.svc.cluster.local", "web.web.svc.cluster.local"]
    );
    let other = ProxyScope::new(&snapshot, &sidecar("shop", &[]));
    assert_eq!(
        hostnames(&other, &snapshot),
        ["cart.shop.svc.cluster.local"]
    );
    let web = ProxyScope::new(&snapshot, &sidecar("web", &[]));
    assert_eq!(
        hostnames(&web, &snapshot),
        ["istiod.istio-system.svc.cluster.local"]
    );
}

#[test]
fn virtual_services_bring_the_services_they_route_to() {
    let yaml = format!(
        "{}{}---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: shop}}
spec:
  egress: [{{hosts: ['./*']}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: cart, namespace: shop}}
spec:
  hosts: [cart]
  http: [{{route: [{{destination: {{host: cart.v2.svc.cluster.local}}}}]}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: for-gateways, namespace: shop}}
spec:
  hosts: [cart]
  gateways: [shop-gateway]
  http: [{{route: [{{destination: {{host: cart.shop.svc.cluster.local}}}}]}}]
",
        service("cart", "shop", "'*'"),
        service("cart", "v2", "'*'"),
    );
    let snapshot = snapshot(&yaml);
    let scope = ProxyScope::new(&snapshot, &sidecar("shop", &[]));
    assert_eq!(
        hostnames(&scope, &snapshot),
        ["cart.shop.svc.cluster.local", "cart.v2.svc.cluster.local"]
    );
    let imported: Vec<&str> = scope.egress_listeners()[0]
        .virtual_services(&snapshot)
        .map(|vs| vs.metadata.name.as_str())
        .collect();
    assert_eq!(imported, ["cart"], "only VirtualServices bound to the mesh");
}

#[test]
fn outbound_policy_comes_from_the_sidecar_else_the_mesh() {
    let snapshot = mesh_with_sidecars();
    let mode = |proxy: &Proxy| ProxyScope::new(&snapshot, proxy).outbound_policy().mode;
    assert_eq!(
        mode(&sidecar("shop", &[("app", "cart")])),
        OutboundMode::RegistryOnly
    );
    assert_eq!(mode(&sidecar("shop", &[])), OutboundMode::AllowAny);

    let strict = MeshSettings {
        outbound_traffic_policy: OutboundMode::RegistryOnly,
        ..MeshSettings::default()
    };
    let yaml = "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: open}
spec:
  outboundTrafficPolicy:
    mode: ALLOW_ANY
    egressProxy: {host: egress.istio-system.svc.cluster.local, port: {number: 443}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: empty}
spec:
  outboundTrafficPolicy: {}
";
    let snapshot = snapshot_with(yaml, strict);
    let policy = |ns: &str| {
        ProxyScope::new(&snapshot, &sidecar(ns, &[]))
            .outbound_policy()
            .clone()
    };
    assert_eq!(
        policy("shop").mode,
        OutboundMode::RegistryOnly,
        "the mesh's"
    );
    let open = policy("open");
    assert_eq!(open.mode, OutboundMode::AllowAny);
    assert_eq!(
        open.egress_proxy.unwrap().host,
        "egress.istio-system.svc.cluster.local"
    );
    assert_eq!(
        policy("empty").mode,
        OutboundMode::RegistryOnly,
        "an empty policy is the proto's zero value"
    );
}

#[test]
fn egress_listeners_keep_their_port_bind_and_capture_mode() {
    let yaml = format!(
        "{}---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: shop}}
spec:
  egress:
  - port: {{number: 8080, protocol: HTTP, name: http-egress}}
    bind: 127.0.0.2
    captureMode: NONE
    hosts: ['./*']
  - hosts: ['*/*']
",
        service("cart", "shop", "'*'"),
    );
    let snapshot = snapshot(&yaml);
    let redirect = sidecar("shop", &[]);
    let scope = ProxyScope::new(&snapshot, &redirect);
    let [declared, catch_all] = scope.egress_listeners() else {
        panic!("two egress listeners expected");
    };
    assert_eq!(
        declared.port,
        Some(EgressPort {
            number: 8080,
            protocol: Protocol::Http,
            name: "http-egress".into()
        })
    );
    assert_eq!(declared.bind.as_deref(), Some("127.0.0.2"));
    assert!(!declared.captured(&redirect));
    assert!(catch_all.captured(&redirect));
    let uncaptured = Proxy {
        interception_mode: "NONE".into(),
        ..redirect
    };
    assert!(!catch_all.captured(&uncaptured));
}
