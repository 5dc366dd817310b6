//! `agent init`: the pod's traffic capture, as Istio's init container
//! (istio-iptables) writes it in REDIRECT mode. Runs once, as root (or with
//! NET_ADMIN), in the pod's network namespace before the app starts; the
//! proxy then sees inbound connections on 15006 and outbound ones on 15001.
//!
//! The flags carry the meaning of the `traffic.sidecar.istio.io/*` pod
//! annotations, and also answer to istio-iptables' short and long names and
//! environment variables, so an injector template written for Istio's init
//! works unchanged.

mod config;
mod iptables;
mod rules;

use std::fmt;

use anyhow::Context;
use clap::{Args, ValueEnum};
use service_runtime::{RuntimeArgs, telemetry};

use config::{CaptureConfig, Cidr, Selection, ValueError};

/// A comma-separated flag value. A newtype so that clap takes the whole
/// list as one value rather than expecting the flag to be repeated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed<T>(Vec<T>);

fn ids(text: &str) -> Result<Listed<u32>, ValueError> {
    config::parse_ids(text).map(Listed)
}

fn ports(text: &str) -> Result<Listed<u16>, ValueError> {
    config::parse_ports(text).map(Listed)
}

fn cidrs(text: &str) -> Result<Listed<Cidr>, ValueError> {
    config::parse_cidrs(text).map(Listed)
}

/// How inbound connections reach the proxy. Only REDIRECT exists here; the
/// flag is accepted so that Istio's `-m REDIRECT` works, and so that a
/// template asking for TPROXY fails loudly instead of being half-honoured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InterceptionMode {
    #[value(name = "REDIRECT")]
    Redirect,
}

/// Install the iptables rules that send the pod's TCP traffic through its
/// proxy (Istio's init container, REDIRECT mode). Needs root or NET_ADMIN
/// in the pod's network namespace, except with --dry-run.
#[derive(Debug, Args)]
// A one-shot command has nothing to drain; the shared flag stays accepted.
#[command(mut_arg("drain_timeout", |arg| arg.hide(true)))]
pub struct InitArgs {
    /// Uid(s) the proxy runs as, comma-separated; their traffic is never
    /// captured.
    #[arg(short = 'u', long, value_name = "UIDS", default_value = "1337", value_parser = ids)]
    proxy_uid: Listed<u32>,

    /// Gid(s) the proxy runs as [default: the --proxy-uid values].
    #[arg(short = 'g', long, value_name = "GIDS", value_parser = ids)]
    proxy_gid: Option<Listed<u32>>,

