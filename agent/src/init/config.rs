//! What `agent init` captures, as validated values: the parsed form of the
//! flags (and of the `traffic.sidecar.istio.io/*` annotations the injector
//! turns into them).

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

/// Why a flag's value was refused. clap prefixes the message with the flag
/// and the whole value, so each variant names only the offending entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("{0:?} is not a port number (1-65535)")]
    Port(String),
    #[error("{0:?} is not an IP range in CIDR form such as 10.0.0.0/8")]
    Cidr(String),
    #[error("{0:?} has a prefix length longer than its address allows")]
    PrefixLength(String),
    #[error("'*' means every value and cannot be combined with other entries")]
    WildcardAmongOthers,
    #[error("'*' is not accepted here; list the ranges to exclude")]
    WildcardNotAllowed,
    #[error("{0:?} is not a numeric user or group id")]
    Id(String),
    #[error("at least one id is required")]
    NoIds,
}

/// Either every value (`*`) or exactly the listed ones; an empty list selects
/// nothing, as an empty `includeInboundPorts` annotation does in Istio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection<T> {
    All,
    Only(Vec<T>),
}

/// An IPv4 or IPv6 range. Host bits are kept as written and cleared when
/// rendered, which is what iptables stores anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix_len: u8,
}

impl Cidr {
    /// A single IPv4 host, `/32`.
    pub const fn host_v4(addr: Ipv4Addr) -> Self {
        Self {
            addr: IpAddr::V4(addr),
            prefix_len: 32,
        }
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// Whether the range starts in loopback space, the test Istio applies to
    /// included ranges before it stops leaving loopback traffic alone.
    pub fn is_loopback(&self) -> bool {
        self.addr.is_loopback()
    }

    fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(addr) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix_len));
                IpAddr::V4(Ipv4Addr::from(u32::from(addr) & mask.unwrap_or(0)))
            }
            IpAddr::V6(addr) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix_len));
                IpAddr::V6(Ipv6Addr::from(u128::from(addr) & mask.unwrap_or(0)))
            }
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.prefix_len)
    }
}

impl FromStr for Cidr {
    type Err = ValueError;

    /// `10.0.0.0/8`, `2001:db8::/32`, or a bare address meaning just that host.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (addr, prefix_len) = match text.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| ValueError::Cidr(text.into()))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix_len = match prefix_len {
            None => max,
            Some(len) => len.parse().map_err(|_| ValueError::Cidr(text.into()))?,
        };
        if prefix_len > max {
            return Err(ValueError::PrefixLength(text.into()));
        }
        Ok(Self { addr, prefix_len })
    }
}

/// Comma-separated entries, trimmed, with empty ones dropped so that a
/// trailing comma in an annotation is harmless.
fn entries(text: &str) -> impl Iterator<Item = &str> {
    text.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
}

fn port(text: &str) -> Result<u16, ValueError> {
    match text.parse::<u16>() {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(ValueError::Port(text.into())),
    }
}

/// Keeps the first occurrence of each value, so a port listed twice (say by
/// the injector and by an annotation) gives one rule, in the order written.
fn dedup<T: PartialEq>(values: Vec<T>) -> Vec<T> {
    let mut kept = Vec::with_capacity(values.len());
    for value in values {
        if !kept.contains(&value) {
            kept.push(value);
        }
    }
    kept
}

/// A single port, as for `--inbound-capture-port`.
pub fn parse_port(text: &str) -> Result<u16, ValueError> {
    port(text.trim())
}

/// A comma-separated port list; empty means none.
pub fn parse_ports(text: &str) -> Result<Vec<u16>, ValueError> {
    entries(text).map(port).collect::<Result<_, _>>().map(dedup)
}

/// `*`, a comma-separated port list, or empty for none.
pub fn parse_port_selection(text: &str) -> Result<Selection<u16>, ValueError> {
    if text.trim() == "*" {
        return Ok(Selection::All);
    }
    if entries(text).any(|entry| entry == "*") {
        return Err(ValueError::WildcardAmongOthers);
    }
    parse_ports(text).map(Selection::Only)
}

