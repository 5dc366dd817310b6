//! DestinationRule: host, subsets and traffic policies (load balancing,
//! connection pools, outlier detection, client TLS, tunnels).

use std::collections::BTreeSet;

use super::{Checker, Path, durations, export_to, hosts, names, ports, selectors};
use crate::networking::destination_rule::{
    ClientTlsSettings, ConnectionPoolSettings, DestinationRule, LoadBalancerSettings,
    LocalityLoadBalancerSetting, OutlierDetection, TlsMode, TrafficPolicy, TunnelSettings,
};

pub fn validate(v: &mut Checker, at: &Path, dr: &DestinationRule) {
    v.check(&at.field("host"), hosts::wildcard_domain(&dr.host));
    if let Some(policy) = &dr.traffic_policy {
        traffic_policy(v, &at.field("trafficPolicy"), policy);
    }
    let mut seen = BTreeSet::new();
    for (i, subset) in dr.subsets.iter().enumerate() {
        let at = at.field("subsets").index(i);
        let name_at = at.field("name");
        if !names::is_dns_label(&subset.name) {
            v.error(
                &name_at,
                format!("subset name {:?} is not a DNS-1123 label", subset.name),
            );
        } else if !seen.insert(subset.name.as_str()) {
            v.error(
                &name_at,
                format!("subset {:?} is defined twice", subset.name),
            );
        }
        names::labels(v, &at.field("labels"), &subset.labels);
        if let Some(policy) = &subset.traffic_policy {
            traffic_policy(v, &at.field("trafficPolicy"), policy);
        }
    }
    let owner = if dr.workload_selector.is_some() {
        export_to::Owner::DestinationRuleWithSelector
    } else {
        export_to::Owner::Other
    };
    export_to::validate(v, &at.field("exportTo"), &dr.export_to, owner);
    selectors::workload_selector(
        v,
        &at.field("workloadSelector"),
        dr.workload_selector.as_ref(),
    );
}

fn traffic_policy(v: &mut Checker, at: &Path, p: &TrafficPolicy) {
    if *p == TrafficPolicy::default() {
        v.error(at, "a traffic policy needs at least one setting");
        return;
    }
    if p.tunnel.is_some() && p.proxy_protocol.is_some() {
        v.error(
            &at.field("proxyProtocol"),
            "tunnel and proxyProtocol cannot be used together",
        );
    }
    policy_parts(
        v,
        at,
        p.outlier_detection.as_ref(),
        p.connection_pool.as_ref(),
        p.load_balancer.as_ref(),
        p.tls.as_ref(),
    );
    for (i, port_policy) in p.port_level_settings.iter().enumerate() {
        let at = at.field("portLevelSettings").index(i);
        match &port_policy.port {
            Some(port) => v.check(
                &at.field("port").field("number"),
                ports::number(port.number.unwrap_or(0)),
            ),
            None => v.error(&at.field("port"), "a port-level policy needs a port"),
        }
        let empty = port_policy.outlier_detection.is_none()
            && port_policy.connection_pool.is_none()
            && port_policy.load_balancer.is_none()
            && port_policy.tls.is_none();
        if empty {
            v.error(&at, "a port-level policy needs at least one setting");
        }
        policy_parts(
            v,
            &at,
            port_policy.outlier_detection.as_ref(),
            port_policy.connection_pool.as_ref(),
            port_policy.load_balancer.as_ref(),
            port_policy.tls.as_ref(),
        );
    }
    if let Some(tunnel) = &p.tunnel {
        tunnel_settings(v, &at.field("tunnel"), tunnel);
    }
}

fn policy_parts(
    v: &mut Checker,
    at: &Path,
    outlier: Option<&OutlierDetection>,
    pool: Option<&ConnectionPoolSettings>,
    lb: Option<&LoadBalancerSettings>,
    tls: Option<&ClientTlsSettings>,
) {
    if let Some(outlier) = outlier {
        outlier_detection(v, &at.field("outlierDetection"), outlier);
    }
    if let Some(pool) = pool {
        connection_pool(v, &at.field("connectionPool"), pool);
    }
    if let Some(lb) = lb {
        load_balancer(v, &at.field("loadBalancer"), lb, outlier.is_some());
    }
    if let Some(tls) = tls {
        client_tls(v, &at.field("tls"), tls);
    }
}

