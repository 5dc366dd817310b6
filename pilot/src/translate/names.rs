//! Istio's names for generated resources, kept so that operators' habits,
//! dashboards and `istioctl`-style tooling carry over.

/// How traffic flows through a cluster, the first part of its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Outbound,
    Inbound,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }
}

/// `outbound|<port>|<subset>|<host>` (subset empty when none).
pub fn cluster_name(direction: Direction, port: u32, subset: &str, host: &str) -> String {
    join_with_port(direction.as_str(), "|", port, &["|", subset, "|", host])
}

/// `<head><separator><port>` then `tail`, in a string allocated once at its
/// final size. Cluster names and SNIs are built for every cluster of every
/// push; `format!` cannot know the final size and regrows its string.
pub(crate) fn join_with_port(head: &str, separator: &str, port: u32, tail: &[&str]) -> String {
    const MAX_DIGITS: usize = 10;
    let tail_len: usize = tail.iter().map(|part| part.len()).sum();
    let mut out = String::with_capacity(head.len() + separator.len() + MAX_DIGITS + tail_len);
    out.push_str(head);
    out.push_str(separator);
    push_decimal(&mut out, port);
    for part in tail {
        out.push_str(part);
    }
    out
}

/// Appends `n` in decimal, as `Display` writes it.
fn push_decimal(out: &mut String, n: u32) {
    let mut digits = [0u8; 10];
    let mut start = digits.len();
    let mut rest = n;
    loop {
        start -= 1;
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&digits[start..]).expect("ASCII digits"));
}

/// The parts of a cluster name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterKey<'a> {
    pub direction: Direction,
    pub port: u32,
    pub subset: &'a str,
    pub host: &'a str,
}

/// Reads a name made by [`cluster_name`]; `None` for other clusters.
pub fn parse_cluster_name(name: &str) -> Option<ClusterKey<'_>> {
    let mut parts = name.splitn(4, '|');
    let direction = match parts.next()? {
        "outbound" => Direction::Outbound,
        "inbound" => Direction::Inbound,
        _ => return None,
    };
    let port = parts.next()?.parse().ok()?;
    let subset = parts.next()?;
    let host = parts.next()?;
    Some(ClusterKey {
        direction,
        port,
        subset,
        host,
    })
}

/// The outbound cluster a VirtualService destination (written in `namespace`)
/// sends to: its port, else the service's only port, else `default_port` (the
/// port of the listener the route is on).
pub fn destination_cluster(
    snapshot: &crate::model::MeshSnapshot,
    namespace: &str,
    destination: &mesh_config::networking::virtual_service::Destination,
    default_port: u32,
) -> String {
    let host = snapshot.qualify_host(&destination.host, namespace);
    let port = destination
        .port
        .as_ref()
        .and_then(|p| p.number)
        .or_else(
            || match snapshot.service(&host).map(|s| s.ports.as_slice()) {
                Some([only]) => Some(only.number),
                _ => None,
            },
        )
        .unwrap_or(default_port);
    cluster_name(Direction::Outbound, port, &destination.subset, &host)
}

/// Route configuration of a gateway's plain-HTTP servers on `port`.
pub fn gateway_http_route_name(port: u32) -> String {
    format!("http.{port}")
}

/// Route configuration of one gateway HTTPS server that terminates TLS:
/// `https.<port>.<port name>.<gateway>.<namespace>`.
pub fn gateway_https_route_name(
    port: u32,
    port_name: &str,
    gateway: &str,
    namespace: &str,
) -> String {
    format!("https.{port}.{port_name}.{gateway}.{namespace}")
}

/// Listener of a gateway on `port`, bound to all addresses.
pub fn gateway_listener_name(port: u32) -> String {
    format!("0.0.0.0_{port}")
}

/// Route configuration of a sidecar's outbound HTTP listener on `port`:
/// `<port>`, or `<bind>:<port>` for an egress listener with its own address.
pub fn sidecar_outbound_route_name(bind: Option<&str>, port: u32) -> String {
    match bind {
        Some(bind) => format!("{bind}:{port}"),
        None => port.to_string(),
    }
}

/// Reads a name made by [`sidecar_outbound_route_name`] into (bind, port).
pub fn parse_sidecar_outbound_route_name(name: &str) -> Option<(Option<&str>, u32)> {
    match name.rsplit_once(':') {
        Some((bind, port)) if !bind.is_empty() => Some((Some(bind), port.parse().ok()?)),
        Some(_) => None,
        None => Some((None, name.parse().ok()?)),
    }
}

/// Listener of a sidecar's outbound port: `<address>_<port>`.
pub fn sidecar_outbound_listener_name(address: &str, port: u32) -> String {
    format!("{address}_{port}")
}

/// Clusters Istio always has: traffic with nowhere to go, and traffic sent on as addressed.
pub const BLACKHOLE_CLUSTER: &str = "BlackHoleCluster";
pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_round_trip() {
        let name = cluster_name(
            Direction::Outbound,
            9080,
            "v1",
            "reviews.default.svc.cluster.local",
        );
        assert_eq!(name, "outbound|9080|v1|reviews.default.svc.cluster.local");
        let key = parse_cluster_name(&name).unwrap();
        assert_eq!(key.port, 9080);
        assert_eq!(key.subset, "v1");
        assert_eq!(key.host, "reviews.default.svc.cluster.local");
        assert_eq!(parse_cluster_name("BlackHoleCluster"), None);
    }

    #[test]
    fn ports_are_written_as_display_writes_them() {
        for port in [0, 7, 10, 80, 9080, 65535, u32::MAX] {
            assert_eq!(
                join_with_port("a", "|", port, &["|b"]),
                format!("a|{port}|b")
            );
        }
    }

    #[test]
    fn sidecar_route_names_round_trip() {
        assert_eq!(sidecar_outbound_route_name(None, 9080), "9080");
        assert_eq!(
            parse_sidecar_outbound_route_name("9080"),
            Some((None, 9080))
        );
        let bound = sidecar_outbound_route_name(Some("127.0.0.2"), 80);
        assert_eq!(bound, "127.0.0.2:80");
        assert_eq!(
            parse_sidecar_outbound_route_name(&bound),
            Some((Some("127.0.0.2"), 80))
        );
        assert_eq!(parse_sidecar_outbound_route_name("http.80"), None);
        assert_eq!(parse_sidecar_outbound_route_name(":80"), None);
    }
}
