//! Envoy resources render as the proto3 JSON Envoy's own config dump uses.

use trireme_proto::envoy::pb::envoy::config::{
    cluster::v3::{Cluster, cluster::DiscoveryType},
    core::v3::{AggregatedConfigSource, ConfigSource, config_source::ConfigSourceSpecifier},
};
use trireme_proto::json::{message_to_json, to_json};

#[test]
fn cluster_renders_with_camel_case_names_and_enum_names() {
    let cluster = Cluster {
        name: "outbound|80||reviews.default.svc.cluster.local".into(),
        cluster_discovery_type: Some(
            trireme_proto::envoy::pb::envoy::config::cluster::v3::cluster::ClusterDiscoveryType::Type(
                DiscoveryType::Eds as i32,
            ),
        ),
        eds_cluster_config: Some(
            trireme_proto::envoy::pb::envoy::config::cluster::v3::cluster::EdsClusterConfig {
                eds_config: Some(ConfigSource {
                    config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
                    ..Default::default()
                }),
                service_name: String::new(),
            },
        ),
        connect_timeout: Some(trireme_proto::envoy::pb::google::protobuf::Duration {
            seconds: 10,
            nanos: 0,
        }),
        ..Default::default()
    };
    let json = message_to_json(&cluster).unwrap();
    assert_eq!(
        json["name"],
        "outbound|80||reviews.default.svc.cluster.local"
    );
    assert_eq!(json["type"], "EDS");
    assert_eq!(json["connectTimeout"], "10s");
    assert_eq!(
        json["edsClusterConfig"]["edsConfig"]["ads"],
        serde_json::json!({})
    );
}

#[test]
fn unknown_types_are_an_error_not_a_panic() {
    assert!(to_json("envoy.config.cluster.v3.NoSuchThing", &[]).is_err());
    assert!(
        to_json(
            "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            &[0xff]
        )
        .is_err()
    );
}
