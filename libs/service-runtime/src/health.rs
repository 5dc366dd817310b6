//! Liveness and readiness. A service is live while its process answers; it is
//! ready only when every condition it registered holds (e.g. "connected to the
//! bus", "initial config loaded"), so a load balancer or Kubernetes never sends
//! work to a replica that cannot do it.

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
};

/// The readiness conditions of one service.
#[derive(Debug, Clone, Default)]
pub struct Health {
    conditions: Arc<RwLock<BTreeMap<String, Condition>>>,
}

#[derive(Debug, Clone)]
struct Condition {
    ready: bool,
    detail: String,
}

/// One readiness condition; the owner flips it as its state changes.
#[derive(Debug, Clone)]
pub struct Readiness {
    name: String,
    health: Health,
}

/// A snapshot of readiness, for `/healthz/ready` and `trireme check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadinessReport {
    pub ready: bool,
    /// `(condition, ready, detail)` in name order.
    pub conditions: Vec<(String, bool, String)>,
}

impl Health {
    /// Adds a condition that starts out not ready with `detail` as the reason.
    pub fn register(&self, name: &str, detail: &str) -> Readiness {
        self.write().insert(
            name.to_string(),
            Condition {
                ready: false,
                detail: detail.to_string(),
            },
        );
        Readiness {
            name: name.to_string(),
            health: self.clone(),
        }
    }

    pub fn report(&self) -> ReadinessReport {
        let conditions: Vec<_> = self
            .conditions
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .map(|(name, c)| (name.clone(), c.ready, c.detail.clone()))
            .collect();
        ReadinessReport {
            ready: conditions.iter().all(|(_, ready, _)| *ready),
            conditions,
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Condition>> {
        self.conditions
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Readiness {
    pub fn set_ready(&self, detail: &str) {
        self.set(true, detail);
    }

    pub fn set_not_ready(&self, detail: &str) {
        self.set(false, detail);
    }

    pub fn set(&self, ready: bool, detail: &str) {
        if let Some(condition) = self.health.write().get_mut(&self.name) {
            condition.ready = ready;
            condition.detail = detail.to_string();
        }
    }
}

impl ReadinessReport {
    /// One line per condition, e.g. `[+] bus: connected`.
    pub fn to_text(&self) -> String {
        let mut text = String::from(if self.ready { "ready\n" } else { "not ready\n" });
        for (name, ready, detail) in &self.conditions {
            let mark = if *ready { '+' } else { '-' };
            text.push_str(&format!("[{mark}] {name}: {detail}\n"));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_condition_holds() {
        let health = Health::default();
        assert!(health.report().ready, "no conditions means ready");
        let bus = health.register("bus", "connecting");
        let config = health.register("config", "waiting for initial state");
        assert!(!health.report().ready);
        bus.set_ready("connected");
        assert!(!health.report().ready);
        config.set_ready("synced");
        assert!(health.report().ready);
        bus.set_not_ready("disconnected");
        let report = health.report();
        assert!(!report.ready);
        assert!(report.to_text().contains("[-] bus: disconnected"));
        assert!(report.to_text().contains("[+] config: synced"));
    }
}

impl Readiness {
    /// Keeps this condition in step with a watched state (e.g. the bus
    /// connection) until the sender is dropped. `judge` says whether a state
    /// counts as ready and how to describe it.
    pub fn follow<T, F>(self, mut states: tokio::sync::watch::Receiver<T>, judge: F)
    where
        T: Send + Sync + 'static,
        F: Fn(&T) -> (bool, String) + Send + 'static,
    {
        tokio::spawn(async move {
            loop {
                let (ready, detail) = judge(&states.borrow_and_update());
                self.set(ready, &detail);
                if states.changed().await.is_err() {
                    return;
                }
            }
        });
    }
}

#[cfg(test)]
mod follow_tests {
    use super::*;

    #[tokio::test]
    async fn follows_a_watched_state() {
        let health = Health::default();
        let (tx, rx) = tokio::sync::watch::channel(false);
        health.register("bus", "connecting").follow(rx, |up| {
            (*up, if *up { "up".into() } else { "down".into() })
        });
        tokio::task::yield_now().await;
        assert!(!health.report().ready);
        tx.send(true).unwrap();
        for _ in 0..100 {
            if health.report().ready {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(
            health.report().conditions[0],
            ("bus".into(), true, "up".into())
        );
    }
}
