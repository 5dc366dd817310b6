//! `trireme analyze`: what galley thinks of the config it was given, from
//! its verdict bucket on the bus: every rejected resource with the field
//! path and reason, and warnings.

use clap::Args;
use mesh_config::store::{VERDICT_BUCKET, Verdict};

#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// The NATS bus galley publishes to.
    #[arg(
        long,
        env = "TRIREME_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,

    /// Also list the accepted resources.
    #[arg(long)]
    pub all: bool,
}

/// Returns whether no resource is rejected.
pub fn run(args: &AnalyzeArgs) -> anyhow::Result<bool> {
    let verdicts: Vec<Verdict> = super::bus::read_bucket(&args.nats_url, VERDICT_BUCKET)?;
    let rejected = verdicts.iter().filter(|v| !v.accepted).count();
    for verdict in &verdicts {
        for line in describe(verdict, args.all) {
            println!("{line}");
        }
    }
    if rejected == 0 {
        println!(
            "No validation issues found ({} resources accepted).",
            verdicts.len()
        );
    } else {
        println!(
            "{rejected} rejected, {} accepted.",
            verdicts.len() - rejected
        );
    }
    Ok(rejected == 0)
}

/// The lines for one verdict, as `istioctl analyze` lays them out: level,
/// resource, then the message.
fn describe(verdict: &Verdict, all: bool) -> Vec<String> {
    let resource = resource_name(&verdict.key);
    let mut lines: Vec<String> = verdict
        .errors
        .iter()
        .map(|error| {
            format!(
                "Error   [rejected] ({resource}) {}: {error}",
                verdict.source
            )
        })
        .chain(verdict.warnings.iter().map(|warning| {
            format!(
                "Warning [accepted] ({resource}) {}: {warning}",
                verdict.source
            )
        }))
        .collect();
    if all && verdict.accepted && verdict.warnings.is_empty() {
        lines.push(format!(
            "Info    [accepted] ({resource}) {}",
            verdict.source
        ));
    }
    lines
}

/// `VirtualService shop/catalog` from `VirtualService/shop/catalog`.
fn resource_name(key: &str) -> String {
    match key.split_once('/') {
        Some((kind, rest)) => format!("{kind} {rest}"),
        None => key.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_name_the_resource_its_source_and_the_field() {
        let verdict = Verdict {
            key: "VirtualService/shop/catalog".into(),
            accepted: false,
            errors: vec!["spec.http[0].route[0].weight: must be at most 100".into()],
            warnings: vec![],
            source: "dir:catalog.yaml#1".into(),
            observed_at: "2026-11-22T10:00:00Z".into(),
        };
        assert_eq!(
            describe(&verdict, false),
            [
                "Error   [rejected] (VirtualService shop/catalog) dir:catalog.yaml#1: \
              spec.http[0].route[0].weight: must be at most 100"
            ]
        );
    }
}
