//! Which outbound port listeners a sidecar gets and what each carries,
//! before any Envoy type: walking the egress listeners of the proxy's scope,
//!
//! - HTTP services share one listener per port, answering by RDS;
//! - TCP and TLS services with addresses get one listener per address
//!   (a CIDR becomes a destination-range chain of the port's wildcard
//!   listener); without one, TLS services are told apart by SNI and the first
//!   TCP service (by host name) takes the rest of the port;
//! - an egress listener with a port makes that port's listener from its
//!   own services, with its own protocol, and the catch-all egress listener
//!   leaves the port alone;
//! - listeners of egress listeners that are not captured (interception
//!   NONE) bind their address for real, and everything on one port shares it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::model::scope::{EgressPort, EgressScope};
use crate::model::service::ServiceAddress;
use crate::model::{MeshSnapshot, Protocol, Proxy, ProxyScope, Service};
use crate::translate::names::sidecar_outbound_route_name;

use super::l4_routes::{self, L4Destination};

/// Where a port listener listens.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum ListenAddress {
    /// Fed by `virtualOutbound` (bind_to_port false): every address when
    /// `None`, else connections to that one address.
    Captured(Option<String>),
    /// Bound for real: the application connects to it.
    Bound(String),
}

/// All addresses, in the proxy's IP family (Istio without dual stack).
pub(super) fn wildcard_address(proxy: &Proxy) -> &'static str {
    if proxy.ipv6_only() { "::" } else { "0.0.0.0" }
}

/// Where listeners of an uncaptured proxy bind unless told otherwise.
fn localhost_address(proxy: &Proxy) -> &'static str {
    if proxy.ipv6_only() {
        "::1"
    } else {
        "127.0.0.1"
    }
}

/// One planned port listener.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct PortListener {
    pub address: ListenAddress,
    pub port: u32,
    /// RDS name of its HTTP filter chain, if HTTP services use the port.
    pub http_route: Option<String>,
    /// TLS services without addresses, by SNI.
    pub sni: Vec<SniChain>,
    /// TCP services addressed by ranges.
    pub ranges: Vec<RangeChain>,
    /// Where everything else goes (a TCP service).
    pub tcp: Option<L4Destination>,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct SniChain {
    pub server_name: String,
    pub destination: L4Destination,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct RangeChain {
    pub network: IpAddr,
    pub prefix_len: u32,
    pub destination: L4Destination,
}

impl PortListener {
    fn new(address: ListenAddress, port: u32) -> PortListener {
        PortListener {
            address,
            port,
            http_route: None,
            sni: Vec::new(),
            ranges: Vec::new(),
            tcp: None,
        }
    }

    /// Whether the listener takes connections to every address of its port,
    /// so that traffic no chain claims must go somewhere.
    pub fn is_wildcard(&self) -> bool {
        self.address == ListenAddress::Captured(None)
    }
}

/// The port listeners of `scope`, by port, then address.
pub(super) fn port_listeners(
    snapshot: &MeshSnapshot,
    proxy: &Proxy,
    scope: &ProxyScope,
) -> Vec<PortListener> {
    let declared_ports: BTreeSet<u32> = scope
        .egress_listeners()
        .iter()
        .filter_map(|egress| egress.port.as_ref().map(|p| p.number))
        .collect();
    let mut planner = Planner {
        snapshot,
        proxy,
        listeners: BTreeMap::new(),
    };
    for egress in scope.egress_listeners() {
        match &egress.port {
            Some(port) => planner.add_declared_port(egress, port),
            None => planner.add_service_ports(egress, &declared_ports),
        }
    }
    planner.listeners.into_values().collect()
}

struct Planner<'a> {
    snapshot: &'a MeshSnapshot,
    proxy: &'a Proxy,
    listeners: BTreeMap<(u32, ListenAddress), PortListener>,
}

