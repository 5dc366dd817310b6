//! Logs through `tracing`, and traces to an OpenTelemetry collector over OTLP/gRPC
//! when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the standard variable, so the usual
//! `OTEL_*` settings apply too).

use anyhow::Context;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

use crate::{LogFormat, RuntimeArgs};

/// The environment variable that turns on trace export.
pub const OTLP_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// Keeps the trace pipeline alive; flushes pending spans when dropped.
#[must_use = "dropping the guard stops trace export"]
pub struct TelemetryGuard {
    tracer_provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.tracer_provider.take() {
            // Flushing may block briefly; a failure only loses the last spans.
            if let Err(error) = provider.shutdown() {
                eprintln!("trace export shutdown: {error}");
            }
        }
    }
}

/// Installs the global `tracing` subscriber for `service`. Must run inside a
/// Tokio runtime, which the OTLP exporter uses.
pub fn init(service: &str, args: &RuntimeArgs) -> anyhow::Result<TelemetryGuard> {
    let filter = EnvFilter::try_new(&args.log_level)
        .with_context(|| format!("--log-level {:?} is not a valid filter", args.log_level))?;
    let colour = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let logs = match args.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_target(true)
            .with_ansi(colour)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .boxed(),
    };

    let tracer_provider = match std::env::var(OTLP_ENDPOINT_ENV) {
        Ok(endpoint) if !endpoint.is_empty() => Some(otlp_tracer_provider(service)?),
        _ => None,
    };
    let traces = tracer_provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer().with_tracer(provider.tracer(service.to_string()))
    });

    tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(traces)
        .try_init()
        .context("a global tracing subscriber is already installed")?;
    if tracer_provider.is_some() {
        tracing::info!(endpoint = %std::env::var(OTLP_ENDPOINT_ENV).unwrap_or_default(), "exporting traces over OTLP");
    }
    Ok(TelemetryGuard { tracer_provider })
}

fn otlp_tracer_provider(service: &str) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .context("building the OTLP span exporter")?;
    let resource = Resource::builder()
        .with_service_name(service.to_string())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}
