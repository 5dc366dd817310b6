//! S10: real Envoys. Twenty stock Envoys, each an ingress gateway (a
//! `router` node labelled `istio: ingressgateway`, delta ADS straight to
//! pilot as the demo's gateway has it), hold the routes of a mesh's
//! gateway-bound VirtualServices; one VirtualService is edited on the bus
//! and every Envoy's admin API is watched until it has applied the new
//! route: the time from the edit to the last Envoy's update.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use event_bus::Bus;
use futures::future::join_all;
use mesh_config::AnyResource;
use perf::mesh_gen::{ConfigBus, MeshShape};
use perf::report::Summary;
use serde_json::{Value, json};

use crate::outcome::{Outcome, Row, median_p99_ms};
use crate::processes::{Binaries, Nats, Pilot, Running, envoy_bin, free_port, unix_ns, wait_for};
use crate::scenarios::Scale;

const ENVOYS: usize = 20;
/// Time for every Envoy to start and take its first routes (2 cores).
const CONFIGURED_LIMIT: Duration = Duration::from_secs(120);
/// Time for every Envoy to apply one edit.
const EDIT_LIMIT: Duration = Duration::from_secs(60);
/// How often each Envoy's counters are read while an edit propagates; the
/// figure itself comes from Envoy's own update timestamps.
const POLL: Duration = Duration::from_millis(20);

