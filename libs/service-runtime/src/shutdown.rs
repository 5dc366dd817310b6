//! Graceful shutdown: SIGTERM or SIGINT cancels a token that every task watches;
//! the service then has a bounded time to drain before it exits anyway.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The shutdown signal shared by a service's tasks.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    /// A shutdown that fires on SIGTERM or SIGINT (or [`Shutdown::trigger`]).
    pub fn on_signals() -> std::io::Result<Self> {
        let shutdown = Self::default();
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut interrupt =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        let token = shutdown.token.clone();
        tokio::spawn(async move {
            let signal = tokio::select! {
                _ = terminate.recv() => "SIGTERM",
                _ = interrupt.recv() => "SIGINT",
                _ = token.cancelled() => return,
            };
            tracing::info!(signal, "shutting down");
            token.cancel();
        });
        Ok(shutdown)
    }

    pub fn trigger(&self) {
        self.token.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Completes once shutdown has begun.
    pub async fn wait(&self) {
        self.token.cancelled().await;
    }

    /// Like [`Shutdown::wait`], for tasks that must own what they wait on.
    pub fn wait_owned(self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.token.cancelled_owned()
    }

    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }
}

/// Waits for `drain` to finish, but no longer than `limit`; returns whether it
/// finished in time.
pub async fn drain_within<F: std::future::Future>(limit: Duration, drain: F) -> bool {
    match tokio::time::timeout(limit, drain).await {
        Ok(_) => true,
        Err(_) => {
            tracing::warn!(?limit, "drain did not finish in time; exiting anyway");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn drain_is_bounded() {
        assert!(drain_within(Duration::from_secs(1), async {}).await);
        let never = std::future::pending::<()>();
        assert!(!drain_within(Duration::from_secs(1), never).await);
    }

    #[tokio::test]
    async fn trigger_wakes_waiters() {
        let shutdown = Shutdown::default();
        let waiter = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { shutdown.wait().await }
        });
        shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(shutdown.is_triggered());
    }
}
