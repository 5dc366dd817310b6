//! The event bus against a real nats-server (see `support::NatsServer`).

mod connection;
mod kv_bucket;
mod server_restart;
mod state_watch;
mod support;
mod topic;