fn percent_0_100(v: &mut Checker, at: &Path, value: Option<i32>) {
    if let Some(value) = value {
        v.require(
            at,
            (0..=100).contains(&value),
            format!("{value} is not a percentage in 0..100"),
        );
    }
}

fn optional_duration(v: &mut Checker, at: &Path, d: Option<&crate::common::Duration>) {
    if let Some(d) = d {
        v.check(at, durations::at_least_1ms(d));
    }
}

fn outlier_detection(v: &mut Checker, at: &Path, o: &OutlierDetection) {
    optional_duration(
        v,
        &at.field("baseEjectionTime"),
        o.base_ejection_time.as_ref(),
    );
    optional_duration(v, &at.field("interval"), o.interval.as_ref());
    if o.consecutive_errors.is_some_and(|n| n != 0) {
        v.warn(
            &at.field("consecutiveErrors"),
            "consecutiveErrors is deprecated; use consecutiveGatewayErrors or consecutive5xxErrors",
        );
    }
    if o.consecutive_local_origin_failures.is_some_and(|n| n > 0)
        && o.split_external_local_origin_errors != Some(true)
    {
        v.error(
            &at.field("consecutiveLocalOriginFailures"),
            "consecutiveLocalOriginFailures only applies when splitExternalLocalOriginErrors is true",
        );
    }
    percent_0_100(v, &at.field("maxEjectionPercent"), o.max_ejection_percent);
    percent_0_100(v, &at.field("minHealthPercent"), o.min_health_percent);
}

fn non_negative(v: &mut Checker, at: &Path, value: Option<i32>) {
    if let Some(value) = value {
        v.require(at, value >= 0, format!("{value} is negative"));
    }
}

fn connection_pool(v: &mut Checker, at: &Path, pool: &ConnectionPoolSettings) {
    if pool.http.is_none() && pool.tcp.is_none() {
        v.error(at, "a connection pool needs tcp or http settings");
    }
    if let Some(http) = &pool.http {
        let at = at.field("http");
        non_negative(
            v,
            &at.field("http1MaxPendingRequests"),
            http.http1_max_pending_requests,
        );
        non_negative(v, &at.field("http2MaxRequests"), http.http2_max_requests);
        non_negative(
            v,
            &at.field("maxRequestsPerConnection"),
            http.max_requests_per_connection,
        );
        non_negative(v, &at.field("maxRetries"), http.max_retries);
        non_negative(
            v,
            &at.field("maxConcurrentStreams"),
            http.max_concurrent_streams,
        );
        optional_duration(v, &at.field("idleTimeout"), http.idle_timeout.as_ref());
        if http.h2_upgrade_policy
            == Some(crate::networking::destination_rule::H2UpgradePolicy::Upgrade)
            && http.use_client_protocol == Some(true)
        {
            v.error(
                &at.field("useClientProtocol"),
                "useClientProtocol cannot be true when h2UpgradePolicy is UPGRADE",
            );
        }
        if let Some(keepalive) = &http.http2_keep_alive {
            let at = at.field("http2KeepAlive");
            for (field, value) in [
                ("interval", &keepalive.interval),
                ("timeout", &keepalive.timeout),
            ] {
                match value {
                    Some(d) => v.check(&at.field(field), durations::at_least_1ms(d)),
                    None => v.error(&at.field(field), format!("HTTP/2 keepalive needs {field}")),
                }
            }
        }
    }
    if let Some(tcp) = &pool.tcp {
        let at = at.field("tcp");
        non_negative(v, &at.field("maxConnections"), tcp.max_connections);
        optional_duration(v, &at.field("connectTimeout"), tcp.connect_timeout.as_ref());
        optional_duration(
            v,
            &at.field("maxConnectionDuration"),
            tcp.max_connection_duration.as_ref(),
        );
        // An idle timeout of 0 disables it.
        if let Some(idle) = &tcp.idle_timeout
            && idle.to_std().map_or(true, |d| d.as_millis() != 0)
        {
            v.check(&at.field("idleTimeout"), durations::at_least_1ms(idle));
        }
        if let Some(ka) = &tcp.tcp_keepalive {
            optional_duration(v, &at.field("tcpKeepalive").field("time"), ka.time.as_ref());
            optional_duration(
                v,
                &at.field("tcpKeepalive").field("interval"),
                ka.interval.as_ref(),
            );
        }
    }
}