    /// Port of the proxy's inbound listener, where captured inbound
    /// connections are sent.
    #[arg(short = 'z', long, env = "INBOUND_CAPTURE_PORT", value_name = "PORT",
          default_value = "15006", value_parser = config::parse_port)]
    inbound_capture_port: u16,

    /// Port of the proxy's outbound listener, where captured outbound
    /// connections are sent.
    #[arg(short = 'p', long, visible_alias = "envoy-port", env = "ENVOY_PORT",
          value_name = "PORT", default_value = "15001", value_parser = config::parse_port)]
    outbound_capture_port: u16,

    /// Inbound ports to capture: `*` for all, a comma-separated list, or
    /// empty for none. Annotation: traffic.sidecar.istio.io/includeInboundPorts.
    #[arg(short = 'b', long, visible_alias = "istio-inbound-ports", env = "ISTIO_INBOUND_PORTS",
          value_name = "PORTS", default_value = "*", value_parser = config::parse_port_selection)]
    inbound_ports: Selection<u16>,

    /// Inbound ports never captured, comma-separated; they win over
    /// --inbound-ports. The proxy's own 15008, 15090, 15021 and 15020 are
    /// always excluded. Annotation: traffic.sidecar.istio.io/excludeInboundPorts.
    #[arg(short = 'd', long, visible_alias = "istio-local-exclude-ports",
          env = "ISTIO_LOCAL_EXCLUDE_PORTS", value_name = "PORTS", default_value = "",
          value_parser = ports)]
    exclude_inbound_ports: Listed<u16>,

    /// Outbound destinations to capture: `*` for all, comma-separated CIDRs,
    /// or empty for none. Annotation: traffic.sidecar.istio.io/includeOutboundIPRanges.
    #[arg(short = 'i', long, visible_alias = "istio-service-cidr", env = "ISTIO_SERVICE_CIDR",
          value_name = "CIDRS", default_value = "*", value_parser = config::parse_cidr_selection)]
    outbound_ip_ranges: Selection<Cidr>,

    /// Outbound destinations never captured, comma-separated CIDRs; they win
    /// over every inclusion. Annotation: traffic.sidecar.istio.io/excludeOutboundIPRanges.
    #[arg(short = 'x', long, visible_alias = "istio-service-exclude-cidr",
          env = "ISTIO_SERVICE_EXCLUDE_CIDR", value_name = "CIDRS", default_value = "",
          value_parser = cidrs)]
    exclude_outbound_ip_ranges: Listed<Cidr>,

    /// Outbound ports captured whatever the destination, unless it is in an
    /// excluded range; comma-separated. Annotation:
    /// traffic.sidecar.istio.io/includeOutboundPorts.
    #[arg(short = 'q', long, visible_alias = "istio-outbound-ports", env = "ISTIO_OUTBOUND_PORTS",
          value_name = "PORTS", default_value = "", value_parser = ports)]
    outbound_ports: Listed<u16>,

    /// Outbound ports never captured, comma-separated. Annotation:
    /// traffic.sidecar.istio.io/excludeOutboundPorts.
    #[arg(short = 'o', long, visible_alias = "istio-local-outbound-ports-exclude",
          env = "ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE", value_name = "PORTS", default_value = "",
          value_parser = ports)]
    exclude_outbound_ports: Listed<u16>,

    /// How inbound traffic is captured; only REDIRECT is supported.
    /// Annotation: sidecar.istio.io/interceptionMode.
    #[arg(
        short = 'm',
        long,
        visible_alias = "istio-inbound-interception-mode",
        value_name = "MODE",
        value_enum,
        default_value = "REDIRECT"
    )]
    inbound_interception_mode: InterceptionMode,

    /// Print the iptables-restore input that would be applied, and change
    /// nothing. Needs no privileges.
    #[arg(long, conflicts_with = "cleanup")]
    dry_run: bool,

    /// Remove the capture (jumps, rules and ISTIO_* chains) instead of
    /// installing it; does nothing when none is installed.
    #[arg(long, visible_alias = "clean")]
    cleanup: bool,

    #[command(flatten)]
    runtime: RuntimeArgs,
}

impl InitArgs {
    fn capture_config(&self) -> CaptureConfig {
        // REDIRECT is the only mode; a second one must be handled here.
        let InterceptionMode::Redirect = self.inbound_interception_mode;
        let proxy_uids = self.proxy_uid.0.clone();
        CaptureConfig {
            proxy_gids: self
                .proxy_gid
                .as_ref()
                .map_or_else(|| proxy_uids.clone(), |gids| gids.0.clone()),
            proxy_uids,
            inbound_capture_port: self.inbound_capture_port,
            outbound_capture_port: self.outbound_capture_port,
            inbound_ports: self.inbound_ports.clone(),
            exclude_inbound_ports: self.exclude_inbound_ports.0.clone(),
            outbound_ip_ranges: self.outbound_ip_ranges.clone(),
            exclude_outbound_ip_ranges: self.exclude_outbound_ip_ranges.0.clone(),
            outbound_ports: self.outbound_ports.0.clone(),
            exclude_outbound_ports: self.exclude_outbound_ports.0.clone(),
        }
    }
}

/// Shows a list the way it is written on the command line.
struct Commas<'a, T>(&'a [T]);

impl<T: fmt::Display> fmt::Display for Commas<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (at, item) in self.0.iter().enumerate() {
            if at > 0 {
                f.write_str(",")?;
            }
            write!(f, "{item}")?;
        }
        Ok(())
    }
}

impl<T: fmt::Display> fmt::Display for Selection<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selection::All => f.write_str("*"),
            Selection::Only(items) => Commas(items).fmt(f),
        }
    }
}

/// What the rules are for; heads the iptables-restore input as a comment.
fn summary(config: &CaptureConfig) -> String {
    format!(
        "Trireme agent init: capture for proxy uid {} gid {}, inbound to {}, outbound to {} (REDIRECT, IPv4)",
        Commas(&config.proxy_uids),
        Commas(&config.proxy_gids),
        config.inbound_capture_port,
        config.outbound_capture_port,
    )
}

