//! The scenarios of issue 8 that need processes: pilot on its own, reading
//! the config bucket as in production; the load tool in another process;
//! config changes written to the bucket as galley writes them.

use std::time::{Duration, Instant};

use anyhow::Context;
use event_bus::Bus;
use perf::mesh_gen::{ConfigBus, MeshShape};
use perf::report::{ProcessUsage, Summary};
use serde_json::{Value, json};

use crate::outcome::{Outcome, Row, median_p99_ms};
use crate::processes::{Binaries, Floor, Load, LoadSettings, Nats, Pilot, unix_ns};

/// How long and how large: `make bench` (quick) or `BENCH_FULL=1`.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    pub full: bool,
}

impl Scale {
    fn pick<T>(&self, quick: T, full: T) -> T {
        if self.full { full } else { quick }
    }
}

/// A bus with a published mesh, and a pilot reading it.
struct Plant {
    nats: Nats,
    bus: Bus,
    config: ConfigBus,
    pilot: Pilot,
}

impl Plant {
    async fn start(bins: &Binaries, shape: &MeshShape) -> anyhow::Result<Plant> {
        let nats = Nats::start(bins).await?;
        let bus = Bus::connect(nats.url.clone(), "perf-scenarios").await?;
        shape.publish(&bus).await.context("publishing the mesh")?;
        let config = ConfigBus::open(&bus).await?;
        let pilot = Pilot::start(bins, &nats.url, None).await?;
        Ok(Plant {
            nats,
            bus,
            config,
            pilot,
        })
    }

    fn usage(&self) -> anyhow::Result<ProcessUsage> {
        Ok(ProcessUsage::sample(self.pilot.process.pid())?)
    }
}

/// Time for every proxy to ACK its whole config, generous for 2 cores.
fn ready_limit(proxies: usize) -> Duration {
    Duration::from_secs(60 + proxies as u64 / 100)
}

fn kib_per_proxy(before: &ProcessUsage, after: &ProcessUsage, proxies: usize) -> f64 {
    (after.rss_kib as f64 - before.rss_kib as f64) / proxies as f64
}