impl Planner<'_> {
    /// An egress listener with a port: its services on that port, spoken in
    /// the listener's protocol. An HTTP one exists even without services, for
    /// its VirtualServices' hosts.
    fn add_declared_port(&mut self, egress: &EgressScope, port: &EgressPort) {
        let base = self.base_address(egress);
        if port.protocol.is_http() {
            self.add_http(egress, &base, port.number);
        }
        let snapshot = self.snapshot;
        for service in egress
            .services(snapshot)
            .filter(|s| s.port(port.number).is_some())
        {
            self.add(egress, &base, service, port.number, port.protocol);
        }
    }

    /// The catch-all egress listener: every port of every service, except
    /// ports an egress listener declares.
    fn add_service_ports(&mut self, egress: &EgressScope, declared_ports: &BTreeSet<u32>) {
        let base = self.base_address(egress);
        let snapshot = self.snapshot;
        for service in egress.services(snapshot) {
            for port in &service.ports {
                if !declared_ports.contains(&port.number) {
                    self.add(egress, &base, service, port.number, port.protocol);
                }
            }
        }
    }

    fn base_address(&self, egress: &EgressScope) -> ListenAddress {
        if egress.captured(self.proxy) {
            ListenAddress::Captured(egress.bind.clone())
        } else {
            let localhost = localhost_address(self.proxy);
            ListenAddress::Bound(egress.bind.clone().unwrap_or_else(|| localhost.to_string()))
        }
    }

    fn listener(&mut self, address: ListenAddress, port: u32) -> &mut PortListener {
        self.listeners
            .entry((port, address.clone()))
            .or_insert_with(|| PortListener::new(address, port))
    }

    fn add_http(&mut self, egress: &EgressScope, base: &ListenAddress, port: u32) {
        self.listener(base.clone(), port)
            .http_route
            .get_or_insert_with(|| sidecar_outbound_route_name(egress.bind.as_deref(), port));
    }

    fn add(
        &mut self,
        egress: &EgressScope,
        base: &ListenAddress,
        service: &Service,
        port: u32,
        protocol: Protocol,
    ) {
        if protocol.is_http() {
            self.add_http(egress, base, port);
            return;
        }
        let tls = matches!(protocol, Protocol::Tls | Protocol::Https);
        let destination =
            l4_routes::destination(self.snapshot, self.proxy, egress, service, port, tls);
        let addresses: Vec<ServiceAddress> = service.parsed_addresses().collect();
        if *base == ListenAddress::Captured(None) && !addresses.is_empty() {
            for address in addresses {
                self.add_addressed(port, address, destination.clone());
            }
        } else if tls {
            let listener = self.listener(base.clone(), port);
            if !listener
                .sni
                .iter()
                .any(|c| c.server_name == service.hostname)
            {
                listener.sni.push(SniChain {
                    server_name: service.hostname.clone(),
                    destination,
                });
            }
        } else {
            self.add_catch_all(base, port, service, destination);
        }
    }

    /// A TCP or TLS service on one of its addresses.
    fn add_addressed(&mut self, port: u32, address: ServiceAddress, destination: L4Destination) {
        match address {
            ServiceAddress::Ip(ip) => {
                let listener = self.listener(ListenAddress::Captured(Some(ip.to_string())), port);
                listener.tcp.get_or_insert(destination);
            }
            ServiceAddress::Range {
                network,
                prefix_len,
            } => {
                let listener = self.listener(ListenAddress::Captured(None), port);
                let taken = listener
                    .ranges
                    .iter()
                    .any(|r| r.network == network && r.prefix_len == prefix_len);
                if !taken {
                    listener.ranges.push(RangeChain {
                        network,
                        prefix_len,
                        destination,
                    });
                }
            }
        }
    }

    /// A TCP service with nothing to tell its connections apart: it takes
    /// the port, unless another did first.
    fn add_catch_all(
        &mut self,
        base: &ListenAddress,
        port: u32,
        service: &Service,
        destination: L4Destination,
    ) {
        let listener = self.listener(base.clone(), port);
        match &listener.tcp {
            None => listener.tcp = Some(destination),
            Some(taken) if *taken != destination => tracing::debug!(
                service = %service.hostname,
                port,
                kept = %taken.stat_prefix,
                "TCP services without addresses share a port; the first keeps it"
            ),
            Some(_) => {}
        }
    }
}
