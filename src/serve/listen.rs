//! The gate's listener, hardened for what faces a cluster: every connection
//! must send its request headers within a deadline and finish within
//! another, at most so many connections are served at once and at most so
//! many from one client address (the rest are closed, so one client holding
//! idle sockets cannot starve the others), and with a token configured every route but `/healthz` needs
//! `Authorization: Bearer <token>`, compared in constant time.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// How long a client may take, and how many may be served at once.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// From connecting to the end of the request headers.
    pub header_read: Duration,
    /// A whole connection, keep-alive included.
    pub connection: Duration,
    /// Connections served at once; more are closed on arrival.
    pub max_connections: usize,
    /// Connections served at once from one client address.
    pub per_client: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read: Duration::from_secs(5),
            connection: Duration::from_secs(60),
            max_connections: 256,
            per_client: 32,
        }
    }
}

/// Connections per client address: served, and waiting for a turn.
#[derive(Default)]
struct PerClient {
    open: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, (usize, usize)>>,
    freed: tokio::sync::Notify,
}

/// One client's connection counted while it lives.
struct ClientSlot {
    clients: Arc<PerClient>,
    ip: std::net::IpAddr,
}

/// Connections one client may have waiting for a turn beyond its share
/// (a burst of requests from one pipeline waits; a flood is closed).
const WAITING_PER_CLIENT: usize = 512;

impl PerClient {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<std::net::IpAddr, (usize, usize)>> {
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A turn for `ip`: at once under its share `cap`, else after waiting
    /// (at most `wait`, and only while few of its connections wait).
    async fn take(self: &Arc<Self>, ip: std::net::IpAddr, cap: usize, wait: Duration) -> Option<ClientSlot> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut queued = false;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut open = self.lock();
                let (active, waiting) = open.entry(ip).or_insert((0, 0));
                if *active < cap {
                    *active += 1;
                    *waiting -= usize::from(queued);
                    return Some(ClientSlot { clients: self.clone(), ip });
                }
                if !queued {
                    if *waiting >= WAITING_PER_CLIENT {
                        return None;
                    }
                    *waiting += 1;
                    queued = true;
                }
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                let mut open = self.lock();
                if let Some(e) = open.get_mut(&ip) {
                    e.1 -= 1;
                }
                return None;
            }
        }
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.clients.lock();
        if let Some(e) = open.get_mut(&self.ip) {
            e.0 -= 1;
            if *e == (0, 0) {
                open.remove(&self.ip);
            }
        }
        drop(open);
        self.clients.freed.notify_waiters();
    }
}

/// Require `Authorization: Bearer <token>` on every route but `/healthz`.
pub fn with_token(app: Router, token: Option<String>) -> Router {
    match token {
        Some(t) => app.layer(axum::middleware::from_fn_with_state(Arc::new(t), require_token)),
        None => app,
    }
}

async fn require_token(State(token): State<Arc<String>>, req: Request, next: Next) -> Response {
    if req.uri().path() == "/healthz" {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
        next.run(req).await
    } else {
        (StatusCode::UNAUTHORIZED, [("www-authenticate", "Bearer")], "a bearer token is required\n").into_response()
    }
}

/// Serve `app` on `listener` under `limits` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, app: Router, limits: Limits, shutdown: impl Future<Output = ()>) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let clients = Arc::new(PerClient::default());
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors, say: wait a little rather than spin.
                    tracing::warn!(error = %e, "Cannot accept a connection.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let (clients, slots, app) = (clients.clone(), slots.clone(), app.clone());
        tokio::spawn(async move {
            // Over its share, a client's connection waits for its turn (up to the header deadline).
            let Some(client) = clients.take(peer.ip(), limits.per_client.max(1), limits.header_read).await else {
                return;
            };
            let Ok(slot) = slots.try_acquire_owned() else { return };
            let service = TowerToHyperService::new(app);
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new()).header_read_timeout(limits.header_read);
            let conn = http.serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(limits.connection, conn).await;
            drop((slot, client));
        });
    }
}
