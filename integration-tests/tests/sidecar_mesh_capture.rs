//! The sidecar mesh as Istio runs it (needs root; skipped otherwise): each
//! pod in its own network namespace on a bridge, `agent init`'s iptables
//! rules capturing its traffic, `agent proxy sidecar` running as the proxy
//! user 1337, and the client app calling the service's virtual IP on port
//! 80 in plain HTTP, knowing nothing of the mesh. pilot and citadel listen
//! on the bridge, the node's address. Full-length durations.

use std::time::Duration;

use integration_tests::require_root;
use integration_tests::sidecar_mesh::{Interception, Mesh, scenarios};

const MODE: Interception = Interception::Redirect;

#[test]
fn captured_plain_http_becomes_mtls_between_sidecars_and_follows_the_split() {
    require_root!();
    let mut mesh = Mesh::start(MODE, &[]);
    scenarios::split_and_caller_identity(&mesh);
    scenarios::strict_refuses_plain_text_and_permissive_serves_it(&mesh);
    scenarios::pilot_killed_and_restarted_under_traffic(&mut mesh);
}

#[test]
fn sixty_second_certificates_rotate_under_three_minutes_of_traffic() {
    require_root!();
    // Istio's half-life rule renews a 60 s certificate every ~30 s.
    let mesh = Mesh::start(MODE, &["--secret-ttl", "60s"]);
    scenarios::certificates_rotate_under_steady_traffic(&mesh, Duration::from_secs(180));
}

#[test]
fn taking_a_server_out_loses_no_captured_request() {
    require_root!();
    scenarios::taking_a_server_out_loses_no_request(Mesh::start(MODE, &[]));
}

#[test]
fn traffic_rides_out_a_two_minute_citadel_outage() {
    require_root!();
    // 10-minute certificates renewed when 90% of their life remains
    // (Istio's SECRET_GRACE_PERIOD_RATIO), so a renewal falls due a minute
    // in, inside the outage; it fails, retries with backoff (30 s at most)
    // and succeeds once citadel is back.
    let mut mesh = Mesh::start(
        MODE,
        &["--secret-ttl", "10m", "--secret-grace-period-ratio", "0.9"],
    );
    scenarios::traffic_rides_out_a_citadel_outage(
        &mut mesh,
        Duration::from_secs(120),
        Duration::from_secs(60),
    );
}