fn is_prime(n: u64) -> bool {
    n >= 2
        && (2..)
            .take_while(|f| f * f <= n)
            .all(|f| !n.is_multiple_of(f))
}

/// Maglev's table size bound (Envoy's).
const MAGLEV_MAX_TABLE: u64 = 5_000_011;

fn load_balancer(v: &mut Checker, at: &Path, lb: &LoadBalancerSettings, has_outlier: bool) {
    if let Some(hash) = &lb.consistent_hash {
        let at = at.field("consistentHash");
        if let Some(cookie) = &hash.http_cookie {
            let at = at.field("httpCookie");
            v.require(
                &at.field("name"),
                !cookie.name.is_empty(),
                "the cookie needs a name",
            );
            let mut seen = BTreeSet::new();
            for (i, attr) in cookie.attributes.iter().enumerate() {
                let at = at.field("attributes").index(i).field("name");
                if attr.name.is_empty() {
                    v.error(&at, "cookie attribute names cannot be empty");
                } else if !seen.insert(attr.name.as_str()) {
                    v.error(
                        &at,
                        format!("cookie attribute {:?} is given twice", attr.name),
                    );
                }
            }
        }
        if hash.minimum_ring_size.is_some_and(|n| n != 0) {
            let at = at.field("minimumRingSize");
            v.warn(
                &at,
                "minimumRingSize is deprecated; use ringHash.minimumRingSize",
            );
            if hash.ring_hash.is_some() || hash.maglev.is_some() {
                v.error(
                    &at,
                    "minimumRingSize cannot be combined with ringHash or maglev",
                );
            }
        }
        if let Some(maglev) = &hash.maglev {
            let size = maglev.table_size.unwrap_or(0);
            v.require(
                &at.field("maglev").field("tableSize"),
                is_prime(size) && size < MAGLEV_MAX_TABLE,
                format!("maglev tableSize {size} must be a prime below {MAGLEV_MAX_TABLE}"),
            );
        }
    }
    if lb.locality_lb_setting.is_some() && lb.zone_aware_lb_setting.is_some() {
        v.error(
            &at.field("zoneAwareLbSetting"),
            "only one of localityLbSetting and zoneAwareLbSetting may be set",
        );
    }
    if let Some(locality) = &lb.locality_lb_setting {
        locality_lb(v, &at.field("localityLbSetting"), locality, has_outlier);
    }
    if let Some(warmup) = &lb.warmup {
        let at = at.field("warmup");
        match &warmup.duration {
            Some(d) => v.check(&at.field("duration"), durations::at_least_1ms(d)),
            None => v.error(&at.field("duration"), "warmup needs a duration"),
        }
        if let Some(min) = warmup.minimum_percent {
            v.require(
                &at.field("minimumPercent"),
                min <= 100.0,
                "minimumPercent cannot exceed 100",
            );
        }
        if let Some(aggression) = warmup.aggression {
            v.require(
                &at.field("aggression"),
                aggression > 0.0,
                "aggression must be greater than 0",
            );
        }
    }
}

fn locality_lb(v: &mut Checker, at: &Path, l: &LocalityLoadBalancerSetting, has_outlier: bool) {
    if !l.distribute.is_empty() && !l.failover.is_empty() {
        v.error(at, "distribute and failover cannot be set together");
        return;
    }
    for (i, d) in l.distribute.iter().enumerate() {
        let at = at.field("distribute").index(i);
        v.check(&at.field("from"), locality(&d.from));
        for name in d.to.keys() {
            v.check(&at.field("to").key(name), locality(name));
        }
        let mut total = 0u32;
        for (locality, weight) in &d.to {
            v.require(
                &at.field("to").key(locality),
                (1..=100).contains(weight),
                format!("locality weight {weight} is not in 1..100"),
            );
            total += weight;
        }
        v.require(
            &at.field("to"),
            total == 100,
            format!("locality weights add up to {total}, not 100"),
        );
    }
    if (!l.failover.is_empty() || !l.failover_priority.is_empty()) && !has_outlier {
        v.warn(at, "failover only happens with outlierDetection configured");
    }
    for (i, f) in l.failover.iter().enumerate() {
        let at = at.field("failover").index(i);
        if f.from == f.to {
            v.error(&at, "failover must go to a different region");
        }
        if [&f.from, &f.to]
            .iter()
            .any(|r| r.contains('/') || r.contains('*'))
        {
            v.error(&at, "failover names regions only, without '/' or '*'");
        }
    }
}

