//! What the load tool measured, shared between the proxies' tasks (which
//! write it) and the report API (which reads it). Per proxy only a few
//! atomics; byte and response totals per time window come from an
//! append-only log of responses, so a query can ask about any past instant.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};

use serde::Serialize;

use crate::resource_type::XdsType;

/// One simulated proxy's published state.
#[derive(Debug, Default)]
pub struct ProxySlot {
    /// When the current stream opened (unix ns); 0 while disconnected.
    pub connected_ns: AtomicU64,
    /// When the proxy had ACKed its full config on the current stream; 0 before.
    pub ready_ns: AtomicU64,
    /// Types ACKed at least once on the current stream (bits of [`XdsType::bit`]).
    pub acked: AtomicU8,
    /// When the latest response of each type arrived (unix ns; 0: never).
    pub last_response_ns: [AtomicU64; 4],
}

/// Totals of one type over the whole run.
#[derive(Debug, Default)]
struct TypeCounters {
    responses: AtomicU64,
    bytes: AtomicU64,
    acks: AtomicU64,
    nacks: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct Event {
    at_ns: u64,
    bytes: u32,
    xds_type: XdsType,
}

#[derive(Debug)]
struct EventLog {
    events: Vec<Event>,
    capacity: usize,
    /// Events before this instant were dropped to bound memory.
    dropped_before_ns: u64,
}

/// Everything the load tool measured.
#[derive(Debug)]
pub struct LoadStats {
    proxies: Vec<ProxySlot>,
    types: [TypeCounters; 4],
    connected: AtomicU64,
    reconnects: AtomicU64,
    connect_failures: AtomicU64,
    log: Mutex<EventLog>,
}

/// `GET /stats`.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Stats {
    pub proxies: usize,
    pub connected: u64,
    /// Proxies that ACKed their full config on their current stream.
    pub ready: usize,
    /// Streams that ended and were opened again.
    pub reconnects: u64,
    /// Connection attempts that failed (each is retried after a backoff).
    pub connect_failures: u64,
    pub types: BTreeMap<&'static str, TypeStats>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct TypeStats {
    pub responses: u64,
    pub bytes: u64,
    pub acks: u64,
    pub nacks: u64,
}

/// `GET /converged`: who heard a type (or any type) after `since`.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Converged {
    #[serde(rename = "type")]
    pub xds_type: &'static str,
    pub since: u64,
    /// Proxies whose latest response of the type arrived after `since`.
    pub updated: usize,
    pub of: usize,
    /// Earliest and latest response after `since` (unix ns); the latest is
    /// the last proxy's ACK time, as the ACK leaves right after.
    pub first_ns: Option<u64>,
    pub last_ns: Option<u64>,
    pub bytes_since: u64,
    pub responses_since: u64,
    /// Part of the window was dropped from the log (byte and response counts
    /// are then short).
    pub log_truncated: bool,
}

/// `GET /ready`.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    pub proxies: usize,
    pub connected: u64,
    /// Proxies that ACKed their full config on their current stream.
    pub full_config: usize,
    /// Per type, proxies that ACKed it at least once on their current stream.
    pub acked: BTreeMap<&'static str, usize>,
}

/// `GET /ready_times`.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ReadyTimes {
    /// Earliest and latest opening of a current stream (unix ns).
    pub first_connect_ns: Option<u64>,
    pub last_connect_ns: Option<u64>,
    /// When the last proxy ACKed its full config, once all have.
    pub all_acked_ns: Option<u64>,
    pub ready: usize,
    pub of: usize,
}

impl LoadStats {
    /// `log_capacity` bounds the response log (16 bytes an entry).
    pub fn new(proxies: usize, log_capacity: usize) -> LoadStats {
        LoadStats {
            proxies: (0..proxies).map(|_| ProxySlot::default()).collect(),
            types: Default::default(),
            connected: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            log: Mutex::new(EventLog {
                events: Vec::new(),
                capacity: log_capacity.max(2),
                dropped_before_ns: 0,
            }),
        }
    }

    pub fn proxy(&self, index: usize) -> &ProxySlot {
        &self.proxies[index]
    }

    pub fn stream_opened(&self, index: usize, at_ns: u64) {
        let slot = &self.proxies[index];
        slot.acked.store(0, Relaxed);
        slot.ready_ns.store(0, Relaxed);
        slot.connected_ns.store(at_ns, Relaxed);
        self.connected.fetch_add(1, Relaxed);
    }

