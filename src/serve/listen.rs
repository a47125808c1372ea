//! The gate's listener, hardened for what faces a cluster: every connection
//! must send its request headers within a deadline and finish within
//! another, at most so many connections are served at once (the rest are
//! closed), and with a token configured every route but `/healthz` needs
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
}

impl Default for Limits {
    fn default() -> Self {
        Self { header_read: Duration::from_secs(5), connection: Duration::from_secs(60), max_connections: 256 }
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
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
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
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new()).header_read_timeout(limits.header_read);
            let conn = http.serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(limits.connection, conn).await;
            drop(slot);
        });
    }
}
