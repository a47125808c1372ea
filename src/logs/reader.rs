//! What a log backend gives and how it fails: one [`LogReader`] trait the
//! Kubernetes and Loki readers implement and `WithLogs` calls.

use async_trait::async_trait;

use crate::signals::Side;

/// A raw line as a backend returned it.
#[derive(Debug, Clone, PartialEq)]
pub struct RawLine {
    /// When the line was written, unix seconds (the backend's timestamp).
    pub at_unix_s: f64,
    /// The line's text, untrusted.
    pub message: String,
}

/// One side's lines from one read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogBatch {
    /// Lines written after the read's start, oldest first.
    pub lines: Vec<RawLine>,
    /// Unix seconds up to which this read is complete: the read's end, or
    /// the last line's time when the backend's limit cut it short (the next
    /// read resumes there).
    pub complete_through_unix_s: f64,
}

/// Why a backend's lines could not be read this tick.
#[derive(Debug, thiserror::Error)]
pub enum LogReadError {
    /// No Kubernetes client (kubeconfig, context, service account).
    #[error("no Kubernetes client")]
    Client(#[source] crate::k8s::ConnectError),
    /// The Kubernetes API refused or failed a request.
    #[error("the Kubernetes API failed")]
    Kubernetes(#[from] kube::Error),
    /// The HTTP request to the backend failed (no response, or not JSON).
    #[error("request to {url} failed")]
    Http {
        /// The redacted URL.
        url: String,
        /// The transport's error, without the URL.
        #[source]
        source: reqwest::Error,
    },
    /// The backend answered, but not with what its API documents.
    #[error("{backend} answered {status}: {detail}")]
    Answer {
        /// Which backend.
        backend: &'static str,
        /// HTTP status.
        status: u16,
        /// The backend's error text, or what was malformed.
        detail: String,
    },
    /// `source = "kubernetes"` without the release's `pods` section.
    #[error("pod logs need the release's `pods` section (namespace, selectors)")]
    NoPods,
    /// A credential's variable is not set.
    #[error(transparent)]
    Credential(#[from] crate::signals::UnsetVariable),
}

/// A backend's log lines per side.
#[async_trait]
pub trait LogReader: Send + Sync {
    /// A short name for logs (`loki http://loki:3100`).
    fn name(&self) -> String;

    /// `side`'s lines written in `(after_unix_s, until_unix_s]`.
    async fn read(&self, side: Side, after_unix_s: f64, until_unix_s: f64) -> Result<LogBatch, LogReadError>;
}
