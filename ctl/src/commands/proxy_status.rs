//! `trireme proxy-status`: every proxy connected to any pilot replica, and
//! whether it has applied what it was sent, per xDS type, from the sync
//! state the replicas publish on the bus. NACKs come with Envoy's message.

use clap::Args;
use mesh_config::store::{PROXY_STATUS_BUCKET, ProxyStatus};

#[derive(Debug, Args)]
pub struct ProxyStatusArgs {
    /// The NATS bus the pilot replicas publish to.
    #[arg(
        long,
        env = "TRIREME_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
}

/// The types shown as columns, in `istioctl proxy-status` order.
const COLUMNS: [&str; 4] = ["CDS", "LDS", "EDS", "RDS"];

/// Returns whether every proxy is in sync (no NACK).
pub fn run(args: &ProxyStatusArgs) -> anyhow::Result<bool> {
    let statuses: Vec<ProxyStatus> = super::bus::read_bucket(&args.nats_url, PROXY_STATUS_BUCKET)?;
    print!("{}", render(&statuses));
    let nacked = statuses
        .iter()
        .flat_map(|status| status.types.values())
        .any(|state| state.nack.is_some());
    Ok(!nacked)
}

/// A table, one proxy per row, then Envoy's words for every NACK.
fn render(statuses: &[ProxyStatus]) -> String {
    let name_width = statuses
        .iter()
        .map(|s| s.proxy.len())
        .chain([4])
        .max()
        .unwrap_or(4);
    let mut out = format!("{:<name_width$}  ", "NAME");
    for column in COLUMNS {
        out.push_str(&format!("{column:<9} "));
    }
    out.push_str("PILOT\n");
    let mut nacks = Vec::new();
    for status in statuses {
        out.push_str(&format!("{:<name_width$}  ", status.proxy));
        for column in COLUMNS {
            let state = status.types.get(column).map_or("NOT SENT", |t| t.state());
            out.push_str(&format!("{state:<9} "));
            if let Some(nack) = status.types.get(column).and_then(|t| t.nack.as_ref()) {
                nacks.push(format!("{} {column} NACKED: {nack}", status.proxy));
            }
        }
        out.push_str(&format!("{} ({})\n", status.replica, status.protocol));
    }
    for nack in nacks {
        out.push_str(&format!("\n{nack}"));
    }
    if statuses.is_empty() {
        out.push_str("(no proxies connected)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_config::store::TypeStatus;

    #[test]
    fn rows_show_each_type_and_the_replica_and_nacks_their_message() {
        let synced = TypeStatus {
            sent_version: "2".into(),
            acked_version: "2".into(),
            ..TypeStatus::default()
        };
        let nacked = TypeStatus {
            nack: Some("invalid regex".into()),
            ..synced.clone()
        };
        let status = ProxyStatus {
            proxy: "router~127.0.0.1~gw.istio-system~istio-system.svc.cluster.local".into(),
            replica: "pilot-0".into(),
            protocol: "delta".into(),
            types: [("CDS", &synced), ("LDS", &synced), ("RDS", &nacked)]
                .into_iter()
                .map(|(name, state)| (name.to_owned(), state.clone()))
                .collect(),
            updated_at: 0,
        };
        let table = render(&[status]);
        assert!(
            table.contains("SYNCED    SYNCED    NOT SENT  NACKED    pilot-0 (delta)"),
            "{table}"
        );
        assert!(table.contains("RDS NACKED: invalid regex"), "{table}");
    }
}