    pub fn stream_closed(&self, index: usize) {
        let slot = &self.proxies[index];
        slot.connected_ns.store(0, Relaxed);
        slot.ready_ns.store(0, Relaxed);
        slot.acked.store(0, Relaxed);
        self.connected.fetch_sub(1, Relaxed);
        self.reconnects.fetch_add(1, Relaxed);
    }

    pub fn connect_failed(&self) {
        self.connect_failures.fetch_add(1, Relaxed);
    }

    pub fn record_response(&self, index: usize, xds_type: XdsType, at_ns: u64, bytes: usize) {
        self.proxies[index].last_response_ns[xds_type.index()].store(at_ns, Relaxed);
        let counters = &self.types[xds_type.index()];
        counters.responses.fetch_add(1, Relaxed);
        counters.bytes.fetch_add(bytes as u64, Relaxed);
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if log.events.len() >= log.capacity {
            // Keep the newer half: queries are about recent pushes.
            let half = log.events.len() / 2;
            let dropped = log.events.drain(..half).map(|e| e.at_ns).max();
            log.dropped_before_ns = log.dropped_before_ns.max(dropped.unwrap_or(0));
        }
        log.events.push(Event {
            at_ns,
            bytes: bytes.min(u32::MAX as usize) as u32,
            xds_type,
        });
    }

    /// Counts an ACK or NACK of `xds_type`.
    pub fn record_reply(&self, xds_type: XdsType, ack: bool) {
        let counters = &self.types[xds_type.index()];
        if ack {
            counters.acks.fetch_add(1, Relaxed);
        } else {
            counters.nacks.fetch_add(1, Relaxed);
        }
    }

    /// Marks `xds_type` settled (ACKed, or answered as asked by `--nack-type`).
    pub fn mark_settled(&self, index: usize, xds_type: XdsType) {
        self.proxies[index].acked.fetch_or(xds_type.bit(), Relaxed);
    }

    /// Notes that a proxy has its full config, once per stream.
    pub fn mark_ready(&self, index: usize, at_ns: u64) {
        let slot = &self.proxies[index];
        slot.ready_ns
            .compare_exchange(0, at_ns, Relaxed, Relaxed)
            .ok();
    }

    pub fn stats(&self) -> Stats {
        Stats {
            proxies: self.proxies.len(),
            connected: self.connected.load(Relaxed),
            ready: self.ready_count(),
            reconnects: self.reconnects.load(Relaxed),
            connect_failures: self.connect_failures.load(Relaxed),
            types: XdsType::ALL
                .into_iter()
                .map(|t| {
                    let c = &self.types[t.index()];
                    let stats = TypeStats {
                        responses: c.responses.load(Relaxed),
                        bytes: c.bytes.load(Relaxed),
                        acks: c.acks.load(Relaxed),
                        nacks: c.nacks.load(Relaxed),
                    };
                    (t.short_name(), stats)
                })
                .collect(),
        }
    }

    /// Who heard `xds_type` (any type when `None`) after `since`.
    pub fn converged(&self, since: u64, xds_type: Option<XdsType>) -> Converged {
        let matches = |t: XdsType| xds_type.is_none_or(|wanted| wanted == t);
        let mut updated = 0;
        let mut last_ns = None::<u64>;
        for slot in &self.proxies {
            let latest = XdsType::ALL
                .into_iter()
                .filter(|&t| matches(t))
                .map(|t| slot.last_response_ns[t.index()].load(Relaxed))
                .max()
                .unwrap_or(0);
            if latest > since {
                updated += 1;
                last_ns = last_ns.max(Some(latest));
            }
        }
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let (mut first_ns, mut bytes_since, mut responses_since) = (None::<u64>, 0, 0);
        for event in log
            .events
            .iter()
            .filter(|e| e.at_ns > since && matches(e.xds_type))
        {
            first_ns = Some(first_ns.map_or(event.at_ns, |f| f.min(event.at_ns)));
            bytes_since += u64::from(event.bytes);
            responses_since += 1;
        }
        Converged {
            xds_type: xds_type.map_or("any", XdsType::short_name),
            since,
            updated,
            of: self.proxies.len(),
            first_ns,
            last_ns,
            bytes_since,
            responses_since,
            log_truncated: log.dropped_before_ns > since,
        }
    }