/// A comma-separated list of ranges to leave alone; `*` is refused because
/// excluding everything is spelled as an empty include list.
pub fn parse_cidrs(text: &str) -> Result<Vec<Cidr>, ValueError> {
    entries(text)
        .map(|entry| match entry {
            "*" => Err(ValueError::WildcardNotAllowed),
            _ => entry.parse(),
        })
        .collect::<Result<_, _>>()
        .map(dedup)
}

/// `*`, a comma-separated list of ranges, or empty for none.
pub fn parse_cidr_selection(text: &str) -> Result<Selection<Cidr>, ValueError> {
    if text.trim() == "*" {
        return Ok(Selection::All);
    }
    entries(text)
        .map(|entry| match entry {
            "*" => Err(ValueError::WildcardAmongOthers),
            _ => entry.parse(),
        })
        .collect::<Result<_, _>>()
        .map(|cidrs| Selection::Only(dedup(cidrs)))
}

/// A comma-separated list of numeric uids or gids, at least one.
pub fn parse_ids(text: &str) -> Result<Vec<u32>, ValueError> {
    let ids: Vec<u32> = entries(text)
        .map(|entry| entry.parse().map_err(|_| ValueError::Id(entry.into())))
        .collect::<Result<_, _>>()?;
    if ids.is_empty() {
        return Err(ValueError::NoIds);
    }
    Ok(dedup(ids))
}

/// The proxy's own ports, never captured inbound: 15008 is the HBONE tunnel
/// Envoy terminates itself, 15090 Envoy's Prometheus stats, 15021 the health
/// port kubelet probes, 15020 the agent's merged metrics and status. Istio
/// excludes the same four (the last three through the injector's `-d`).
pub const PROXY_OWN_INBOUND_PORTS: [u16; 4] = [15008, 15090, 15021, 15020];

/// The HBONE tunnel port; the proxy's own calls back to it over loopback are
/// not turned into inbound captures.
pub const INBOUND_TUNNEL_PORT: u16 = 15008;

/// Everything the capture rules depend on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureConfig {
    /// Uids whose traffic is the proxy's own and is never captured outbound.
    pub proxy_uids: Vec<u32>,
    /// Gids likewise.
    pub proxy_gids: Vec<u32>,
    /// Envoy's inbound listener (virtualInbound).
    pub inbound_capture_port: u16,
    /// Envoy's outbound listener (virtualOutbound).
    pub outbound_capture_port: u16,
    pub inbound_ports: Selection<u16>,
    pub exclude_inbound_ports: Vec<u16>,
    pub outbound_ip_ranges: Selection<Cidr>,
    pub exclude_outbound_ip_ranges: Vec<Cidr>,
    pub outbound_ports: Vec<u16>,
    pub exclude_outbound_ports: Vec<u16>,
}

impl Default for CaptureConfig {
    /// What Istio's injector asks for when a pod carries no annotations:
    /// everything in and out is captured, except the proxy's own traffic.
    fn default() -> Self {
        Self {
            proxy_uids: vec![1337],
            proxy_gids: vec![1337],
            inbound_capture_port: 15006,
            outbound_capture_port: 15001,
            inbound_ports: Selection::All,
            exclude_inbound_ports: Vec::new(),
            outbound_ip_ranges: Selection::All,
            exclude_outbound_ip_ranges: Vec::new(),
            outbound_ports: Vec::new(),
            exclude_outbound_ports: Vec::new(),
        }
    }
}