pub async fn s10_envoys(bins: &Binaries, scale: Scale) -> anyhow::Result<Outcome> {
    let edits = if scale.full { 10 } else { 3 };
    let shape = MeshShape {
        services: 20,
        endpoints_per_service: 2,
        namespaces: 5,
        virtual_services: false,
        destination_rules: true,
        sidecar_scoping: false,
        gateway_hosts: 100,
    };
    // The generated Gateway listens on 80; every Envoy binds its port (they
    // share it, SO_REUSEPORT), so it moves to a free unprivileged one.
    let port = free_port();
    let route = format!("http.{port}");
    let plant = GatewayPlant::start(bins, &shape, port).await?;
    let envoys = start_envoys(bins, plant.pilot.xds).await?;
    wait_for(
        &format!("all {ENVOYS} Envoys to take route {route} (RDS)"),
        CONFIGURED_LIMIT,
        || {
            let envoys = &envoys;
            async move {
                let counters = all_counters(envoys).await.ok()?;
                counters.iter().all(|c| c.success > 0).then_some(())
            }
        },
    )
    .await
    .with_context(|| {
        format!(
            "Envoy logs: {}",
            bins.work.join("s10-envoy-*.log").display()
        )
    })?;
    let virtual_hosts = route_state(envoys[0].admin, &route).await?.virtual_hosts;
    // Start-up pushes settle before the first edit.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut applied = Vec::new();
    let mut polled = Vec::new();
    for step in 0..edits {
        let (by_envoy, seen) = time_edit(&plant.config, &shape, &envoys, &route, step).await?;
        applied.push(by_envoy);
        polled.push(seen);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    drop(envoys);
    drop(plant);

    let summary = Summary::of(&applied);
    let polled_summary = Summary::of(&polled);
    Ok(Outcome {
        id: "S10",
        title: format!(
            "real Envoy: {ENVOYS} Envoy {} gateways on delta ADS ({virtual_hosts} gateway hosts), one VirtualService edit -> applied by all, {edits} edits",
            envoy_version()
        ),
        rows: vec![
            Row::new(
                format!("edit -> last of {ENVOYS} Envoys applied it: median / p99 (ms)"),
                median_p99_ms(&summary),
            ),
            Row::new(
                format!(
                    "same, seen on the admin stats (polled every {} ms): median / p99 (ms)",
                    POLL.as_millis()
                ),
                median_p99_ms(&polled_summary),
            ),
        ],
        json: json!({
            "envoys": ENVOYS, "edits": edits, "gateway_hosts": shape.gateway_hosts,
            "services": shape.services, "route": route, "virtual_hosts": virtual_hosts,
            "applied": summary.to_json_ms(), "seen_on_stats": polled_summary.to_json_ms(),
            "applied_ms": applied.iter().map(|d| d.as_secs_f64() * 1e3).collect::<Vec<_>>(),
            "seen_on_stats_ms": polled.iter().map(|d| d.as_secs_f64() * 1e3).collect::<Vec<_>>(),
        }),
    })
}

/// Edits one gateway-bound VirtualService and waits until every Envoy has
/// applied route `route` again. Returns the time from the edit to the last
/// Envoy's update by Envoy's own clock (its route's `last_updated`), and as
/// the poller saw it on the update counters.
async fn time_edit(
    config: &ConfigBus,
    shape: &MeshShape,
    envoys: &[GatewayEnvoy],
    route: &str,
    step: u64,
) -> anyhow::Result<(Duration, Duration)> {
    let before = all_counters(envoys).await?;
    let edit = shape
        .virtual_service_edit(step)
        .context("the mesh has no VirtualService to edit")?;
    let since_ns = unix_ns();
    let since = Instant::now();
    config.put(&edit).await?;
    let mut seen: Vec<Option<Duration>> = vec![None; envoys.len()];
    loop {
        let pending: Vec<usize> = (0..envoys.len()).filter(|&i| seen[i].is_none()).collect();
        if pending.is_empty() {
            break;
        }
        if since.elapsed() > EDIT_LIMIT {
            bail!(
                "edit {step}: {} of {ENVOYS} Envoys did not apply it within {EDIT_LIMIT:?}",
                pending.len()
            );
        }
        let counters = join_all(pending.iter().map(|&i| rds_counters(envoys[i].admin))).await;
        let at = since.elapsed();
        for (&i, counters) in pending.iter().zip(counters) {
            let counters = counters?;
            if counters.rejected > before[i].rejected {
                bail!("edit {step}: Envoy {i} rejected route {route}");
            }
            if counters.success > before[i].success {
                seen[i] = Some(at);
            }
        }
        tokio::time::sleep(POLL).await;
    }
    let polled = seen.into_iter().flatten().max().unwrap_or_default();
    let mut last_ns = since_ns;
    for envoy in envoys {
        last_ns = last_ns.max(route_state(envoy.admin, route).await?.last_updated_ns);
    }
    Ok((Duration::from_nanos(last_ns - since_ns), polled))
}

/// nats with the mesh published (its Gateway on `port`) and pilot reading it.
struct GatewayPlant {
    // Dropped in this order: pilot before the bus it reads.
    pilot: Pilot,
    config: ConfigBus,
    _bus: Bus,
    _nats: Nats,
}

impl GatewayPlant {
    async fn start(bins: &Binaries, shape: &MeshShape, port: u16) -> anyhow::Result<GatewayPlant> {
        let nats = Nats::start(bins).await?;
        let bus = Bus::connect(nats.url.clone(), "perf-scenarios").await?;
        shape.publish(&bus).await.context("publishing the mesh")?;
        let config = ConfigBus::open(&bus).await?;
        config.put(&gateway_on(shape, port)?).await?;
        let pilot = Pilot::start(bins, &nats.url, None).await?;
        Ok(GatewayPlant {
            pilot,
            config,
            _bus: bus,
            _nats: nats,
        })
    }
}

/// The mesh's Gateway with every server on `port`.
fn gateway_on(shape: &MeshShape, port: u16) -> anyhow::Result<AnyResource> {
    let mut gateway = shape
        .resources()
        .into_iter()
        .find(|resource| matches!(resource, AnyResource::Gateway(_)))
        .context("the mesh has no Gateway (gateway_hosts is 0)")?;
    if let AnyResource::Gateway(gateway) = &mut gateway {
        for server in &mut gateway.spec.servers {
            server.port.number = u32::from(port);
        }
    }
    Ok(gateway)
}

/// One Envoy and its admin address; stopped when dropped.
struct GatewayEnvoy {
    admin: SocketAddr,
    _process: Running,
}

/// Starts the Envoys together and waits for their admin APIs.
async fn start_envoys(bins: &Binaries, pilot: SocketAddr) -> anyhow::Result<Vec<GatewayEnvoy>> {
    let envoy = envoy_bin();
    // Hot restart's shared memory is named by the base id: one per Envoy,
    // apart from other runs' by this process's id.
    let base_id = 10_000 + (std::process::id() % 100_000) * ENVOYS as u32;
    let mut envoys = Vec::new();
    for index in 0..ENVOYS {
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config = bins.work.join(format!("s10-envoy-{index}.json"));
        std::fs::write(
            &config,
            serde_json::to_vec_pretty(&bootstrap(index, pilot, admin))?,
        )?;
        let mut command = Command::new(&envoy);
        command
            .arg("-c")
            .arg(&config)
            .args(["--concurrency", "1", "-l", "warning"])
            .args(["--base-id", &(base_id + index as u32).to_string()]);
        let log = bins.work.join(format!("s10-envoy-{index}.log"));
        envoys.push(GatewayEnvoy {
            admin,
            _process: Running::spawn("envoy", command, &log)?,
        });
    }
    for (index, envoy) in envoys.iter().enumerate() {
        let admin = envoy.admin;
        wait_for(
            &format!("Envoy {index}'s admin API"),
            Duration::from_secs(60),
            || async move { tokio::net::TcpStream::connect(admin).await.ok() },
        )
        .await?;
    }
    Ok(envoys)
}

/// Envoy `index`'s bootstrap: deploy/local/gateway-bootstrap.yaml's, with
/// its own node id and admin port.
fn bootstrap(index: usize, pilot: SocketAddr, admin: SocketAddr) -> Value {
    json!({
        "node": {
            "id": format!("router~127.0.0.1~ingressgateway-{index}.istio-system~istio-system.svc.cluster.local"),
            "cluster": "istio-ingressgateway.istio-system",
            "metadata": {
                "NAMESPACE": "istio-system",
                "LABELS": {"istio": "ingressgateway"},
                "CLUSTER_ID": "Kubernetes",
                "ISTIO_VERSION": "1.28.0",
            },
        },
        "admin": {"address": {"socket_address": {"address": admin.ip().to_string(), "port_value": admin.port()}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC",
                "transport_api_version": "V3",
                "set_node_on_first_message_only": true,
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}],
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {"clusters": [{
            "name": "xds-grpc",
            "type": "STATIC",
            "connect_timeout": "1s",
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}},
                },
            },
            "load_assignment": {
                "cluster_name": "xds-grpc",
                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                    "address": pilot.ip().to_string(), "port_value": pilot.port(),
                }}}}]}],
            },
        }]},
    })
}

