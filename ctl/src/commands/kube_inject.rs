//! `trireme kube-inject -f FILE|-`: adds the sidecar to the workloads of a
//! Kubernetes YAML stream with the same code as the injection webhook, and
//! writes the stream back (other documents unchanged). `--explain` says for
//! each workload whether it would be injected and why, instead.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use injector::workloads::{self, WorkloadReport};
use injector::{Injector, InjectorConfig, SidecarTemplate};

#[derive(Debug, Args)]
pub struct KubeInjectArgs {
    /// The YAML to inject (`-` for standard input).
    #[arg(short = 'f', long = "filename")]
    pub input: PathBuf,

    /// Where to write the result (standard output when absent).
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,

    /// Injector configuration, as the injector's `--injector-config`
    /// (Istio's `policy`, selectors, `values`, `meshConfig`).
    #[arg(long = "injector-config", visible_alias = "injectConfigFile")]
    pub injector_config: Option<PathBuf>,

    /// A sidecar template replacing the built-in one.
    #[arg(long)]
    pub template: Option<PathBuf>,

    /// The namespace of workloads that do not name one.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,

    /// Say for each workload whether it would be injected and why, instead
    /// of writing the injected YAML.
    #[arg(long)]
    pub explain: bool,
}

/// Returns whether every workload could be handled.
pub fn run(args: &KubeInjectArgs) -> anyhow::Result<bool> {
    let injector = load_injector(args)?;
    let input = read_input(&args.input)?;
    let rewritten = workloads::rewrite(&injector, &input, &args.namespace)
        .with_context(|| format!("injecting {}", args.input.display()))?;
    if args.explain {
        for report in &rewritten.reports {
            println!("{}", explain_line(report));
            for warning in &report.warnings {
                println!("    warning: {warning}");
            }
        }
        if rewritten.reports.is_empty() {
            println!(
                "no workloads (Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job, CronJob) in the input"
            );
        }
        return Ok(true);
    }
    for report in &rewritten.reports {
        for warning in &report.warnings {
            eprintln!("warning: {}: {warning}", report.workload);
        }
    }
    match &args.output {
        Some(path) => std::fs::write(path, &rewritten.yaml)
            .with_context(|| format!("writing {}", path.display()))?,
        None => std::io::stdout()
            .write_all(rewritten.yaml.as_bytes())
            .context("writing to standard output")?,
    }
    Ok(true)
}

fn explain_line(report: &WorkloadReport) -> String {
    let verdict = if report.injected { "inject" } else { "skip  " };
    format!("{verdict}  {}: {}", report.workload, report.reason)
}

fn load_injector(args: &KubeInjectArgs) -> anyhow::Result<Injector> {
    let config = match &args.injector_config {
        Some(path) => InjectorConfig::from_file(path)?,
        None => InjectorConfig::default(),
    };
    let template = match &args.template {
        Some(path) => SidecarTemplate::from_file(path)?,
        None => SidecarTemplate::built_in(),
    };
    Ok(Injector::new(config, template))
}

fn read_input(path: &PathBuf) -> anyhow::Result<String> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading standard input")?;
        Ok(text)
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
    }
}
