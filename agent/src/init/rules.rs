//! The capture rules as data: a pure function from [`CaptureConfig`] to the
//! ordered nat-table rules Istio's init container (istio-iptables, REDIRECT
//! mode) would install, so the same pod annotations capture the same traffic.
//!
//! Rules render in the form `iptables-save` prints them, so what `--dry-run`
//! shows can be compared line for line with what ends up installed.

use std::{fmt, net::Ipv4Addr};

use super::config::{CaptureConfig, Cidr, INBOUND_TUNNEL_PORT, PROXY_OWN_INBOUND_PORTS, Selection};

/// Where Envoy's inbound passthrough cluster binds its upstream connections
/// to the app, so that they can be told apart from the app's own traffic.
const INBOUND_PASSTHROUGH_SOURCE: Cidr = Cidr::host_v4(Ipv4Addr::new(127, 0, 0, 6));
const LOCALHOST: Cidr = Cidr::host_v4(Ipv4Addr::LOCALHOST);
const LOOPBACK_INTERFACE: &str = "lo";

/// nat-table chains the rules live in or jump from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chain {
    Prerouting,
    Output,
    /// Decides which inbound connections go to the proxy.
    IstioInbound,
    /// Sends a connection to the proxy's inbound listener.
    IstioInRedirect,
    /// Decides which outbound connections go to the proxy.
    IstioOutput,
    /// Sends a connection to the proxy's outbound listener.
    IstioRedirect,
}

impl Chain {
    /// The chains `agent init` creates, flushes and deletes. They carry
    /// Istio's names so that runbooks, dashboards and `iptables-save` habits
    /// carry over, and so that an Istio-written capture is replaced cleanly.
    pub const OWNED: [Chain; 4] = [
        Chain::IstioInbound,
        Chain::IstioInRedirect,
        Chain::IstioOutput,
        Chain::IstioRedirect,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Chain::Prerouting => "PREROUTING",
            Chain::Output => "OUTPUT",
            Chain::IstioInbound => "ISTIO_INBOUND",
            Chain::IstioInRedirect => "ISTIO_IN_REDIRECT",
            Chain::IstioOutput => "ISTIO_OUTPUT",
            Chain::IstioRedirect => "ISTIO_REDIRECT",
        }
    }

    pub fn is_owned(name: &str) -> bool {
        Self::OWNED.iter().any(|chain| chain.name() == name)
    }
}

impl fmt::Display for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a matching packet does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Leave the chain: the connection is not captured (by this chain).
    Return,
    Jump(Chain),
    /// Rewrite the destination to this local port, where Envoy listens.
    Redirect {
        to_port: u16,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Uid(u32),
    Gid(u32),
}

/// A match, possibly inverted (`!`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match<T> {
    pub value: T,
    pub negated: bool,
}

impl<T> Match<T> {
    fn is(value: T) -> Self {
        Self {
            value,
            negated: false,
        }
    }

    fn is_not(value: T) -> Self {
        Self {
            value,
            negated: true,
        }
    }

    fn bang(&self) -> &'static str {
        if self.negated { "! " } else { "" }
    }
}

/// One `-A` rule. Fields are the few matches capture needs; each is rendered
/// in iptables-save's own order whatever order they were set in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub chain: Chain,
    pub source: Option<Cidr>,
    pub destination: Option<Match<Cidr>>,
    pub out_interface: Option<&'static str>,
    pub tcp: bool,
    pub destination_port: Option<Match<u16>>,
    pub owner: Option<Match<Owner>>,
    pub target: Target,
}

impl Rule {
    fn new(chain: Chain, target: Target) -> Self {
        Self {
            chain,
            source: None,
            destination: None,
            out_interface: None,
            tcp: false,
            destination_port: None,
            owner: None,
            target,
        }
    }

    fn tcp(mut self) -> Self {
        self.tcp = true;
        self
    }

    fn dport(mut self, port: Match<u16>) -> Self {
        // A port match only exists for a protocol with ports.
        self.tcp = true;
        self.destination_port = Some(port);
        self
    }

    fn source(mut self, cidr: Cidr) -> Self {
        self.source = Some(cidr);
        self
    }

    fn destination(mut self, cidr: Match<Cidr>) -> Self {
        self.destination = Some(cidr);
        self
    }

    fn out_loopback(mut self) -> Self {
        self.out_interface = Some(LOOPBACK_INTERFACE);
        self
    }

