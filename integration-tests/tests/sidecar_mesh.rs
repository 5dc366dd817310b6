//! The sidecar mesh without root (interception mode NONE): every workload
//! its own loopback address (127.0.0.3x), as pods have their own IPs, and
//! the client app calling its sidecar's egress listener. Durations are
//! scaled down; `sidecar_mesh_capture` runs the full-length versions under
//! iptables capture as root.

use std::time::Duration;

use integration_tests::sidecar_mesh::{Interception, Mesh, scenarios};

const MODE: Interception = Interception::None;

#[test]
fn plain_http_from_the_app_becomes_mtls_between_sidecars_and_follows_the_split() {
    let mut mesh = Mesh::start(MODE, &[]);
    scenarios::split_and_caller_identity(&mesh);
    scenarios::strict_refuses_plain_text_and_permissive_serves_it(&mesh);
    scenarios::pilot_killed_and_restarted_under_traffic(&mut mesh);
}

#[test]
fn certificates_rotate_under_steady_traffic_without_a_failed_request() {
    // An 8 s lifetime renews every ~4 s, Istio's half-life rule.
    let mesh = Mesh::start(MODE, &["--secret-ttl", "8s"]);
    scenarios::certificates_rotate_under_steady_traffic(&mesh, Duration::from_secs(14));
}

#[test]
fn taking_a_server_out_loses_no_client_request() {
    scenarios::taking_a_server_out_loses_no_request(Mesh::start(MODE, &[]));
}

#[test]
fn traffic_rides_out_a_citadel_outage_and_certificates_renew_when_it_is_back() {
    // A 12 s certificate renews at ~6 s, so whenever citadel goes away the
    // current one has at least ~6 s left: a 5 s outage makes renewals fail
    // and retry while it still holds.
    let mut mesh = Mesh::start(MODE, &["--secret-ttl", "12s"]);
    scenarios::traffic_rides_out_a_citadel_outage(
        &mut mesh,
        Duration::from_secs(5),
        Duration::from_secs(20),
    );
}
