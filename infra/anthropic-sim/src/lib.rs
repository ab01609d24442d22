//! A simulator of the Anthropic HTTP contract in `shared/spec/anthropic-api.md`.
//!
//! It is stateful (organizations, workspaces, groups, admin keys with scopes, skills with ACLs, audit
//! events) and faithful (paths, headers, envelopes, status codes, pagination, validation, scope checks).
//! Tests and people drive it through `/_sim/…` controls: create data, emit audit events, inject faults
//! (latency, rate limits, N× 5xx, dropped connections) and read its state back. It deliberately shares no
//! code with the connector's client: two independent readings of the contract check each other.

// Handlers short-circuit with a ready `Response` as the error (the axum idiom); boxing it buys nothing
// in a test double.
#![allow(clippy::result_large_err)]

mod api;
mod control;
pub mod demo;
pub mod enterprise;
mod faults;
mod ids;
pub mod skills;
mod state;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tower::ServiceExt;

pub use skills::validate as validate_skill;
pub use state::Sim;

/// Marks the connection a request arrived on, so a fault can drop it without answering.
#[derive(Clone)]
pub(crate) struct ConnectionHandle(pub Arc<Notify>);

/// A running simulator. Dropping it stops the server.
pub struct SimServer {
    addr: SocketAddr,
    sim: Sim,
    task: JoinHandle<()>,
}

impl SimServer {
    /// Binds `addr` (use port 0 for a free port) and serves the simulator in the background.
    pub async fn start(addr: SocketAddr, sim: Sim) -> std::io::Result<SimServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let app = router(sim.clone());
        let task = tokio::spawn(serve(listener, app));
        Ok(SimServer { addr, sim, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn sim(&self) -> &Sim {
        &self.sim
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The whole simulator as an axum router: the API under `/v1`, the controls under `/_sim`.
pub fn router(sim: Sim) -> Router {
    api::routes(sim.clone()).merge(control::routes(sim))
}

/// Serves `app` on `listener`, one task per connection, so that a fault can close a connection mid-request.
pub async fn serve(listener: TcpListener, app: Router) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let app = app.clone();
        tokio::spawn(async move {
            let dropper = Arc::new(Notify::new());
            let handle = ConnectionHandle(dropper.clone());
            let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(handle.clone());
                app.clone().oneshot(req)
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                _ = conn => {}
                // Dropping the connection future closes the socket with no answer.
                _ = dropper.notified() => {}
            }
        });
    }
}
