//! What the sidecar mesh must do, written once for both ways of running it
//! ([`Interception`](super::Interception)); the test files pick the way and the durations.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{Caller, Mesh, held_serial, without};
use crate::eventually;
use crate::pilot::Pilot;

/// Waits for the client's first answer through both sidecars.
fn first_answer(mesh: &Mesh) {
    let client = mesh.client_app();
    eventually(
        "a first answer through both sidecars",
        Duration::from_secs(30),
        || client.served().then_some(()),
    );
}

/// 1000 plain-HTTP requests from the client app follow the 90/10 split
/// within 5 points, none fails, and the server app sees the client's
/// SPIFFE ID (proved by mTLS) in `x-forwarded-client-cert`.
pub fn split_and_caller_identity(mesh: &Mesh) {
    first_answer(mesh);
    let client = mesh.client_app();
    let (mut v1, mut v2, mut failed) = (0, 0, 0);
    for _ in 0..1000 {
        match client.call() {
            Ok((200, body)) if body.contains("v1") => v1 += 1,
            Ok((200, body)) if body.contains("v2") => v2 += 1,
            _ => failed += 1,
        }
    }
    eprintln!(
        "1000 requests from the client app ({:?}): v1 {v1}, v2 {v2}, failed {failed}",
        mesh.interception()
    );
    assert_eq!(failed, 0, "v1 {v1}, v2 {v2}");
    assert!(
        (850..=950).contains(&v1),
        "90/10 split within 5 points: v1 {v1}, v2 {v2}"
    );

    let seen = mesh.apps[0].requests();
    let xfcc = seen
        .last()
        .and_then(|request| request.header("x-forwarded-client-cert"))
        .unwrap_or_default()
        .to_owned();
    assert!(
        xfcc.contains("URI=spiffe://cluster.local/ns/shop/sa/client"),
        "XFCC: {xfcc:?}"
    );
}

/// Under STRICT a plain-text caller without a sidecar is refused; once the
/// namespace is PERMISSIVE it is served.
pub fn strict_refuses_plain_text_and_permissive_serves_it(mesh: &Mesh) {
    let outsider = mesh.outsider();
    assert!(
        !outsider.served(),
        "a plain-text caller without a sidecar must not be served under STRICT"
    );
    mesh.config
        .write("mesh.yaml", &mesh.config_yaml("PERMISSIVE"));
    eventually(
        "PERMISSIVE to serve plain text",
        Duration::from_secs(20),
        || outsider.served().then_some(()),
    );
}

/// `requests` calls from `client`, `pause` apart, on a thread: how many
/// failed.
fn failures_in_background(
    client: Caller,
    requests: usize,
    pause: Duration,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        (0..requests)
            .filter(|_| {
                let served = client.served();
                std::thread::sleep(pause);
                !served
            })
            .count()
    })
}

/// pilot SIGKILLed and restarted under traffic: no request fails (the data
/// plane keeps its config), and a change made after the restart (all
/// traffic to v2) takes effect.
pub fn pilot_killed_and_restarted_under_traffic(mesh: &mut Mesh) {
    let client = mesh.client_app();
    let pilot = mesh.pilot.take().expect("pilot is running");
    let (xds_addr, http_addr) = (pilot.xds_addr, pilot.http_addr);
    let traffic = failures_in_background(client.clone(), 300, Duration::from_millis(5));
    std::thread::sleep(Duration::from_millis(300));
    pilot.kill();
    std::thread::sleep(Duration::from_millis(500));
    mesh.pilot = Some(Pilot::start_on(mesh.config.path(), xds_addr, http_addr));
    let failed = traffic.join().unwrap();
    assert_eq!(failed, 0, "requests failed while pilot was down and back");

    let all_to_v2 = mesh
        .config_yaml("PERMISSIVE")
        .replace("weight: 90", "weight: 0")
        .replace("weight: 10", "weight: 100");
    mesh.config.write("mesh.yaml", &all_to_v2);
    eventually(
        "all traffic on v2 after pilot's restart",
        Duration::from_secs(20),
        || {
            let bodies: Vec<String> = (0..20)
                .filter_map(|_| client.call().ok().map(|(_, body)| body))
                .collect();
            bodies.iter().all(|body| body.contains("v2")).then_some(())
        },
    );
}

