//! `virtualOutbound`: the listener iptables redirects every outbound
//! connection to. Envoy hands each connection to the listener of its original
//! destination (`use_original_dst`); what none takes stays here and goes
//! where the outbound traffic policy says.

use trireme_proto::envoy::pb::envoy::config::core::v3::TrafficDirection;
use trireme_proto::envoy::pb::envoy::config::listener::v3::{
    FilterChain, FilterChainMatch, Listener,
};
use trireme_proto::envoy::pb::google::protobuf::{BoolValue, UInt32Value};

use super::plan::wildcard_address;
use super::unknown_traffic::UnknownTraffic;
use crate::model::Proxy;
use crate::translate::listeners::socket_address;

/// Istio's name and port for the outbound capture listener.
pub const VIRTUAL_OUTBOUND_LISTENER: &str = "virtualOutbound";
pub const VIRTUAL_OUTBOUND_PORT: u32 = 15001;

pub(super) fn virtual_outbound(proxy: &Proxy, unknown: &UnknownTraffic) -> Listener {
    Listener {
        name: VIRTUAL_OUTBOUND_LISTENER.to_string(),
        address: Some(socket_address(
            wildcard_address(proxy),
            VIRTUAL_OUTBOUND_PORT,
        )),
        use_original_dst: Some(BoolValue { value: true }),
        filter_chains: vec![
            loop_guard(),
            unknown.named_filter_chain("virtualOutbound-catchall-tcp"),
        ],
        traffic_direction: TrafficDirection::Outbound as i32,
        ..Default::default()
    }
}

/// Connections addressed to the capture port itself would be passed on to
/// it again and again; they are dropped.
fn loop_guard() -> FilterChain {
    let blackhole = UnknownTraffic::blocked();
    FilterChain {
        filter_chain_match: Some(FilterChainMatch {
            destination_port: Some(UInt32Value {
                value: VIRTUAL_OUTBOUND_PORT,
            }),
            ..Default::default()
        }),
        ..blackhole.named_filter_chain("virtualOutbound-blackhole")
    }
}