/// What was asked for but is not applied, said out loud rather than dropped.
fn warnings(config: &CaptureConfig) -> Vec<String> {
    config
        .ignored_ipv6_ranges()
        .into_iter()
        .map(|(flag, cidr)| {
            format!("not applied: {flag} {cidr} is IPv6; only IPv4 traffic is captured")
        })
        .collect()
}

pub fn run(args: InitArgs) -> anyhow::Result<()> {
    let config = args.capture_config();
    let warnings = warnings(&config);
    // Comments in the restore input, so a saved --dry-run explains itself.
    let notes: Vec<String> = std::iter::once(summary(&config))
        .chain(warnings.iter().cloned())
        .collect();
    let rules = rules::capture_rules(&config);
    if args.dry_run {
        // The plan against an empty table, which is exactly what a first run
        // in a fresh pod applies; stdout carries nothing else.
        let input = iptables::install_input(&rules, &iptables::NatTable::default(), &notes);
        print!("{input}");
        return Ok(());
    }

    let _telemetry = telemetry::init("agent-init", &args.runtime)?;
    let current = iptables::save_nat().context("reading the nat table")?;
    if args.cleanup {
        return match iptables::cleanup_input(&current) {
            None => {
                tracing::info!("no traffic capture installed; nothing to remove");
                Ok(())
            }
            Some(input) => {
                iptables::restore(&input).context("removing the traffic capture")?;
                tracing::info!("traffic capture removed");
                Ok(())
            }
        };
    }

    tracing::info!(
        proxy_uid = %Commas(&config.proxy_uids),
        proxy_gid = %Commas(&config.proxy_gids),
        inbound_capture_port = config.inbound_capture_port,
        outbound_capture_port = config.outbound_capture_port,
        inbound_ports = %config.inbound_ports,
        exclude_inbound_ports = %Commas(&config.exclude_inbound_ports),
        outbound_ip_ranges = %config.outbound_ip_ranges,
        exclude_outbound_ip_ranges = %Commas(&config.exclude_outbound_ip_ranges),
        outbound_ports = %Commas(&config.outbound_ports),
        exclude_outbound_ports = %Commas(&config.exclude_outbound_ports),
        "installing traffic capture"
    );
    for warning in &warnings {
        tracing::warn!("{warning}");
    }
    let input = iptables::install_input(&rules, &current, &notes);
    tracing::debug!(%input, "iptables-restore input");
    iptables::restore(&input).context("installing the traffic capture")?;
    tracing::info!(rules = rules.len(), "traffic capture installed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{FromArgMatches, error::ErrorKind};

    fn command() -> clap::Command {
        InitArgs::augment_args(clap::Command::new("init").no_binary_name(true))
    }

    fn parse(args: &[&str]) -> Result<InitArgs, clap::Error> {
        let matches = command().try_get_matches_from(args)?;
        InitArgs::from_arg_matches(&matches)
    }

    #[test]
    fn defaults_are_istios_injected_defaults() {
        assert_eq!(
            parse(&[]).unwrap().capture_config(),
            CaptureConfig::default()
        );
    }

    #[test]
    fn flags_fill_the_config() {
        let args = parse(&[
            "--proxy-uid=2000",
            "--inbound-capture-port=16006",
            "--outbound-capture-port=16001",
            "--inbound-ports=9080,9443",
            "--exclude-inbound-ports=22",
            "--outbound-ip-ranges=10.96.0.0/12",
            "--exclude-outbound-ip-ranges=169.254.169.254/32",
            "--outbound-ports=5432",
            "--exclude-outbound-ports=3306",
        ])
        .unwrap();
        let config = args.capture_config();
        assert_eq!(config.proxy_uids, [2000]);
        assert_eq!(config.proxy_gids, [2000], "gid follows uid");
        assert_eq!(config.inbound_capture_port, 16006);
        assert_eq!(config.outbound_capture_port, 16001);
        assert_eq!(config.inbound_ports, Selection::Only(vec![9080, 9443]));
        assert_eq!(config.exclude_inbound_ports, [22]);
        assert_eq!(config.outbound_ip_ranges.to_string(), "10.96.0.0/12");
        assert_eq!(
            Commas(&config.exclude_outbound_ip_ranges).to_string(),
            "169.254.169.254/32"
        );
        assert_eq!(config.outbound_ports, [5432]);
        assert_eq!(config.exclude_outbound_ports, [3306]);
    }

    #[test]
    fn istio_iptables_arguments_are_understood() {
        // The argument list Istio's injector gives its init container.
        let args = parse(&[
            "-p",
            "15001",
            "-z",
            "15006",
            "-u",
            "1337",
            "-m",
            "REDIRECT",
            "-i",
            "*",
            "-x",
            "",
            "-b",
            "*",
            "-d",
            "15090,15021,15020",
        ])
        .unwrap();
        let config = args.capture_config();
        assert_eq!(
            config,
            CaptureConfig {
                exclude_inbound_ports: vec![15090, 15021, 15020],
                ..CaptureConfig::default()
            }
        );
        // Same rules as without the -d: those ports are always excluded.
        assert_eq!(
            rules::capture_rules(&config),
            rules::capture_rules(&CaptureConfig::default())
        );
    }

    #[test]
    fn empty_inbound_ports_mean_none() {
        let args = parse(&["--inbound-ports", ""]).unwrap();
        assert_eq!(args.capture_config().inbound_ports, Selection::Only(vec![]));
    }

    #[test]
    fn bad_values_name_the_flag_and_the_value() {
        for (args, flag, value) in [
            (
                &["--inbound-ports", "80,http"][..],
                "--inbound-ports",
                "http",
            ),
            (
                &["--exclude-outbound-ip-ranges", "10.0.0.0/33"],
                "--exclude-outbound-ip-ranges",
                "10.0.0.0/33",
            ),
            (
                &["--outbound-ip-ranges", "10.0.0/8"],
                "--outbound-ip-ranges",
                "10.0.0/8",
            ),
            (
                &["--outbound-capture-port", "70000"],
                "--outbound-capture-port",
                "70000",
            ),
            (
                &["--proxy-uid", "istio-proxy"],
                "--proxy-uid",
                "istio-proxy",
            ),
            (
                &["--exclude-outbound-ports", "0"],
                "--exclude-outbound-ports",
                "0",
            ),
        ] {
            let error = parse(args).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::ValueValidation, "{args:?}");
            let message = error.to_string();
            assert!(
                message.contains(flag) && message.contains(value),
                "{args:?} gave: {message}"
            );
        }
    }

    #[test]
    fn tproxy_is_refused() {
        let error = parse(&["-m", "TPROXY"]).unwrap_err();
        assert!(error.to_string().contains("TPROXY"), "{error}");
    }

    #[test]
    fn dry_run_and_cleanup_do_not_mix() {
        let error = parse(&["--dry-run", "--cleanup"]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::ArgumentConflict);
    }

    #[test]
    fn help_names_the_istio_annotation_of_each_flag() {
        let help = command().render_long_help().to_string();
        for (flag, annotation) in [
            (
                "--inbound-ports",
                "traffic.sidecar.istio.io/includeInboundPorts",
            ),
            (
                "--exclude-inbound-ports",
                "traffic.sidecar.istio.io/excludeInboundPorts",
            ),
            (
                "--outbound-ip-ranges",
                "traffic.sidecar.istio.io/includeOutboundIPRanges",
            ),
            (
                "--exclude-outbound-ip-ranges",
                "traffic.sidecar.istio.io/excludeOutboundIPRanges",
            ),
            (
                "--outbound-ports",
                "traffic.sidecar.istio.io/includeOutboundPorts",
            ),
            (
                "--exclude-outbound-ports",
                "traffic.sidecar.istio.io/excludeOutboundPorts",
            ),
        ] {
            let section = help
                .split("\n  -")
                .find(|section| section.contains(&format!("{flag} <")))
                .unwrap_or_else(|| panic!("no {flag} in help:\n{help}"));
            assert!(
                section.contains(annotation),
                "{flag} does not mention {annotation}:\n{section}"
            );
        }
    }

    #[test]
    fn ipv6_ranges_are_noted_as_not_applied() {
        let args = parse(&["--exclude-outbound-ip-ranges", "10.0.0.0/8,fd00::/8"]).unwrap();
        assert_eq!(
            warnings(&args.capture_config()),
            [
                "not applied: --exclude-outbound-ip-ranges fd00::/8 is IPv6; only IPv4 traffic is captured"
            ]
        );
    }
}
