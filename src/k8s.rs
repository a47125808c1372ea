//! The one way backstop connects to a Kubernetes API server: a kubeconfig
//! file (with an optional context) when configured, else kube's inference
//! (in-cluster service account, then `$KUBECONFIG` / `~/.kube/config`).

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};

/// A client for the configured cluster; the error is the reason as text.
pub async fn connect(kubeconfig: Option<&Path>, context: Option<&str>) -> Result<kube::Client, String> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|e| e.to_string())?;
            let opts = KubeConfigOptions { context: context.map(str::to_string), ..KubeConfigOptions::default() };
            kube::Config::from_custom_kubeconfig(kc, &opts).await.map_err(|e| e.to_string())?
        }
        None => kube::Config::infer().await.map_err(|e| e.to_string())?,
    };
    kube::Client::try_from(config).map_err(|e| e.to_string())
}
