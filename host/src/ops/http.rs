//! The HTTP server: the console, `/metrics`, `/healthz`, `/readyz` and the JSON API.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | the web console (one page, no external assets) |
//! | `GET /metrics` | Prometheus metrics (OpenMetrics text) |
//! | `GET /healthz` | 200 while the pipeline thread reports; 503 if it is stuck |
//! | `GET /readyz` | 200 while consuming with Kafka answering; 503 starting, stopping, or on a Kafka error |
//! | `GET /api/status` | the console's figures: counters, partitions, plugins, swaps, latest results |
//! | `GET /api/plugins` | the loaded plugins |
//! | `GET /api/results/{plugin}?windows=N` | the plugin's last N windows of results (up to 30) |
//! | `GET /api/windows/open` | the live figures of the windows not published yet (partial: each plugin's records were the window to close now), per pipeline thread |
//! | `GET /api/completeness?windows=N` | the completeness records of the last N windows published here (up to 30), newest first |
//! | `POST /api/plugins/{plugin}` | admin: swap in the `.wasm` in the body (token when set, or when not on loopback) |
//!
//! It runs on a thread of its own with a single-threaded tokio runtime: nothing it does is on
//! the pipeline's path.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use super::{Ops, RESULT_WINDOWS_KEPT};

/// The console: a single page that polls `/api/status`.
const CONSOLE: &str = include_str!("console.html");
/// Largest `.wasm` accepted for a swap.
const MAX_PLUGIN_BYTES: usize = 64 << 20;

/// Binds `addr` now (so that a taken port fails start-up with a clear error) and serves until
/// `shutdown`. Returns the address bound (with the actual port when `addr` asked for port 0).
pub fn serve(addr: SocketAddr, ops: Arc<Ops>, shutdown: CancellationToken) -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr).with_context(|| {
        format!("cannot listen on {addr} for the console and /metrics: choose another address with --http-addr, or --http-addr off")
    })?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("http".into()).spawn(move || {
        runtime.block_on(async move {
            let listener = match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => return tracing::error!(error = %e, "the HTTP server could not start"),
            };
            let served = axum::serve(listener, router(ops)).with_graceful_shutdown(shutdown.cancelled_owned()).await;
            if let Err(e) = served {
                tracing::error!(error = %e, "the HTTP server stopped");
            }
        });
    })?;
    Ok(bound)
}

pub fn router(ops: Arc<Ops>) -> Router {
    Router::new()
        .route("/", get(|| async { Html(CONSOLE) }))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|State(ops): State<Arc<Ops>>| async move { probe(ops.health()) }))
        .route("/readyz", get(|State(ops): State<Arc<Ops>>| async move { probe(ops.readiness()) }))
        .route("/api/status", get(|State(ops): State<Arc<Ops>>| async move { Json(ops.status()) }))
        .route("/api/plugins", get(|State(ops): State<Arc<Ops>>| async move { Json(ops.plugins()) }))
        .route(
            "/api/plugins/{plugin}",
            get(|State(ops): State<Arc<Ops>>, UrlPath(name): UrlPath<String>| async move {
                match ops.plugins().into_iter().find(|p| p.name == name) {
                    Some(p) => Json(p).into_response(),
                    None => (StatusCode::NOT_FOUND, format!("no plugin named {name:?} is loaded\n")).into_response(),
                }
            })
            .post(swap)
            .layer(DefaultBodyLimit::max(MAX_PLUGIN_BYTES)),
        )
        .route("/api/results/{plugin}", get(results))
        .route("/api/windows/open", get(|State(ops): State<Arc<Ops>>| async move { Json(ops.open_windows()) }))
        .route(
            "/api/completeness",
            get(|State(ops): State<Arc<Ops>>, Query(q): Query<ResultsQuery>| async move {
                Json(ops.completeness(q.windows.unwrap_or(RESULT_WINDOWS_KEPT)))
            }),
        )
        .with_state(ops)
}

fn probe(result: Result<String, String>) -> Response {
    match result {
        Ok(text) => text.into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why + "\n").into_response(),
    }
}

async fn metrics(State(ops): State<Arc<Ops>>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], ops.render_metrics())
        .into_response()
}

#[derive(serde::Deserialize)]
struct ResultsQuery {
    windows: Option<usize>,
}

async fn results(
    State(ops): State<Arc<Ops>>,
    UrlPath(plugin): UrlPath<String>,
    Query(q): Query<ResultsQuery>,
) -> Response {
    match ops.results(&plugin, q.windows.unwrap_or(RESULT_WINDOWS_KEPT)) {
        Some(windows) => Json(windows).into_response(),
        None => (StatusCode::NOT_FOUND, format!("no results of a plugin named {plugin:?} yet\n")).into_response(),
    }
}

/// `POST /api/plugins/{plugin}` with the new `.wasm` as the body.
async fn swap(
    State(ops): State<Arc<Ops>>,
    UrlPath(plugin): UrlPath<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if let Err(why) = ops.authorize(authorization) {
        return (StatusCode::UNAUTHORIZED, why + "\n").into_response();
    }
    if body.is_empty() {
        let usage = format!(
            "send the new .wasm as the body: curl --data-binary @{plugin}.wasm http://HOST/api/plugins/{plugin}\n"
        );
        return (StatusCode::BAD_REQUEST, usage).into_response();
    }
    let source = format!("upload to /api/plugins/{plugin}");
    match ops.swap(&plugin, body.to_vec(), "admin API", Path::new(&source)).await {
        Ok(report) => Json(report).into_response(),
        Err(why) => (StatusCode::UNPROCESSABLE_ENTITY, why + "\n").into_response(),
    }
}
