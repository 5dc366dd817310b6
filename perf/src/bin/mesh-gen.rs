//! mesh-gen: Istio config for a mesh of a given shape, written as YAML for
//! `--config-dir` or published straight into the config bucket as galley
//! would (see `perf::mesh_gen`).
//!
//! `mesh-gen --services 1000 --endpoints-per-service 2 --namespaces 50
//! --sidecar-scoping --out-dir /tmp/mesh` writes Istio's reference mesh.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use perf::mesh_gen::MeshShape;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Parser)]
#[command(about = "Istio config for a mesh of a given shape, for pilot's --config-dir or the bus")]
#[command(group = clap::ArgGroup::new("output").required(true).args(["out_dir", "nats_url"]))]
struct Args {
    #[arg(long, default_value_t = 1000)]
    services: usize,
    #[arg(long, default_value_t = 2)]
    endpoints_per_service: usize,
    #[arg(long, default_value_t = 50)]
    namespaces: usize,
    /// 1: a VirtualService per service splitting 90/10 between v1 and v2.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    virtual_services_per_service: u8,
    /// 1: a DestinationRule per service with subsets v1 and v2.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    destination_rules_per_service: u8,
    /// A Sidecar per namespace limiting egress to ./* and istio-system/*.
    #[arg(long)]
    sidecar_scoping: bool,
    /// VirtualServices for hosts gw-<g>.example.com bound to one Gateway.
    #[arg(long, default_value_t = 0)]
    gateway_hosts: usize,
    /// Write one YAML file per namespace into this directory.
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Publish into the config bucket of this NATS server, as galley would.
    #[arg(long)]
    nats_url: Option<String>,
}

impl Args {
    fn shape(&self) -> MeshShape {
        MeshShape {
            services: self.services,
            endpoints_per_service: self.endpoints_per_service,
            namespaces: self.namespaces,
            virtual_services: self.virtual_services_per_service == 1,
            destination_rules: self.destination_rules_per_service == 1,
            sidecar_scoping: self.sidecar_scoping,
            gateway_hosts: self.gateway_hosts,
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let shape = args.shape();
    shape.check().map_err(anyhow::Error::msg)?;
    println!("{}", describe(&shape));
    if let Some(dir) = &args.out_dir {
        let config = shape
            .write_dir(dir)
            .with_context(|| format!("writing {}", dir.display()))?;
        println!(
            "wrote {} files, {} bytes, to {}",
            config.files().count(),
            config.total_bytes()?,
            dir.display()
        );
    }
    if let Some(url) = &args.nats_url {
        publish(&shape, url)?;
    }
    Ok(())
}

/// Resources per kind, e.g. `1000 DestinationRule, 1000 ServiceEntry, ...`.
fn describe(shape: &MeshShape) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for resource in shape.resources() {
        *counts.entry(resource.kind().info().kind).or_default() += 1;
    }
    let kinds: Vec<String> = counts
        .iter()
        .map(|(kind, count)| format!("{count} {kind}"))
        .collect();
    format!("mesh: {}", kinds.join(", "))
}

fn publish(shape: &MeshShape, url: &str) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting tokio")?;
    runtime.block_on(async {
        let bus = event_bus::Bus::connect(url, "mesh-gen").await?;
        // The client retries forever; a wrong URL should fail, not hang.
        tokio::time::timeout(CONNECT_TIMEOUT, bus.wait_until_connected())
            .await
            .with_context(|| format!("no NATS server at {url} within {CONNECT_TIMEOUT:?}"))??;
        let published = shape.publish(&bus).await?;
        println!(
            "published {} resources to {url} ({} keys written or deleted), config revision {}",
            published.resources, published.written, published.revision
        );
        Ok(())
    })
}