/// `region/zone/subzone`, each part non-empty, with at most one `*` and
/// only as the last character.
fn locality(name: &str) -> Result<(), String> {
    let stars = name.matches('*').count();
    if stars > 1 || (stars == 1 && !name.ends_with('*')) {
        return Err(format!("locality {name:?} may only end with a single '*'"));
    }
    if name.is_empty() || name.split('/').any(str::is_empty) {
        return Err(format!(
            "locality {name:?} has an empty region, zone or subzone"
        ));
    }
    Ok(())
}

/// Client TLS towards the destination.
fn client_tls(v: &mut Checker, at: &Path, tls: &ClientTlsSettings) {
    let mode = tls.mode.unwrap_or_default();
    if tls.insecure_skip_verify == Some(true) {
        let bad = match mode {
            TlsMode::Simple => {
                !tls.ca_certificates.is_empty()
                    || !tls.credential_name.is_empty()
                    || !tls.subject_alt_names.is_empty()
            }
            TlsMode::Mutual => !tls.ca_certificates.is_empty() || !tls.subject_alt_names.is_empty(),
            _ => false,
        };
        if bad {
            v.error(&at.field("insecureSkipVerify"), "insecureSkipVerify cannot be combined with CA certificates, credentialName or subjectAltNames");
        }
    }
    let simple_or_mutual = matches!(mode, TlsMode::Simple | TlsMode::Mutual);
    if simple_or_mutual && !tls.credential_name.is_empty() {
        let inline = !tls.client_certificate.is_empty()
            || !tls.private_key.is_empty()
            || !tls.ca_certificates.is_empty()
            || !tls.ca_crl.is_empty();
        v.require(&at.field("credentialName"), !inline, "with credentialName, certificates, keys and CRLs come from the credential and cannot be given inline");
        return;
    }
    match mode {
        TlsMode::Mutual => {
            v.require(
                &at.field("clientCertificate"),
                !tls.client_certificate.is_empty(),
                "MUTUAL TLS needs clientCertificate (or credentialName)",
            );
            v.require(
                &at.field("privateKey"),
                !tls.private_key.is_empty(),
                "MUTUAL TLS needs privateKey (or credentialName)",
            );
        }
        TlsMode::IstioMutual => {
            let inline = !tls.client_certificate.is_empty()
                || !tls.private_key.is_empty()
                || !tls.ca_certificates.is_empty()
                || !tls.credential_name.is_empty();
            if inline {
                v.warn(at, "ISTIO_MUTUAL uses Istio's own certificates; the certificate settings are ignored");
            }
        }
        TlsMode::Simple | TlsMode::Disable => {}
    }
}