impl CaptureConfig {
    /// Ranges that only ip6tables could apply. This init programs IPv4 only,
    /// so they are reported rather than silently dropped.
    pub fn ignored_ipv6_ranges(&self) -> Vec<(&'static str, Cidr)> {
        let included = match &self.outbound_ip_ranges {
            Selection::All => &[][..],
            Selection::Only(cidrs) => &cidrs[..],
        };
        let tagged = included
            .iter()
            .map(|cidr| ("--outbound-ip-ranges", *cidr))
            .chain(
                self.exclude_outbound_ip_ranges
                    .iter()
                    .map(|cidr| ("--exclude-outbound-ip-ranges", *cidr)),
            );
        tagged.filter(|(_, cidr)| !cidr.is_ipv4()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_lists_accept_istio_annotation_spellings() {
        assert_eq!(parse_ports("80,443"), Ok(vec![80, 443]));
        assert_eq!(parse_ports(" 80, 443 ,"), Ok(vec![80, 443]));
        assert_eq!(parse_ports(""), Ok(vec![]));
        assert_eq!(parse_ports("80,80,443"), Ok(vec![80, 443]));
    }

    #[test]
    fn bad_ports_are_named() {
        assert_eq!(parse_ports("80,http"), Err(ValueError::Port("http".into())));
        assert_eq!(parse_ports("0"), Err(ValueError::Port("0".into())));
        assert_eq!(parse_ports("65536"), Err(ValueError::Port("65536".into())));
        assert_eq!(parse_port("-1"), Err(ValueError::Port("-1".into())));
        assert_eq!(
            parse_ports("1000:2000"),
            Err(ValueError::Port("1000:2000".into()))
        );
    }

    #[test]
    fn port_selection_wildcard_list_or_none() {
        assert_eq!(parse_port_selection("*"), Ok(Selection::All));
        assert_eq!(parse_port_selection(""), Ok(Selection::Only(vec![])));
        assert_eq!(
            parse_port_selection("9080"),
            Ok(Selection::Only(vec![9080]))
        );
        assert_eq!(
            parse_port_selection("*,80"),
            Err(ValueError::WildcardAmongOthers)
        );
    }

    #[test]
    fn cidrs_parse_and_render_as_iptables_stores_them() {
        let cidr: Cidr = "10.1.2.3/16".parse().unwrap();
        assert_eq!(cidr.to_string(), "10.1.0.0/16");
        assert_eq!(
            "169.254.169.254".parse::<Cidr>().unwrap().to_string(),
            "169.254.169.254/32"
        );
        assert_eq!(
            "0.0.0.0/0".parse::<Cidr>().unwrap().to_string(),
            "0.0.0.0/0"
        );
        assert_eq!(
            "2001:db8::1/32".parse::<Cidr>().unwrap().to_string(),
            "2001:db8::/32"
        );
    }

    #[test]
    fn bad_cidrs_are_named() {
        assert_eq!(
            parse_cidrs("10.0.0.0/8,10.0.0/8"),
            Err(ValueError::Cidr("10.0.0/8".into()))
        );
        assert_eq!(
            parse_cidrs("10.0.0.0/33"),
            Err(ValueError::PrefixLength("10.0.0.0/33".into()))
        );
        assert_eq!(
            parse_cidrs("10.0.0.0/x"),
            Err(ValueError::Cidr("10.0.0.0/x".into()))
        );
        assert_eq!(parse_cidrs("*"), Err(ValueError::WildcardNotAllowed));
        assert_eq!(
            parse_cidr_selection("*,10.0.0.0/8"),
            Err(ValueError::WildcardAmongOthers)
        );
    }

    #[test]
    fn ids_need_at_least_one_number() {
        assert_eq!(parse_ids("1337"), Ok(vec![1337]));
        assert_eq!(parse_ids("1337,1338"), Ok(vec![1337, 1338]));
        assert_eq!(parse_ids(""), Err(ValueError::NoIds));
        assert_eq!(
            parse_ids("istio-proxy"),
            Err(ValueError::Id("istio-proxy".into()))
        );
    }

    #[test]
    fn ipv6_ranges_are_reported_as_not_applied() {
        let config = CaptureConfig {
            outbound_ip_ranges: parse_cidr_selection("10.0.0.0/8,fd00::/8").unwrap(),
            exclude_outbound_ip_ranges: parse_cidrs("2001:db8::/32,192.168.0.0/16").unwrap(),
            ..CaptureConfig::default()
        };
        let ignored: Vec<String> = config
            .ignored_ipv6_ranges()
            .iter()
            .map(|(flag, cidr)| format!("{flag} {cidr}"))
            .collect();
        assert_eq!(
            ignored,
            [
                "--outbound-ip-ranges fd00::/8",
                "--exclude-outbound-ip-ranges 2001:db8::/32"
            ]
        );
    }
}
