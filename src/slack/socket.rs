//! Socket Mode: backstop opens the connection (outbound only, so it works
//! behind a firewall). `apps.connections.open` with the app-level token
//! gives a WebSocket URL; every envelope is acknowledged (with the answer as
//! payload where Slack accepts one) before its work starts; a retried
//! envelope is acknowledged again and not acted on twice; `disconnect`, a
//! closed socket or an error reconnects, with backoff when it keeps failing.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use thiserror::Error;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tracing::{info, warn};

use super::app::{Accepted, Delivery, SlackApp};
use super::web::{WebApi, WebError};
use super::wire::{Ack, EventBody, Frame, Interaction};

/// A session ended badly.
#[derive(Debug, Error)]
pub enum SocketError {
    /// `apps.connections.open` failed.
    #[error("cannot open a Socket Mode connection")]
    Open(#[source] WebError),
    /// The WebSocket failed.
    #[error("Socket Mode connection failed")]
    WebSocket(#[source] tokio_tungstenite::tungstenite::Error),
}

/// How a session ended.
enum Ended {
    /// Stop was signalled.
    Stop,
    /// Slack asked for (or caused) a new connection.
    Reconnect,
}

/// Seconds to wait before reconnection attempt `n` (1, 2, 4 … 60).
pub fn backoff(n: u32) -> Duration {
    Duration::from_secs(1u64 << n.min(6)).min(Duration::from_secs(60))
}

/// Keep a Socket Mode connection until `stop`.
pub async fn run(app: Arc<SlackApp>, mut stop: watch::Receiver<bool>) {
    let Some(token) = app.secrets.app.clone() else { return };
    let web = match WebApi::new(&app.settings.api_url, token) {
        Ok(w) => w,
        Err(e) => return warn!(error = %crate::error::chain(&e), "Slack Socket Mode cannot start."),
    };
    let mut failures = 0u32;
    loop {
        if *stop.borrow() {
            return;
        }
        match session(&app, &web, &mut stop).await {
            Ok(Ended::Stop) => return,
            Ok(Ended::Reconnect) => failures = 0,
            Err(e) => {
                warn!(error = %crate::error::chain(&e), "Slack Socket Mode: reconnecting.");
                let wait = backoff(failures);
                failures = failures.saturating_add(1);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        }
    }
}

async fn session(app: &Arc<SlackApp>, web: &WebApi, stop: &mut watch::Receiver<bool>) -> Result<Ended, SocketError> {
    let url = web.open_connection().await.map_err(SocketError::Open)?;
    let (ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.map_err(SocketError::WebSocket)?;
    info!("Slack Socket Mode connected.");
    let (mut tx, mut rx) = ws.split();
    loop {
        let msg = tokio::select! {
            m = rx.next() => m,
            _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                let _ = tx.send(Message::Close(None)).await;
                return Ok(Ended::Stop);
            }
        };
        let text = match msg {
            None | Some(Ok(Message::Close(_))) => return Ok(Ended::Reconnect),
            Some(Err(e)) => return Err(SocketError::WebSocket(e)),
            Some(Ok(Message::Ping(p))) => {
                tx.send(Message::Pong(p)).await.map_err(SocketError::WebSocket)?;
                continue;
            }
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(_)) => continue,
        };
        let (ack, accepted, reconnect) = frame(app, text.as_str());
        if let Some(ack) = ack {
            let body = serde_json::to_string(&ack).unwrap_or_default();
            tx.send(Message::text(body)).await.map_err(SocketError::WebSocket)?;
        }
        app.start(accepted.work);
        if reconnect {
            return Ok(Ended::Reconnect);
        }
    }
}

/// One frame: its acknowledgement, the accepted work, and whether to reconnect.
fn frame(app: &SlackApp, text: &str) -> (Option<Ack>, Accepted, bool) {
    let parsed: Frame = match serde_json::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            warn!(error = %e, "Slack sent a frame this version cannot read; acknowledged, not acted on.");
            let id = serde_json::from_str::<IdOnly>(text).ok().map(|f| f.envelope_id);
            return (id.map(|envelope_id| Ack { envelope_id, payload: None }), Accepted::default(), false);
        }
    };
    let (envelope_id, accepts, delivery) = match parsed {
        Frame::Hello {} | Frame::Other => return (None, Accepted::default(), false),
        Frame::Disconnect { reason } => {
            info!(%reason, "Slack asked for a new Socket Mode connection.");
            return (None, Accepted::default(), true);
        }
        Frame::SlashCommands(e) => (e.envelope_id, e.accepts_response_payload, Some(Delivery::Command(e.payload))),
        Frame::Interactive(e) => {
            let d = serde_json::from_value::<Interaction>(e.payload).ok().map(Delivery::Interaction);
            (e.envelope_id, e.accepts_response_payload, d)
        }
        Frame::EventsApi(e) => {
            let d = match e.payload {
                EventBody::EventCallback { event_id, event } => Some(Delivery::Event { event_id, event }),
                _ => None,
            };
            (e.envelope_id, e.accepts_response_payload, d)
        }
    };
    // A retried envelope repeats its id: acknowledged again, acted on once.
    let mut accepted = match delivery {
        Some(d) if app.first(&format!("envelope:{envelope_id}")) => app.accept(d),
        _ => Accepted::default(),
    };
    let reply = accepted.reply.take();
    if !accepts && let Some(reply) = &reply {
        warn!("Slack accepts no payload for this envelope; the answer is dropped: {}", reply.text);
    }
    let payload = reply.filter(|_| accepts);
    (Some(Ack { envelope_id, payload }), accepted, false)
}

#[derive(serde::Deserialize)]
struct IdOnly {
    envelope_id: String,
}
