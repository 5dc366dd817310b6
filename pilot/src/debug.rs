//! `/debug/*` pages on pilot's HTTP port, named as istiod's so operators'
//! habits carry over: sync status, per-proxy config dumps, the config and the
//! registry pilot holds, and the state of the push pipeline.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::xds::generator::{Subscription, generate};
use crate::xds::sync_status::SyncStatus;
use crate::xds::{PushContext, ResourceType, XdsMetrics};

#[derive(Clone)]
struct DebugState {
    contexts: watch::Receiver<Arc<PushContext>>,
    sync_status: SyncStatus,
    metrics: XdsMetrics,
}

/// The debug routes, to merge into the admin server.
pub fn router(
    contexts: watch::Receiver<Arc<PushContext>>,
    sync_status: SyncStatus,
    metrics: XdsMetrics,
) -> Router {
    Router::new()
        .route("/debug/syncz", get(syncz))
        .route("/debug/config_dump", get(config_dump))
        .route("/debug/configz", get(configz))
        .route("/debug/registryz", get(registryz))
        .route("/debug/push_status", get(push_status))
        .with_state(DebugState {
            contexts,
            sync_status,
            metrics,
        })
}

async fn syncz(State(state): State<DebugState>) -> Json<Value> {
    Json(json!(state.sync_status.snapshot()))
}

#[derive(serde::Deserialize)]
struct ProxyQuery {
    #[serde(rename = "proxyID")]
    proxy_id: Option<String>,
}

/// What pilot would send a connected proxy now, as proto3 JSON.
async fn config_dump(State(state): State<DebugState>, Query(query): Query<ProxyQuery>) -> Response {
    let Some(proxy_id) = query.proxy_id else {
        return (StatusCode::BAD_REQUEST, "missing ?proxyID=<node id>\n").into_response();
    };
    let Some(sync) = state
        .sync_status
        .snapshot()
        .into_iter()
        .find(|p| p.proxy == proxy_id)
    else {
        return (
            StatusCode::NOT_FOUND,
            format!("proxy {proxy_id:?} is not connected\n"),
        )
            .into_response();
    };
    let context = state.contexts.borrow().clone();
    let mut dump = BTreeMap::new();
    for resource_type in ResourceType::PUSH_ORDER {
        let subscription = if resource_type.is_wildcard() {
            Subscription::Wildcard
        } else {
            let names = sync
                .types
                .get(resource_type.type_url())
                .map(|t| t.subscribed.clone())
                .unwrap_or_default();
            Subscription::Names(names)
        };
        let rendered: Vec<Value> = generate(&context, &sync.identity, resource_type, &subscription)
            .resources()
            .iter()
            .map(|r| {
                trireme_proto::json::to_json(resource_type.type_url(), r.message())
                    .unwrap_or_else(|e| json!({ "error": e.to_string() }))
            })
            .collect();
        dump.insert(resource_type.short_name(), rendered);
    }
    Json(json!({ "proxy": proxy_id, "version": context.version, "resources": dump }))
        .into_response()
}

async fn configz(State(state): State<DebugState>) -> Json<Value> {
    let context = state.contexts.borrow().clone();
    let config = &context.snapshot.config;
    Json(json!({
        "virtualServices": config.virtual_services,
        "destinationRules": config.destination_rules,
        "gateways": config.gateways,
        "serviceEntries": config.service_entries,
        "workloadEntries": config.workload_entries,
        "sidecars": config.sidecars,
        "peerAuthentications": config.peer_authentications,
        "other": config.other,
    }))
}

async fn registryz(State(state): State<DebugState>) -> Json<Value> {
    let context = state.contexts.borrow().clone();
    let services: Vec<Value> = context
        .snapshot
        .services
        .values()
        .map(|service| {
            json!({
                "service": service,
                "endpoints": context.snapshot.endpoints(&service.hostname),
            })
        })
        .collect();
    Json(json!(services))
}

async fn push_status(State(state): State<DebugState>) -> Json<Value> {
    let context = state.contexts.borrow().clone();
    let pushes: BTreeMap<&str, i64> = ResourceType::PUSH_ORDER
        .into_iter()
        .map(|t| (t.short_name(), state.metrics.pushes_of(t)))
        .collect();
    Json(json!({
        "version": context.version,
        "configVersion": context.config_version,
        "trigger": context.trigger.label(),
        "services": context.snapshot.services.len(),
        "configResources": context.snapshot.config.len(),
        "connectedProxies": state.sync_status.snapshot().len(),
        "pushes": pushes,
    }))
}