    fn owner(mut self, owner: Match<Owner>) -> Self {
        self.owner = Some(owner);
        self
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "-A {}", self.chain)?;
        if let Some(source) = &self.source {
            write!(f, " -s {source}")?;
        }
        if let Some(destination) = &self.destination {
            write!(f, " {}-d {}", destination.bang(), destination.value)?;
        }
        if let Some(interface) = self.out_interface {
            write!(f, " -o {interface}")?;
        }
        if self.tcp {
            f.write_str(" -p tcp")?;
        }
        if let Some(port) = &self.destination_port {
            write!(f, " -m tcp {}--dport {}", port.bang(), port.value)?;
        }
        if let Some(owner) = &self.owner {
            let (option, id) = match owner.value {
                Owner::Uid(uid) => ("--uid-owner", uid),
                Owner::Gid(gid) => ("--gid-owner", gid),
            };
            write!(f, " -m owner {}{option} {id}", owner.bang())?;
        }
        match self.target {
            Target::Return => f.write_str(" -j RETURN"),
            Target::Jump(chain) => write!(f, " -j {chain}"),
            Target::Redirect { to_port } => write!(f, " -j REDIRECT --to-ports {to_port}"),
        }
    }
}

/// The rules, in order: the contents of each owned chain, then the jumps
/// into them from PREROUTING and OUTPUT.
pub fn capture_rules(config: &CaptureConfig) -> Vec<Rule> {
    let mut rules = inbound_rules(config);
    rules.push(
        Rule::new(
            Chain::IstioInRedirect,
            Target::Redirect {
                to_port: config.inbound_capture_port,
            },
        )
        .tcp(),
    );
    rules.push(
        Rule::new(
            Chain::IstioRedirect,
            Target::Redirect {
                to_port: config.outbound_capture_port,
            },
        )
        .tcp(),
    );
    rules.extend(outbound_rules(config));

    let captures_inbound = config.inbound_ports != Selection::Only(Vec::new());
    if captures_inbound {
        rules.push(Rule::new(Chain::Prerouting, Target::Jump(Chain::IstioInbound)).tcp());
    }
    rules.push(Rule::new(Chain::Output, Target::Jump(Chain::IstioOutput)).tcp());
    rules
}

fn inbound_rules(config: &CaptureConfig) -> Vec<Rule> {
    let mut skipped: Vec<u16> = PROXY_OWN_INBOUND_PORTS.to_vec();
    for port in &config.exclude_inbound_ports {
        if !skipped.contains(port) {
            skipped.push(*port);
        }
    }
    // Skips come first, so a port both excluded and included is left alone:
    // the proxy's own ports must never loop back into its inbound listener.
    let mut rules: Vec<Rule> = skipped
        .into_iter()
        .map(|port| Rule::new(Chain::IstioInbound, Target::Return).dport(Match::is(port)))
        .collect();
    let capture = Target::Jump(Chain::IstioInRedirect);
    match &config.inbound_ports {
        Selection::All => rules.push(Rule::new(Chain::IstioInbound, capture).tcp()),
        Selection::Only(ports) => rules.extend(
            ports
                .iter()
                .map(|port| Rule::new(Chain::IstioInbound, capture).dport(Match::is(*port))),
        ),
    }
    rules
}