/// Steady traffic for `duration` while the agents (started with a short
/// `--secret-ttl`) rotate certificates: no request fails, and the client's
/// Envoy is handed at least two new certificates.
pub fn certificates_rotate_under_steady_traffic(mesh: &Mesh, duration: Duration) {
    first_answer(mesh);
    let client = mesh.client_app();
    let started = Instant::now();
    let (mut serials, mut requests, mut failed) = (Vec::new(), 0, 0);
    while started.elapsed() < duration {
        for _ in 0..10 {
            requests += 1;
            if !client.served() {
                failed += 1;
            }
        }
        if let Some(serial) = held_serial(&mesh.client)
            && serials.last() != Some(&serial)
        {
            serials.push(serial);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let rotations = mesh
        .client
        .envoy_stat("sds.default.update_success")
        .unwrap_or_default();
    eprintln!(
        "{requests} requests in {duration:?}, {failed} failed; client certificates held: {}, \
         Envoy's SDS updates of `default`: {rotations}",
        serials.len()
    );
    assert_eq!(failed, 0, "out of {requests}");
    assert!(
        serials.len() >= 3,
        "at least two rotations reached Envoy: {serials:?}"
    );
}

/// A server taken out as Kubernetes does it (its endpoint removed, then
/// its pod sent SIGTERM) while the client sends steadily: nothing lost.
pub fn taking_a_server_out_loses_no_request(mesh: Mesh) {
    // No VirtualService: the client balances over both servers.
    let all = without(&mesh.config_yaml("STRICT"), &["kind: VirtualService"]);
    mesh.config.write("mesh.yaml", &all);
    let client = mesh.client_app();
    eventually("both servers answering", Duration::from_secs(30), || {
        let bodies: Vec<String> = (0..20)
            .filter_map(|_| client.call().ok().map(|(_, body)| body))
            .collect();
        (bodies.iter().any(|b| b.contains("v1")) && bodies.iter().any(|b| b.contains("v2")))
            .then_some(())
    });

    let stop = Arc::new(AtomicBool::new(false));
    let traffic = std::thread::spawn({
        let (stop, client) = (stop.clone(), client.clone());
        move || {
            let (mut served, mut failed) = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                if client.served() {
                    served += 1;
                } else {
                    failed += 1;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (served, failed)
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    mesh.config
        .write("mesh.yaml", &without(&all, &["name: server-v2,"]));
    let v2_endpoint = format!("{}:", mesh.server_ip(1));
    eventually(
        "the client to stop sending to v2",
        Duration::from_secs(20),
        || {
            let (_, clusters) = mesh.client.envoy_admin("/clusters").ok()?;
            (!clusters.contains(&v2_endpoint)).then_some(())
        },
    );
    let mut servers = mesh.servers;
    servers[1].process.signal(nix::sys::signal::Signal::SIGTERM);
    let exit = servers[1].process.wait_for_exit(Duration::from_secs(15));
    assert!(exit.is_some_and(|status| status.success()), "{exit:?}");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (served, failed) = traffic.join().unwrap();
    eprintln!("while server-v2 was taken out: {served} served, {failed} failed");
    assert_eq!(failed, 0, "{served} served");
}

/// citadel stopped for `outage` while traffic flows: no request fails;
/// the agents (started so that a renewal falls due during the outage)
/// retry, and the client's certificate is renewed within `renewal_after`
/// of citadel's return.
pub fn traffic_rides_out_a_citadel_outage(
    mesh: &mut Mesh,
    outage: Duration,
    renewal_after: Duration,
) {
    first_answer(mesh);
    let client = mesh.client_app();
    let before = held_serial(&mesh.client).expect("the client's Envoy holds a certificate");
    mesh.ca.stop_citadel();
    let started = Instant::now();
    let (mut requests, mut failed) = (0, 0);
    while started.elapsed() < outage {
        requests += 1;
        if !client.served() {
            failed += 1;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    mesh.ca.start_citadel("ca");
    let renewed = eventually(
        "a renewed certificate once citadel is back",
        renewal_after,
        || held_serial(&mesh.client).filter(|serial| *serial != before),
    );
    eprintln!(
        "citadel away {outage:?}: {requests} requests, {failed} failed; \
         certificate {before} -> {renewed}"
    );
    assert_eq!(failed, 0, "out of {requests} during the outage");
    assert!(client.served());
}
