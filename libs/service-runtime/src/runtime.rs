use std::{future::Future, net::SocketAddr, time::Duration};

use axum::Router;

use crate::{
    Health, MetricsRegistry, RuntimeArgs, Shutdown, admin_server,
    shutdown::drain_within,
    telemetry::{self, TelemetryGuard},
};

/// A started service: logging and tracing installed, admin HTTP server up,
/// signal handlers armed. Hand the service's own work to [`ServiceRuntime::run`].
pub struct ServiceRuntime {
    pub component: &'static str,
    pub health: Health,
    pub shutdown: Shutdown,
    /// Where the admin server actually listens (resolves port 0).
    pub admin_addr: SocketAddr,
    drain_timeout: Duration,
    admin_task: tokio::task::JoinHandle<()>,
    _telemetry: TelemetryGuard,
}

impl ServiceRuntime {
    /// Starts the plumbing of `component`. `health` may already hold the
    /// service's readiness conditions; `extra_routes` join the admin server.
    pub async fn start(
        component: &'static str,
        args: &RuntimeArgs,
        admin_addr: SocketAddr,
        metrics: MetricsRegistry,
        health: Health,
        extra_routes: Router,
    ) -> anyhow::Result<Self> {
        let telemetry = telemetry::init(component, args)?;
        let shutdown = Shutdown::on_signals()?;
        let router =
            admin_server::router(component, health.clone(), metrics.freeze(), extra_routes);
        let (admin_addr, admin_task) =
            admin_server::serve(admin_addr, router, shutdown.clone()).await?;
        tracing::info!(
            component,
            version = crate::version::VERSION,
            %admin_addr,
            "started; serving /metrics, /healthz/live, /healthz/ready"
        );
        Ok(Self {
            component,
            health,
            shutdown,
            admin_addr,
            drain_timeout: args.drain_timeout,
            admin_task,
            _telemetry: telemetry,
        })
    }

    /// Serves the admin endpoints until shutdown is signalled, for a service
    /// whose work all happens in tasks it has spawned.
    pub async fn run_until_shutdown(self) -> anyhow::Result<()> {
        let shutdown = self.shutdown.clone();
        self.run(async move {
            shutdown.wait().await;
            Ok(())
        })
        .await
    }

    /// Runs `work` until it ends or shutdown is signalled. `work` should watch
    /// [`Shutdown`] and wind down when it fires; it gets the drain timeout to do
    /// so, after which the service exits regardless.
    pub async fn run<F>(self, work: F) -> anyhow::Result<()>
    where
        F: Future<Output = anyhow::Result<()>>,
    {
        let mut work = std::pin::pin!(work);
        let outcome = tokio::select! {
            result = &mut work => result,
            _ = self.shutdown.wait() => {
                let drained = drain_within(self.drain_timeout, &mut work).await;
                tracing::info!(drained, "work stopped");
                Ok(())
            }
        };
        // Stop the admin server too, whatever ended the work.
        self.shutdown.trigger();
        drain_within(self.drain_timeout, self.admin_task).await;
        tracing::info!(component = self.component, "stopped");
        outcome
    }
}