fn outbound_rules(config: &CaptureConfig) -> Vec<Rule> {
    let chain = Chain::IstioOutput;
    let mut rules = Vec::new();

    // Excluded ports go first: even the proxy's calls to its own pod on such
    // a port must not be turned into inbound captures.
    for port in &config.exclude_outbound_ports {
        rules.push(Rule::new(chain, Target::Return).dport(Match::is(*port)));
    }

    // Envoy's inbound passthrough connects to the app from 127.0.0.6; that
    // connection has already been through the proxy once.
    rules.push(
        Rule::new(chain, Target::Return)
            .source(INBOUND_PASSTHROUGH_SOURCE)
            .out_loopback(),
    );

    // An included range in loopback space asks for loopback traffic to be
    // captured, so the rule that leaves the app's loopback traffic alone is
    // dropped (as Istio does).
    let loopback_included = matches!(
        &config.outbound_ip_ranges,
        Selection::Only(cidrs) if cidrs.iter().any(|cidr| cidr.is_ipv4() && cidr.is_loopback())
    );
    let owners = config
        .proxy_uids
        .iter()
        .map(|uid| Owner::Uid(*uid))
        .chain(config.proxy_gids.iter().map(|gid| Owner::Gid(*gid)));
    for owner in owners {
        // The proxy calling its own pod IP (the app reached through a
        // Service VIP that resolved to this pod) leaves over lo and must
        // still pass the inbound side of the proxy, except the HBONE port.
        rules.push(
            Rule::new(chain, Target::Jump(Chain::IstioInRedirect))
                .destination(Match::is_not(LOCALHOST))
                .out_loopback()
                .dport(Match::is_not(INBOUND_TUNNEL_PORT))
                .owner(Match::is(owner)),
        );
        // The app talking to itself over lo is not mesh traffic.
        if !loopback_included {
            rules.push(
                Rule::new(chain, Target::Return)
                    .out_loopback()
                    .owner(Match::is_not(owner)),
            );
        }
        // Everything else the proxy sends is already proxied; capturing it
        // again would loop forever.
        rules.push(Rule::new(chain, Target::Return).owner(Match::is(owner)));
    }

    // Apps and sidecar-aware clients that use localhost explicitly.
    rules.push(Rule::new(chain, Target::Return).destination(Match::is(LOCALHOST)));

    // Exclusions before inclusions, so an excluded range inside an included
    // one (or inside `*`) is left alone.
    for cidr in config
        .exclude_outbound_ip_ranges
        .iter()
        .filter(|c| c.is_ipv4())
    {
        rules.push(Rule::new(chain, Target::Return).destination(Match::is(*cidr)));
    }
    let capture = Target::Jump(Chain::IstioRedirect);
    // Included ports are captured whatever the included ranges say; an
    // excluded range still wins, as in Istio.
    for port in &config.outbound_ports {
        rules.push(Rule::new(chain, capture).dport(Match::is(*port)));
    }
    match &config.outbound_ip_ranges {
        Selection::All => rules.push(Rule::new(chain, capture)),
        Selection::Only(cidrs) => {
            for cidr in cidrs.iter().filter(|c| c.is_ipv4()) {
                rules.push(Rule::new(chain, capture).destination(Match::is(*cidr)));
            }
        }
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::config::{parse_cidr_selection, parse_cidrs, parse_port_selection};

    fn render(config: &CaptureConfig) -> Vec<String> {
        capture_rules(config).iter().map(Rule::to_string).collect()
    }

    fn chain(config: &CaptureConfig, chain: Chain) -> Vec<String> {
        capture_rules(config)
            .iter()
            .filter(|rule| rule.chain == chain)
            .map(Rule::to_string)
            .collect()
    }

    fn position(rules: &[String], wanted: &str) -> usize {
        rules
            .iter()
            .position(|rule| rule == wanted)
            .unwrap_or_else(|| panic!("no rule {wanted:?} in {rules:#?}"))
    }

    #[test]
    fn default_config_captures_everything_but_the_proxy() {
        assert_eq!(
            render(&CaptureConfig::default()),
            [
                "-A ISTIO_INBOUND -p tcp -m tcp --dport 15008 -j RETURN",
                "-A ISTIO_INBOUND -p tcp -m tcp --dport 15090 -j RETURN",
                "-A ISTIO_INBOUND -p tcp -m tcp --dport 15021 -j RETURN",
                "-A ISTIO_INBOUND -p tcp -m tcp --dport 15020 -j RETURN",
                "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT",
                "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
                "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
                "-A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN",
                "-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT",
                "-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN",
                "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN",
                "-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m tcp ! --dport 15008 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT",
                "-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN",
                "-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN",
                "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN",
                "-A ISTIO_OUTPUT -j ISTIO_REDIRECT",
                "-A PREROUTING -p tcp -j ISTIO_INBOUND",
                "-A OUTPUT -p tcp -j ISTIO_OUTPUT",
            ]
        );
    }

    #[test]
    fn proxy_traffic_returns_before_anything_is_redirected() {
        let rules = chain(&CaptureConfig::default(), Chain::IstioOutput);
        let uid_return = position(
            &rules,
            "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN",
        );
        let gid_return = position(
            &rules,
            "-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN",
        );
        let redirect = position(&rules, "-A ISTIO_OUTPUT -j ISTIO_REDIRECT");
        assert!(uid_return < redirect && gid_return < redirect);
        assert_eq!(redirect, rules.len() - 1, "capture-all must come last");
    }

    #[test]
    fn capture_ports_and_proxy_ids_are_configurable() {
        let config = CaptureConfig {
            proxy_uids: vec![2000],
            proxy_gids: vec![3000],
            inbound_capture_port: 16006,
            outbound_capture_port: 16001,
            ..CaptureConfig::default()
        };
        let rules = render(&config);
        for wanted in [
            "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 16006",
            "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 16001",
            "-A ISTIO_OUTPUT -m owner --uid-owner 2000 -j RETURN",
            "-A ISTIO_OUTPUT -m owner --gid-owner 3000 -j RETURN",
        ] {
            position(&rules, wanted);
        }
        assert!(
            !rules.iter().any(|rule| rule.contains("1337")),
            "{rules:#?}"
        );
    }

    #[test]
    fn every_listed_proxy_uid_is_exempt() {
        let config = CaptureConfig {
            proxy_uids: vec![1337, 1338],
            ..CaptureConfig::default()
        };
        let rules = chain(&config, Chain::IstioOutput);
        position(
            &rules,
            "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN",
        );
        position(
            &rules,
            "-A ISTIO_OUTPUT -m owner --uid-owner 1338 -j RETURN",
        );
    }

    #[test]
    fn listed_inbound_ports_are_the_only_ones_captured() {
        let config = CaptureConfig {
            inbound_ports: parse_port_selection("9080,8443").unwrap(),
            ..CaptureConfig::default()
        };
        assert_eq!(
            chain(&config, Chain::IstioInbound),
            [
                "-A ISTIO_INBOUND -p tcp -m tcp --dport 15008 -j RETURN",
                "-A ISTIO_INBOUND -p tcp -m tcp --dport 15090 -j RETURN",
                "-A ISTIO_INBOUND -p tcp -m tcp --dport 15021 -j RETURN",
                "-A ISTIO_INBOUND -p tcp -m tcp --dport 15020 -j RETURN",
                "-A ISTIO_INBOUND -p tcp -m tcp --dport 9080 -j ISTIO_IN_REDIRECT",
                "-A ISTIO_INBOUND -p tcp -m tcp --dport 8443 -j ISTIO_IN_REDIRECT",
            ]
        );
        assert_eq!(
            chain(&config, Chain::Prerouting),
            ["-A PREROUTING -p tcp -j ISTIO_INBOUND"]
        );
    }

    #[test]
    fn empty_inbound_ports_capture_no_inbound_traffic() {
        let config = CaptureConfig {
            inbound_ports: parse_port_selection("").unwrap(),
            ..CaptureConfig::default()
        };
        assert!(chain(&config, Chain::Prerouting).is_empty());
        assert!(
            !chain(&config, Chain::IstioInbound)
                .iter()
                .any(|rule| rule.ends_with("-j ISTIO_IN_REDIRECT"))
        );
        // Outbound capture is unaffected.
        assert_eq!(
            chain(&config, Chain::Output),
            ["-A OUTPUT -p tcp -j ISTIO_OUTPUT"]
        );
    }

    #[test]
    fn excluded_inbound_ports_return_before_the_capture() {
        let config = CaptureConfig {
            exclude_inbound_ports: vec![22, 15020, 3306],
            ..CaptureConfig::default()
        };
        assert_eq!(
            chain(&config, Chain::IstioInbound),
            [
                "-A ISTIO_INBOUND -p tcp -m tcp --dport 15008 -j RETURN",
                "-A ISTIO_INBOUND -p tcp -m tcp --dport 15090 -j RETURN",
                "-A ISTIO_INBOUND -p tcp -m tcp --dport 15021 -j RETURN",
                "-A ISTIO_INBOUND -p tcp -m tcp --dport 15020 -j RETURN",
                "-A ISTIO_INBOUND -p tcp -m tcp --dport 22 -j RETURN",
                "-A ISTIO_INBOUND -p tcp -m tcp --dport 3306 -j RETURN",
                "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT",
            ]
        );
    }

    #[test]
    fn listed_outbound_ranges_replace_capture_all() {
        let config = CaptureConfig {
            outbound_ip_ranges: parse_cidr_selection("10.96.0.0/12,10.244.0.0/16").unwrap(),
            ..CaptureConfig::default()
        };
        let rules = chain(&config, Chain::IstioOutput);
        assert_eq!(
            rules[rules.len() - 3..],
            [
                "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN",
                "-A ISTIO_OUTPUT -d 10.96.0.0/12 -j ISTIO_REDIRECT",
                "-A ISTIO_OUTPUT -d 10.244.0.0/16 -j ISTIO_REDIRECT",
            ]
        );
        assert!(!rules.contains(&"-A ISTIO_OUTPUT -j ISTIO_REDIRECT".to_string()));
    }

    #[test]
    fn empty_outbound_ranges_redirect_nothing_by_address() {
        let config = CaptureConfig {
            outbound_ip_ranges: parse_cidr_selection("").unwrap(),
            ..CaptureConfig::default()
        };
        let rules = chain(&config, Chain::IstioOutput);
        assert_eq!(
            rules.last().map(String::as_str),
            Some("-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN")
        );
        assert!(!rules.iter().any(|rule| rule.ends_with("-j ISTIO_REDIRECT")));
    }

    #[test]
    fn excluded_ranges_return_before_included_ones() {
        let config = CaptureConfig {
            outbound_ip_ranges: parse_cidr_selection("10.0.0.0/8").unwrap(),
            exclude_outbound_ip_ranges: parse_cidrs("10.1.0.0/16,169.254.169.254/32").unwrap(),
            ..CaptureConfig::default()
        };
        let rules = chain(&config, Chain::IstioOutput);
        assert_eq!(
            rules[rules.len() - 3..],
            [
                "-A ISTIO_OUTPUT -d 10.1.0.0/16 -j RETURN",
                "-A ISTIO_OUTPUT -d 169.254.169.254/32 -j RETURN",
                "-A ISTIO_OUTPUT -d 10.0.0.0/8 -j ISTIO_REDIRECT",
            ]
        );
        // And after the proxy's own traffic has been let through.
        let uid_return = position(
            &rules,
            "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN",
        );
        let exclusion = position(&rules, "-A ISTIO_OUTPUT -d 10.1.0.0/16 -j RETURN");
        assert!(uid_return < exclusion);
    }

    #[test]
    fn included_outbound_ports_are_captured_outside_included_ranges() {
        let config = CaptureConfig {
            outbound_ip_ranges: parse_cidr_selection("").unwrap(),
            exclude_outbound_ip_ranges: parse_cidrs("192.168.0.0/16").unwrap(),
            outbound_ports: vec![5432, 6379],
            ..CaptureConfig::default()
        };
        let rules = chain(&config, Chain::IstioOutput);
        assert_eq!(
            rules[rules.len() - 3..],
            [
                "-A ISTIO_OUTPUT -d 192.168.0.0/16 -j RETURN",
                "-A ISTIO_OUTPUT -p tcp -m tcp --dport 5432 -j ISTIO_REDIRECT",
                "-A ISTIO_OUTPUT -p tcp -m tcp --dport 6379 -j ISTIO_REDIRECT",
            ]
        );
    }

    #[test]
    fn excluded_outbound_ports_return_first() {
        let config = CaptureConfig {
            exclude_outbound_ports: vec![3306, 6379],
            ..CaptureConfig::default()
        };
        let rules = chain(&config, Chain::IstioOutput);
        assert_eq!(
            rules[..3],
            [
                "-A ISTIO_OUTPUT -p tcp -m tcp --dport 3306 -j RETURN",
                "-A ISTIO_OUTPUT -p tcp -m tcp --dport 6379 -j RETURN",
                "-A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN",
            ]
        );
    }

    #[test]
    fn an_included_loopback_range_captures_the_apps_loopback_traffic() {
        let config = CaptureConfig {
            outbound_ip_ranges: parse_cidr_selection("127.1.2.3/32").unwrap(),
            ..CaptureConfig::default()
        };
        let rules = chain(&config, Chain::IstioOutput);
        assert!(
            !rules.iter().any(|rule| rule.contains("-o lo -m owner !")),
            "{rules:#?}"
        );
        position(&rules, "-A ISTIO_OUTPUT -d 127.1.2.3/32 -j ISTIO_REDIRECT");
    }

    #[test]
    fn ipv6_ranges_do_not_reach_ipv4_rules() {
        let config = CaptureConfig {
            outbound_ip_ranges: parse_cidr_selection("fd00::/8,10.0.0.0/8").unwrap(),
            exclude_outbound_ip_ranges: parse_cidrs("2001:db8::/32").unwrap(),
            ..CaptureConfig::default()
        };
        let rules = render(&config);
        assert!(!rules.iter().any(|rule| rule.contains(':')), "{rules:#?}");
        position(&rules, "-A ISTIO_OUTPUT -d 10.0.0.0/8 -j ISTIO_REDIRECT");
    }
}
