//! xds-load: simulates N Envoy proxies against an xDS server, each on its
//! own connection with one ADS stream, and serves what it measured on a
//! small HTTP API (see `perf::load_api`) for the scenario runner.
//!
//! `xds-load --pilot 127.0.0.1:15010 --proxies 1000 --namespaces 10 --report-addr 127.0.0.1:15099`

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use perf::ads_client::{Backoff, LoadConfig, LoadContext, run_proxy};
use perf::load_api;
use perf::node::{DEFAULT_TEMPLATE, NodeTemplate};
use perf::resource_type::XdsType;
use perf::source_ip::SourceIps;
use perf::sys::raise_nofile_limit;
use service_runtime::args::parse_duration;

#[derive(Debug, Parser)]
#[command(about = "Simulated Envoy proxies for load tests of an xDS server")]
struct Args {
    /// The xDS server's plain-text gRPC address.
    #[arg(long, default_value = "127.0.0.1:15010")]
    pilot: SocketAddr,

    /// How many proxies to run, each with its own connection.
    #[arg(long)]
    proxies: usize,

    /// Proxies are spread round-robin over namespaces ns-0 .. ns-<K-1>.
    #[arg(long, default_value_t = 1)]
    namespaces: usize,

    /// Use delta xDS instead of the state of the world.
    #[arg(long)]
    delta: bool,

    /// Local addresses to connect from, round-robin: `127.0.0.2-127.0.0.9`,
    /// a comma-separated list, or one address. Needed past ~28k proxies
    /// (one address's ephemeral ports).
    #[arg(long)]
    source_ips: Option<SourceIps>,

    /// Proxies started per second (0: all at once).
    #[arg(long, default_value_t = 0.0)]
    ramp_per_sec: f64,

    /// Where to serve /stats, /converged, /ready and /ready_times (port 0:
    /// any; the address is printed on stdout as JSON).
    #[arg(long, default_value = "127.0.0.1:0")]
    report_addr: SocketAddr,

    /// The node each proxy sends: JSON or @file, with placeholders {i},
    /// {ns}, {pod} and {ip}. Default: a sidecar labelled app=load.
    #[arg(long, default_value = DEFAULT_TEMPLATE, hide_default_value = true)]
    node_template: String,

    /// Pod IP of proxy 0; proxy i gets the i-th next address.
    #[arg(long, default_value = "10.200.0.1")]
    first_pod_ip: Ipv4Addr,

    /// NACK every response of this type (cds, eds, lds or rds) instead of
    /// ACKing it; it then counts as settled for /ready once answered.
    #[arg(long)]
    nack_type: Option<XdsType>,

    /// Proxy 0 writes the first response of each type here as
    /// <type>.pb (encoded DiscoveryResponse), for xds-floor. State of the
    /// world only.
    #[arg(long, conflicts_with = "delta")]
    dump_dir: Option<PathBuf>,

    /// First reconnect backoff ceiling (full jitter; doubles per failure).
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    backoff_base: Duration,

    /// Largest reconnect backoff ceiling.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    backoff_max: Duration,

    /// HTTP/2 flow-control windows (stream and connection); Envoy's
    /// default is 256 MiB.
    #[arg(long, default_value_t = 256 * 1024 * 1024)]
    window_bytes: u32,

    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    connect_timeout: Duration,

    /// Responses remembered for /converged (16 bytes each); the older half
    /// is dropped when full.
    #[arg(long, default_value_t = 8_000_000)]
    log_capacity: usize,

    /// Log filter (`tracing` syntax).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    perf::sys::init_logging(&args.log);
    let nofile = raise_nofile_limit()?;
    // One socket per proxy, plus the API and the runtime's own.
    if args.proxies as u64 + 64 > nofile {
        tracing::warn!(
            nofile,
            proxies = args.proxies,
            "the open-file limit is below the number of proxies; some will fail to connect"
        );
    }
    if let Some(dir) = &args.dump_dir {
        std::fs::create_dir_all(dir)?;
    }
    let config = LoadConfig {
        pilot: args.pilot,
        delta: args.delta,
        nack_type: args.nack_type,
        source_ips: args.source_ips,
        node_template: NodeTemplate::parse(&args.node_template)?,
        namespaces: args.namespaces.max(1),
        first_pod_ip: args.first_pod_ip,
        dump_dir: args.dump_dir,
        backoff: Backoff {
            base: args.backoff_base,
            max: args.backoff_max,
        },
        window_bytes: args.window_bytes,
        connect_timeout: args.connect_timeout,
    };
    let context = Arc::new(LoadContext::new(config, args.proxies, args.log_capacity));

    let listener = tokio::net::TcpListener::bind(args.report_addr).await?;
    let report_addr = listener.local_addr()?;
    println!(
        "{}",
        serde_json::json!({ "report_addr": report_addr.to_string() })
    );
    let router = load_api::router(Arc::clone(&context.stats));
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::error!(%error, "report API stopped");
        }
    });
    tracing::info!(
        proxies = args.proxies,
        pilot = %args.pilot,
        delta = args.delta,
        %report_addr,
        "starting proxies"
    );

    tokio::spawn(start_proxies(
        Arc::clone(&context),
        args.proxies,
        args.ramp_per_sec,
    ));
    tokio::spawn(log_progress(Arc::clone(&context)));
    wait_for_shutdown().await;
    Ok(())
}

/// Starts proxies all at once, or `ramp_per_sec` a second.
async fn start_proxies(context: Arc<LoadContext>, proxies: usize, ramp_per_sec: f64) {
    let started = tokio::time::Instant::now();
    for index in 0..proxies {
        if ramp_per_sec > 0.0 {
            let due = started + Duration::from_secs_f64(index as f64 / ramp_per_sec);
            tokio::time::sleep_until(due).await;
        }
        tokio::spawn(run_proxy(Arc::clone(&context), index));
    }
}

/// A line every 5 s while the counts change.
async fn log_progress(context: Arc<LoadContext>) {
    let started = Instant::now();
    let mut last = None;
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let stats = context.stats.stats();
        let now = (stats.connected, stats.ready, stats.reconnects);
        if last != Some(now) {
            tracing::info!(
                elapsed_s = started.elapsed().as_secs(),
                connected = stats.connected,
                ready = stats.ready,
                reconnects = stats.reconnects,
                connect_failures = stats.connect_failures,
                "progress"
            );
            last = Some(now);
        }
    }
}

async fn wait_for_shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