    pub fn readiness(&self) -> Readiness {
        let full_config = self.ready_count();
        Readiness {
            ready: full_config == self.proxies.len(),
            proxies: self.proxies.len(),
            connected: self.connected.load(Relaxed),
            full_config,
            acked: XdsType::ALL
                .into_iter()
                .map(|t| {
                    let count = self
                        .proxies
                        .iter()
                        .filter(|slot| slot.acked.load(Relaxed) & t.bit() != 0)
                        .count();
                    (t.short_name(), count)
                })
                .collect(),
        }
    }

    pub fn ready_times(&self) -> ReadyTimes {
        let connects = self
            .proxies
            .iter()
            .map(|slot| slot.connected_ns.load(Relaxed))
            .filter(|&ns| ns != 0);
        let (first_connect_ns, last_connect_ns) = connects.fold((None, None), |(lo, hi), ns| {
            (Some(lo.map_or(ns, |l: u64| l.min(ns))), hi.max(Some(ns)))
        });
        let ready_at: Vec<u64> = self
            .proxies
            .iter()
            .map(|slot| slot.ready_ns.load(Relaxed))
            .filter(|&ns| ns != 0)
            .collect();
        let all_ready = ready_at.len() == self.proxies.len();
        ReadyTimes {
            first_connect_ns,
            last_connect_ns,
            all_acked_ns: if all_ready {
                ready_at.iter().copied().max()
            } else {
                None
            },
            ready: ready_at.len(),
            of: self.proxies.len(),
        }
    }

    fn ready_count(&self) -> usize {
        self.proxies
            .iter()
            .filter(|slot| slot.ready_ns.load(Relaxed) != 0)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn convergence_counts_proxies_whose_latest_response_is_after_since() {
        let stats = LoadStats::new(3, 100);
        stats.record_response(0, XdsType::Cds, 100, 10);
        stats.record_response(1, XdsType::Cds, 100, 10);
        stats.record_response(0, XdsType::Cds, 205, 30);
        stats.record_response(1, XdsType::Lds, 210, 5);
        stats.record_response(2, XdsType::Cds, 220, 40);
        stats.record_response(2, XdsType::Cds, 230, 40);

        let cds = stats.converged(200, Some(XdsType::Cds));
        assert_eq!(cds.updated, 2);
        assert_eq!(cds.of, 3);
        assert_eq!((cds.first_ns, cds.last_ns), (Some(205), Some(230)));
        assert_eq!((cds.bytes_since, cds.responses_since), (110, 3));

        let any = stats.converged(200, None);
        assert_eq!(any.updated, 3);
        assert_eq!(any.bytes_since, 115);
        assert_eq!(any.xds_type, "any");

        let none = stats.converged(300, Some(XdsType::Cds));
        assert_eq!((none.updated, none.first_ns, none.last_ns), (0, None, None));
    }

    #[test]
    fn a_full_log_keeps_the_newer_half_and_says_so() {
        let stats = LoadStats::new(1, 4);
        for at in 1..=5 {
            stats.record_response(0, XdsType::Eds, at * 10, 1);
        }
        let recent = stats.converged(25, Some(XdsType::Eds));
        assert_eq!(recent.responses_since, 3);
        assert!(!recent.log_truncated);
        let old = stats.converged(0, Some(XdsType::Eds));
        assert!(old.log_truncated);
        assert_eq!(old.responses_since, 3);
    }

    #[test]
    fn readiness_restarts_with_each_stream() {
        let stats = LoadStats::new(2, 10);
        stats.stream_opened(0, 1_000);
        stats.stream_opened(1, 1_500);
        stats.mark_settled(0, XdsType::Cds);
        stats.mark_ready(0, 2_000);
        stats.mark_ready(1, 3_000);
        stats.mark_ready(1, 4_000); // only the first counts
        let times = stats.ready_times();
        assert_eq!(times.first_connect_ns, Some(1_000));
        assert_eq!(times.last_connect_ns, Some(1_500));
        assert_eq!(times.all_acked_ns, Some(3_000));
        assert!(stats.readiness().ready);
        assert_eq!(stats.readiness().acked["cds"], 1);

        stats.stream_closed(1);
        assert!(!stats.readiness().ready);
        assert_eq!(stats.ready_times().all_acked_ns, None);
        assert_eq!(stats.stats().reconnects, 1);
        assert_eq!(stats.stats().connected, 1);
    }
}