/// An Envoy's RDS counters, summed over its route configurations.
#[derive(Debug, Clone, Copy, Default)]
struct RdsCounters {
    success: u64,
    rejected: u64,
}

async fn rds_counters(admin: SocketAddr) -> anyhow::Result<RdsCounters> {
    let (status, text) = crate::http::get_text(admin, "/stats?filter=rds").await?;
    if status != 200 {
        bail!("Envoy admin {admin}/stats answered {status}");
    }
    let mut counters = RdsCounters::default();
    for line in text.lines() {
        let Some((name, value)) = line.split_once(": ") else {
            continue;
        };
        if !name.contains(".rds.") {
            continue;
        }
        let Ok(value) = value.trim().parse::<u64>() else {
            continue;
        };
        if name.ends_with(".update_success") {
            counters.success += value;
        } else if name.ends_with(".update_rejected") {
            counters.rejected += value;
        }
    }
    Ok(counters)
}

async fn all_counters(envoys: &[GatewayEnvoy]) -> anyhow::Result<Vec<RdsCounters>> {
    join_all(envoys.iter().map(|envoy| rds_counters(envoy.admin)))
        .await
        .into_iter()
        .collect()
}

/// Route configuration `name` as an Envoy holds it.
struct RouteState {
    /// When Envoy last applied it, by its clock (Unix nanoseconds).
    last_updated_ns: u64,
    virtual_hosts: usize,
}

async fn route_state(admin: SocketAddr, name: &str) -> anyhow::Result<RouteState> {
    let dump = crate::http::get_json(admin, "/config_dump?resource=dynamic_route_configs").await?;
    let config = dump["configs"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|config| config["route_config"]["name"] == name)
        .with_context(|| format!("Envoy {admin} has no route configuration {name}"))?;
    let stamp = config["last_updated"].as_str().unwrap_or_default();
    Ok(RouteState {
        last_updated_ns: rfc3339_unix_ns(stamp)
            .with_context(|| format!("Envoy {admin}: last_updated {stamp:?}"))?,
        virtual_hosts: config["route_config"]["virtual_hosts"]
            .as_array()
            .map_or(0, Vec::len),
    })
}

/// A UTC RFC 3339 time as protobuf's JSON writes it
/// (`2025-01-02T03:04:05.123456Z`) in Unix nanoseconds.
fn rfc3339_unix_ns(text: &str) -> Option<u64> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut date = date.splitn(3, '-').map(|part| part.parse::<i64>().ok());
    let (year, month, day) = (date.next()??, date.next()??, date.next()??);
    let (clock, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut clock = clock.splitn(3, ':').map(|part| part.parse::<i64>().ok());
    let (hour, minute, second) = (clock.next()??, clock.next()??, clock.next()??);
    if fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos = if fraction.is_empty() {
        0
    } else {
        fraction.parse::<u64>().ok()? * 10u64.pow(9 - fraction.len() as u32)
    };
    // Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second;
    u64::try_from(seconds)
        .ok()?
        .checked_mul(1_000_000_000)?
        .checked_add(nanos)
}

/// The release number in `envoy --version`'s `version: <commit>/<release>/...`,
/// for the title.
fn envoy_version() -> String {
    Command::new(envoy_bin())
        .arg("--version")
        .output()
        .ok()
        .and_then(|output| {
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            let (_, version) = text.split_once("version: ")?;
            version.split('/').nth(1).map(str::to_owned)
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::rfc3339_unix_ns;

    #[test]
    fn rfc3339_times_as_protobuf_writes_them() {
        assert_eq!(rfc3339_unix_ns("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            rfc3339_unix_ns("2000-03-01T00:00:01.5Z"),
            Some(951_868_801_500_000_000)
        );
        assert_eq!(
            rfc3339_unix_ns("2025-12-06T12:29:00.123456789Z"),
            Some(1_765_024_140_123_456_789)
        );
        assert_eq!(rfc3339_unix_ns("2025-12-06 12:29:00Z"), None);
    }
}