/// S1: Istio's reference mesh under steady churn: pilot's CPU and memory.
pub async fn s1_reference_mesh(bins: &Binaries, scale: Scale) -> anyhow::Result<Outcome> {
    let shape = MeshShape::reference();
    let proxies = 2000;
    let window = scale.pick(Duration::from_secs(60), Duration::from_secs(300));
    let plant = Plant::start(bins, &shape).await?;
    let settings = LoadSettings {
        proxies,
        namespaces: shape.namespaces,
        delta: false,
    };
    let load = Load::start(bins, plant.pilot.xds, settings, None).await?;
    load.wait_ready(ready_limit(proxies)).await?;
    ProcessUsage::reset_peak(plant.pilot.process.pid()).ok();
    let start = plant.usage()?;
    let started = Instant::now();
    let (mut churn, mut edits) = (0u64, 0u64);
    while started.elapsed() < window {
        plant.config.put(&shape.endpoint_churn(churn)).await?;
        churn += 1;
        if churn % 10 == 0
            && let Some(edit) = shape.virtual_service_edit(edits)
        {
            plant.config.put(&edit).await?;
            edits += 1;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let end = plant.usage()?;
    let cpu = ProcessUsage::cpu_per_wall_second(&start, &end);
    let peak_mb = end.peak_rss_kib as f64 / 1024.0;
    let stats = load.stats().await?;
    Ok(Outcome {
        id: "S1",
        title: format!(
            "reference mesh: {} services x {} endpoints, {} namespaces, {proxies} proxies scoped per namespace; 1 pod/s churn + a VirtualService edit per 10 s for {} s",
            shape.services,
            shape.endpoints_per_service,
            shape.namespaces,
            window.as_secs()
        ),
        rows: vec![
            Row::new("pilot CPU (cores)", format!("{cpu:.3}"))
                .against("Istio 1 vCPU; target <= 0.1", Some(cpu / 1.0)),
            Row::new("pilot peak RSS (MB)", format!("{peak_mb:.0}"))
                .against("Istio 1500 MB; target <= 150", Some(peak_mb / 1500.0)),
        ],
        json: json!({
            "services": shape.services, "proxies": proxies, "window_s": window.as_secs(),
            "endpoint_changes": churn, "virtual_service_edits": edits,
            "pilot_cpu_per_wall_second": cpu, "pilot_peak_rss_kib": end.peak_rss_kib,
            "pilot_rss_kib": end.rss_kib, "load": stats,
        }),
    })
}

/// S2: idle streams: pilot's memory per connected proxy.
pub async fn s2_idle_streams(bins: &Binaries, scale: Scale) -> anyhow::Result<Outcome> {
    let shape = MeshShape::single_service();
    let counts = scale.pick(vec![1_000, 10_000], vec![1_000, 10_000, 30_000]);
    let mut rows = Vec::new();
    let mut figures = Vec::new();
    for proxies in counts {
        let plant = Plant::start(bins, &shape).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = plant.usage()?;
        let settings = LoadSettings {
            proxies,
            namespaces: 1,
            delta: false,
        };
        let dump = bins.work.join(format!("s2-dump-{proxies}"));
        std::fs::create_dir_all(&dump)?;
        let load = Load::start(bins, plant.pilot.xds, settings, Some(&dump)).await?;
        load.wait_ready(ready_limit(proxies)).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = plant.usage()?;
        let per_proxy = kib_per_proxy(&before, &after, proxies);
        drop(load);
        drop(plant);
        let baseline = match bins.baseline() {
            Some(program) => Some(idle_replay(bins, &program, &dump, settings).await?),
            None => None,
        };
        let row = Row::new(
            format!("pilot RSS per idle proxy, {proxies} proxies (KB)"),
            format!("{per_proxy:.1}"),
        );
        rows.push(match baseline {
            Some(theirs) => row.against(
                format!("rust-control-plane {theirs:.1} KB; target <= 100 KB"),
                Some(per_proxy / theirs),
            ),
            None => row.against("target <= 100 KB", Some(per_proxy / 100.0)),
        });
        figures.push(json!({
            "proxies": proxies, "rss_before_kib": before.rss_kib, "rss_after_kib": after.rss_kib,
            "kib_per_proxy": per_proxy, "baseline_kib_per_proxy": baseline,
        }));
    }
    Ok(Outcome {
        id: "S2",
        title: "idle streams: 1 service, N connected SotW proxies".into(),
        rows,
        json: json!(figures),
    })
}

/// RSS per idle stream of a replay server (the baseline) holding `settings`'
/// proxies on the resources in `dump`.
async fn idle_replay(
    bins: &Binaries,
    program: &std::path::Path,
    dump: &std::path::Path,
    settings: LoadSettings,
) -> anyhow::Result<f64> {
    let server = Floor::start_program(bins, program, dump).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = ProcessUsage::sample(server.pid())?;
    let load = Load::start(bins, server.xds, settings, None).await?;
    load.wait_ready(ready_limit(settings.proxies)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = ProcessUsage::sample(server.pid())?;
    Ok(kib_per_proxy(&before, &after, settings.proxies))
}

/// S3: a change every proxy must receive, pushed to N proxies of a
/// 1000-service unscoped mesh, beside the floor (a raw tonic server
/// streaming the same pre-encoded responses to the same clients).
pub async fn s3_full_push(bins: &Binaries, scale: Scale) -> anyhow::Result<Outcome> {
    let shape = MeshShape {
        services: 1000,
        endpoints_per_service: 2,
        namespaces: 50,
        virtual_services: false,
        destination_rules: true,
        sidecar_scoping: false,
        gateway_hosts: 0,
    };
    let counts = scale.pick(vec![1_000], vec![1_000, 5_000, 10_000]);
    let pushes = scale.pick(3, 5);
    let dump = bins.work.join("s3-dump");
    std::fs::create_dir_all(&dump)?;
    let mut rows = Vec::new();
    let mut figures = Vec::new();
    for proxies in counts {
        let plant = Plant::start(bins, &shape).await?;
        let settings = LoadSettings {
            proxies,
            namespaces: shape.namespaces,
            delta: false,
        };
        let load = Load::start(bins, plant.pilot.xds, settings, Some(&dump)).await?;
        load.wait_ready(ready_limit(proxies)).await?;
        let mut times = Vec::new();
        let mut bytes = Vec::new();
        for push in 0..pushes {
            // A new service reaches every unscoped proxy's CDS (and EDS).
            let mut extra = shape;
            extra.services = shape.services + push + 1;
            let resources = extra.resources();
            let added = added_service(&shape, &resources, push);
            let since = unix_ns();
            for resource in added {
                plant.config.put(&resource).await?;
            }
            let converged = load
                .wait_converged(since, "cds", Duration::from_secs(120))
                .await?;
            let last = converged["last_ns"].as_u64().unwrap_or(since);
            times.push(Duration::from_nanos(last.saturating_sub(since)));
            let all = load.converged(since, "any").await?;
            bytes.push(all["bytes_since"].as_u64().unwrap_or(0));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        drop(load);
        drop(plant);
        let floor_program = bins.path("xds-floor");
        let floor = replay_push(
            bins,
            &floor_program,
            &dump,
            proxies,
            shape.namespaces,
            pushes,
        )
        .await?;
        let baseline = match bins.baseline() {
            Some(program) => Some(Summary::of(
                &replay_push(bins, &program, &dump, proxies, shape.namespaces, pushes).await?,
            )),
            None => None,
        };
        let pilot_summary = Summary::of(&times);
        let floor_summary = Summary::of(&floor);
        let ratio = pilot_summary.median.as_secs_f64() / floor_summary.median.as_secs_f64();
        let mb = bytes.iter().sum::<u64>() as f64 / bytes.len().max(1) as f64 / 1e6;
        rows.push(
            Row::new(
                format!("full push to last ACK, {proxies} proxies: median / p99 (ms)"),
                median_p99_ms(&pilot_summary),
            )
            .against(
                format!("floor {} ms", median_p99_ms(&floor_summary)),
                Some(ratio),
            ),
        );
        if let Some(theirs) = &baseline {
            rows.push(
                Row::new(
                    format!("rust-control-plane, same push, {proxies} proxies: median / p99 (ms)"),
                    median_p99_ms(theirs),
                )
                .against(
                    "ratio = pilot / rust-control-plane (medians)",
                    Some(pilot_summary.median.as_secs_f64() / theirs.median.as_secs_f64()),
                ),
            );
        }
        rows.push(Row::new(
            format!("bytes sent per push, {proxies} proxies (MB)"),
            format!("{mb:.1}"),
        ));
        figures.push(json!({
            "proxies": proxies, "pilot": pilot_summary.to_json_ms(), "floor": floor_summary.to_json_ms(),
            "baseline_rust_control_plane": baseline.map(|b| b.to_json_ms()),
            "bytes_per_push": bytes, "ratio_median": ratio,
        }));
    }
    Ok(Outcome {
        id: "S3",
        title: "full push (a new service) to N proxies of a 1000-service unscoped mesh, SotW"
            .into(),
        rows,
        json: json!(figures),
    })
}

/// The resources of service `push` beyond `shape` in `resources` (which
/// holds the shape grown by `push + 1` services).
fn added_service(
    shape: &MeshShape,
    resources: &[mesh_config::AnyResource],
    push: usize,
) -> Vec<mesh_config::AnyResource> {
    let name = format!("svc-{}", shape.services + push);
    let prefix = format!("{name}-");
    resources
        .iter()
        .filter(|resource| {
            let own = &resource.metadata().name;
            *own == name || own.starts_with(&prefix)
        })
        .cloned()
        .collect()
}

/// Times `pushes` full pushes from a replay server (the floor or the
/// baseline) to `proxies` clients.
async fn replay_push(
    bins: &Binaries,
    program: &std::path::Path,
    dump: &std::path::Path,
    proxies: usize,
    namespaces: usize,
    pushes: usize,
) -> anyhow::Result<Vec<Duration>> {
    let floor = Floor::start_program(bins, program, dump).await?;
    let settings = LoadSettings {
        proxies,
        namespaces,
        delta: false,
    };
    let load = Load::start(bins, floor.xds, settings, None).await?;
    load.wait_ready(ready_limit(proxies)).await?;
    let mut times = Vec::new();
    for _ in 0..pushes {
        let since = unix_ns();
        floor.push().await?;
        let converged = load
            .wait_converged(since, "cds", Duration::from_secs(120))
            .await?;
        let last = converged["last_ns"].as_u64().unwrap_or(since);
        times.push(Duration::from_nanos(last.saturating_sub(since)));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(times)
}

/// S4: endpoint churn at 40 pods/s to 2000 proxies that all see every
/// endpoint (one namespace's services, unscoped), SotW and delta.
pub async fn s4_endpoint_churn(bins: &Binaries, scale: Scale) -> anyhow::Result<Outcome> {
    let shape = MeshShape {
        services: 100,
        endpoints_per_service: 2,
        namespaces: 10,
        virtual_services: false,
        destination_rules: false,
        sidecar_scoping: false,
        gateway_hosts: 0,
    };
    let proxies = 2000;
    let window = scale.pick(Duration::from_secs(15), Duration::from_secs(60));
    let mut rows = Vec::new();
    let mut figures = Vec::new();
    for delta in [false, true] {
        let mode = if delta { "delta" } else { "SotW" };
        let plant = Plant::start(bins, &shape).await?;
        let settings = LoadSettings {
            proxies,
            namespaces: shape.namespaces,
            delta,
        };
        let load = Load::start(bins, plant.pilot.xds, settings, None).await?;
        load.wait_ready(ready_limit(proxies)).await?;
        let pushes_before = plant.pilot.pushes("eds").await.unwrap_or(0.0);
        let bytes_before = eds_bytes(&load).await?;
        let latencies = churn_and_time(&plant, &load, &shape, window).await?;
        let events = latencies.len();
        let pushes = plant.pilot.pushes("eds").await.unwrap_or(0.0) - pushes_before;
        let bytes = eds_bytes(&load).await? - bytes_before;
        let summary = Summary::of(&latencies);
        let push_rounds = pushes / proxies as f64;
        let bytes_per_event = bytes as f64 / events.max(1) as f64;
        rows.push(
            Row::new(
                format!("{mode}: event -> last ACK median / p99 (ms)"),
                median_p99_ms(&summary),
            )
            .against(
                "target p99 < 250 ms",
                Some(summary.p99.as_secs_f64() / 0.25),
            ),
        );
        rows.push(Row::new(
            format!("{mode}: {events} events merged into EDS pushes (rounds)"),
            format!("{push_rounds:.0}"),
        ));
        rows.push(Row::new(
            format!("{mode}: bytes per event (KB)"),
            format!("{:.0}", bytes_per_event / 1e3),
        ));
        figures.push(json!({
            "mode": mode, "proxies": proxies, "events": events, "latency": summary.to_json_ms(),
            "eds_pushes": pushes, "push_rounds": push_rounds, "bytes": bytes, "bytes_per_event": bytes_per_event,
        }));
        drop(load);
        drop(plant);
    }
    Ok(Outcome {
        id: "S4",
        title: format!(
            "endpoint churn at 40 pods/s for {} s, {proxies} proxies seeing every endpoint",
            window.as_secs()
        ),
        rows,
        json: json!(figures),
    })
}

async fn eds_bytes(load: &Load) -> anyhow::Result<u64> {
    let stats = load.stats().await?;
    Ok(stats["types"]["eds"]["bytes"].as_u64().unwrap_or(0))
}

/// Changes an endpoint every 25 ms for `window` and times each change until
/// every proxy has heard EDS after it. A poller watches the changes oldest
/// first and times each at the poll that sees it delivered (10 ms grain).
async fn churn_and_time(
    plant: &Plant,
    load: &Load,
    shape: &MeshShape,
    window: Duration,
) -> anyhow::Result<Vec<Duration>> {
    let (events_tx, mut events_rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    let report = load.report;
    let poller = tokio::spawn(async move {
        let mut open: std::collections::VecDeque<(u64, Instant)> = Default::default();
        let mut latencies = Vec::new();
        let mut closed = false;
        loop {
            while let Ok(event) = events_rx.try_recv() {
                open.push_back(event);
            }
            if events_rx.is_closed() && !closed {
                closed = true;
            }
            let Some(&(since, _)) = open.front() else {
                if closed && events_rx.is_empty() {
                    return latencies;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let path = format!("/converged?since={since}&type=eds");
            if let Ok(answer) = crate::http::get_json(report, &path).await
                && answer["updated"] == answer["of"]
            {
                if let Some((_, at)) = open.pop_front() {
                    latencies.push(at.elapsed());
                }
                continue;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let started = Instant::now();
    let mut step = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(25));
    while started.elapsed() < window {
        tick.tick().await;
        let at = Instant::now();
        let since = unix_ns();
        plant.config.put(&shape.endpoint_churn(step)).await?;
        events_tx.send((since, at)).ok();
        step += 1;
    }
    drop(events_tx);
    let latencies = tokio::time::timeout(Duration::from_secs(60), poller)
        .await
        .context("the churn's last changes were never delivered to every proxy")??;
    Ok(latencies)
}

/// S5: reconnect storm: pilot killed and started again with N proxies
/// connected; time from the new pilot's start until every proxy has ACKed
/// its full config again.
pub async fn s5_reconnect_storm(bins: &Binaries, scale: Scale) -> anyhow::Result<Outcome> {
    let shape = MeshShape::reference();
    let proxies = scale.pick(5_000, 10_000);
    let Plant {
        nats,
        bus: _bus,
        config: _config,
        pilot,
    } = Plant::start(bins, &shape).await?;
    let settings = LoadSettings {
        proxies,
        namespaces: shape.namespaces,
        delta: false,
    };
    let load = Load::start(bins, pilot.xds, settings, None).await?;
    load.wait_ready(ready_limit(proxies)).await?;
    let xds = pilot.xds;
    pilot.process.kill();
    // Until every stream has noticed, readiness would still say yes.
    crate::processes::wait_for(
        "every proxy to notice pilot is gone",
        Duration::from_secs(30),
        || {
            let load = &load;
            async move {
                let stats = load.stats().await.ok()?;
                (stats["ready"].as_u64() == Some(0)).then_some(())
            }
        },
    )
    .await?;
    let restarted = Instant::now();
    let restarted_ns = unix_ns();
    let pilot = Pilot::start(bins, &nats.url, Some(xds)).await?;
    let pilot_ready = restarted.elapsed();
    let times = load.wait_ready(ready_limit(proxies) * 2).await?;
    let all_acked = times["all_acked_ns"].as_u64().unwrap_or(restarted_ns);
    let storm = Duration::from_nanos(all_acked.saturating_sub(restarted_ns));
    let stats = load.stats().await?;
    drop(pilot);
    Ok(Outcome {
        id: "S5",
        title: format!(
            "reconnect storm: pilot killed and restarted under {proxies} proxies (reference mesh)"
        ),
        rows: vec![
            Row::new(
                format!("restart -> all {proxies} re-ACKed full config (s)"),
                format!("{:.1}", storm.as_secs_f64()),
            )
            .against("target < 20 s", Some(storm.as_secs_f64() / 20.0)),
            Row::new(
                "of which pilot start-up until ready (s)",
                format!("{:.1}", pilot_ready.as_secs_f64()),
            ),
        ],
        json: json!({
            "proxies": proxies, "storm_ms": storm.as_secs_f64() * 1e3,
            "pilot_ready_ms": pilot_ready.as_secs_f64() * 1e3, "load": stats,
        }),
    })
}

/// A figure from another benchmark's JSON, for the gathered rows.
pub fn read_bench_json(name: &str) -> Option<Value> {
    let path = perf::report::target_dir()
        .join("bench")
        .join(format!("{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}