fn tunnel_settings(v: &mut Checker, at: &Path, t: &TunnelSettings) {
    v.require(
        &at.field("protocol"),
        matches!(t.protocol.as_str(), "" | "CONNECT" | "POST"),
        "tunnel protocol must be CONNECT or POST",
    );
    v.require(
        &at.field("targetHost"),
        hosts::fqdn(&t.target_host).is_ok() || hosts::is_ip(&t.target_host),
        format!(
            "tunnel target {:?} is neither a host name nor an IP address",
            t.target_host
        ),
    );
    v.check(&at.field("targetPort"), ports::number(t.target_port));
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

    fn dr(spec: &str) -> String {
        doc("networking.istio.io/v1", "DestinationRule", spec)
    }

    fn policy(body: &str) -> String {
        dr(&format!("  host: reviews\n  trafficPolicy:\n{body}"))
    }

    #[test]
    fn tunnel_settings() {
        assert_valid(&policy(
            "    tunnel: {protocol: CONNECT, targetHost: proxy.example.com, targetPort: 3128}\n",
        ));
        assert_one_error(
            &policy(
                "    tunnel: {protocol: GET, targetHost: proxy.example.com, targetPort: 3128}\n",
            ),
            "spec.trafficPolicy.tunnel.protocol",
        );
        assert_one_error(
            &policy("    tunnel: {targetHost: 'bad host', targetPort: 3128}\n"),
            "spec.trafficPolicy.tunnel.targetHost",
        );
        assert_one_error(
            &policy("    tunnel: {targetHost: proxy, targetPort: 0}\n"),
            "spec.trafficPolicy.tunnel.targetPort",
        );
        assert_one_error(
            &policy(
                "    tunnel: {targetHost: proxy, targetPort: 1}\n    proxyProtocol: {version: V2}\n",
            ),
            "spec.trafficPolicy.proxyProtocol",
        );
    }

    #[test]
    fn connection_pool() {
        assert_one_error(
            &policy("    connectionPool: {}\n"),
            "spec.trafficPolicy.connectionPool",
        );
        assert_one_error(
            &policy("    connectionPool:\n      http: {maxRetries: -1}\n"),
            "spec.trafficPolicy.connectionPool.http.maxRetries",
        );
        assert_one_error(
            &policy(
                "    connectionPool:\n      http: {h2UpgradePolicy: UPGRADE, useClientProtocol: true}\n",
            ),
            "spec.trafficPolicy.connectionPool.http.useClientProtocol",
        );
        assert_one_error(
            &policy("    connectionPool:\n      http:\n        http2KeepAlive: {interval: 10s}\n"),
            "spec.trafficPolicy.connectionPool.http.http2KeepAlive.timeout",
        );
        assert_valid(&policy(
            "    connectionPool:\n      tcp: {idleTimeout: 0s, tcpKeepalive: {time: 7200s, interval: 75s}}\n",
        ));
        assert_one_error(
            &policy("    connectionPool:\n      tcp: {maxConnections: -1}\n"),
            "spec.trafficPolicy.connectionPool.tcp.maxConnections",
        );
    }

    #[test]
    fn outlier_detection() {
        assert_warning(
            &policy("    outlierDetection: {consecutiveErrors: 5}\n"),
            "spec.trafficPolicy.outlierDetection.consecutiveErrors",
        );
        assert_one_error(
            &policy("    outlierDetection: {consecutiveLocalOriginFailures: 3}\n"),
            "spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures",
        );
        assert_valid(&policy(
            "    outlierDetection: {consecutiveLocalOriginFailures: 3, splitExternalLocalOriginErrors: true}\n",
        ));
        assert_one_error(
            &policy("    outlierDetection: {interval: 0.5ms}\n"),
            "spec.trafficPolicy.outlierDetection.interval",
        );
    }

    #[test]
    fn load_balancer() {
        let lb = |body: &str| policy(&format!("    loadBalancer:\n{body}"));
        assert_valid(&lb(
            "      consistentHash: {httpCookie: {name: user, ttl: 0s}, maglev: {tableSize: 65537}}\n",
        ));
        assert_one_error(
            &lb("      consistentHash: {httpCookie: {name: ''}}\n"),
            "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name",
        );
        assert_one_error(
            &lb(
                "      consistentHash: {httpCookie: {name: u, attributes: [{name: SameSite}, {name: SameSite}]}}\n",
            ),
            "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.attributes[1].name",
        );
        assert_warning(
            &lb("      consistentHash: {useSourceIp: true, minimumRingSize: 1024}\n"),
            "spec.trafficPolicy.loadBalancer.consistentHash.minimumRingSize",
        );
        assert_one_error(
            &lb(
                "      consistentHash: {useSourceIp: true, minimumRingSize: 1024, ringHash: {minimumRingSize: 1024}}\n",
            ),
            "spec.trafficPolicy.loadBalancer.consistentHash.minimumRingSize",
        );
        assert_one_error(
            &lb(
                "      localityLbSetting: {enabled: true}\n      zoneAwareLbSetting: {enabled: true}\n",
            ),
            "spec.trafficPolicy.loadBalancer.zoneAwareLbSetting",
        );
        assert_one_error(
            &lb("      warmup: {minimumPercent: 10}\n"),
            "spec.trafficPolicy.loadBalancer.warmup.duration",
        );
        assert_one_error(
            &lb("      warmup: {duration: 10s, aggression: 0}\n"),
            "spec.trafficPolicy.loadBalancer.warmup.aggression",
        );
        assert_one_error(
            &lb("      warmup: {duration: 10s, minimumPercent: 120}\n"),
            "spec.trafficPolicy.loadBalancer.warmup.minimumPercent",
        );
    }

    #[test]
    fn locality_failover() {
        let lb = |body: &str| {
            policy(&format!(
                "    loadBalancer:\n      localityLbSetting:\n{body}"
            ))
        };
        assert_warning(
            &lb("        failover: [{from: us-east, to: us-west}]\n"),
            "spec.trafficPolicy.loadBalancer.localityLbSetting",
        );
        assert_one_error(
            &lb("        failover: [{from: us-east, to: us-east}]\n"),
            "spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0]",
        );
        assert_one_error(
            &lb("        failover: [{from: us-east/a, to: us-west}]\n"),
            "spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0]",
        );
        assert_one_error(
            &lb(
                "        distribute: [{from: a, to: {b: 100}}]\n        failover: [{from: a, to: b}]\n",
            ),
            "spec.trafficPolicy.loadBalancer.localityLbSetting",
        );
        assert_one_error(
            &lb("        distribute: [{from: a, to: {b: 0, c: 100}}]\n"),
            "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to[b]",
        );
    }

    #[test]
    fn locality_names() {
        let lb = |body: &str| {
            policy(&format!(
                "    loadBalancer:\n      localityLbSetting:\n{body}"
            ))
        };
        assert_valid(&lb(
            "        distribute: [{from: 'us-west/*', to: {'us-west/a/*': 80, 'us-east/*': 20}}]\n",
        ));
        assert_one_error(
            &lb("        distribute: [{from: 'us-*/a', to: {'us-east/*': 100}}]\n"),
            "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].from",
        );
        assert_one_error(
            &lb("        distribute: [{from: 'us-west', to: {'us-east//a': 100}}]\n"),
            "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to[us-east//a]",
        );
    }

    #[test]
    fn client_tls() {
        let tls = |body: &str| policy(&format!("    tls:\n{body}"));
        assert_valid(&tls(
            "      mode: MUTUAL\n      credentialName: client-cert\n",
        ));
        assert_valid(&tls(
            "      mode: MUTUAL\n      clientCertificate: /c.pem\n      privateKey: /k.pem\n",
        ));
        assert_one_error(
            &tls("      mode: MUTUAL\n      clientCertificate: /c.pem\n"),
            "spec.trafficPolicy.tls.privateKey",
        );
        assert_warning(
            &tls("      mode: ISTIO_MUTUAL\n      clientCertificate: /c.pem\n"),
            "spec.trafficPolicy.tls",
        );
        assert_one_error(
            &tls(
                "      mode: MUTUAL\n      insecureSkipVerify: true\n      subjectAltNames: [a]\n      credentialName: c\n",
            ),
            "spec.trafficPolicy.tls.insecureSkipVerify",
        );
    }

    #[test]
    fn port_level_settings() {
        assert_one_error(
            &policy("    portLevelSettings:\n    - loadBalancer: {simple: RANDOM}\n"),
            "spec.trafficPolicy.portLevelSettings[0].port",
        );
        assert_one_error(
            &policy("    portLevelSettings:\n    - port: {number: 80}\n"),
            "spec.trafficPolicy.portLevelSettings[0]",
        );
    }

    #[test]
    fn subsets_have_valid_labels_and_policies() {
        assert_one_error(
            &dr("  host: reviews\n  subsets:\n  - name: v1\n    labels: {'bad key': v1}\n"),
            "spec.subsets[0].labels[bad key]",
        );
        assert_one_error(
            &dr("  host: reviews\n  subsets:\n  - name: v1\n    trafficPolicy: {}\n"),
            "spec.subsets[0].trafficPolicy",
        );
    }

    #[test]
    fn a_rule_with_a_selector_stays_in_its_namespace() {
        let selected =
            "  host: reviews\n  workloadSelector:\n    matchLabels: {app: productpage}\n";
        assert_valid(&dr(&format!("{selected}  exportTo: ['.']\n")));
        assert_one_error(
            &dr(&format!("{selected}  exportTo: ['*']\n")),
            "spec.exportTo",
        );
        assert_warning(
            &dr("  host: reviews\n  workloadSelector: {}\n"),
            "spec.workloadSelector.matchLabels",
        );
    }
}
