//! The one way backstop connects to a Kubernetes API server: a kubeconfig
//! file (with an optional context) when configured, else kube's inference
//! (in-cluster service account, then `$KUBECONFIG` / `~/.kube/config`).

use std::path::{Path, PathBuf};

use kube::config::{InferConfigError, KubeConfigOptions, Kubeconfig, KubeconfigError};
use thiserror::Error;

/// No client could be made for the configured cluster.
#[derive(Debug, Error)]
pub enum ConnectError {
    /// The kubeconfig file cannot be read or parsed.
    #[error("cannot read kubeconfig {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: KubeconfigError,
    },
    /// The kubeconfig has no usable context (the named one, or a default).
    #[error("kubeconfig {path}: no usable context {context:?}")]
    Context {
        /// The file.
        path: PathBuf,
        /// The context asked for (`None`: the file's current context).
        context: Option<String>,
        /// Why.
        #[source]
        source: KubeconfigError,
    },
    /// Neither an in-cluster service account nor `$KUBECONFIG` / `~/.kube/config` works.
    #[error("no cluster configuration found (in-cluster service account, $KUBECONFIG, ~/.kube/config)")]
    Infer(#[source] InferConfigError),
    /// The configuration is readable but no client can be built from it (TLS material, say).
    #[error("cannot build the Kubernetes client")]
    Client(#[source] kube::Error),
}

/// A client for the configured cluster.
pub async fn connect(kubeconfig: Option<&Path>, context: Option<&str>) -> Result<kube::Client, ConnectError> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|source| ConnectError::Read { path: path.into(), source })?;
            let opts = KubeConfigOptions { context: context.map(str::to_string), ..KubeConfigOptions::default() };
            kube::Config::from_custom_kubeconfig(kc, &opts).await.map_err(|source| ConnectError::Context {
                path: path.into(),
                context: context.map(str::to_string),
                source,
            })?
        }
        None => kube::Config::infer().await.map_err(ConnectError::Infer)?,
    };
    kube::Client::try_from(config).map_err(ConnectError::Client)
}
