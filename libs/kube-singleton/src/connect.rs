//! The API server client every Kubernetes-facing service builds the same way.

use std::path::{Path, PathBuf};

use kube::config::{
    InClusterError, InferConfigError, KubeConfigOptions, Kubeconfig, KubeconfigError,
};
use kube::{Client, Config};

/// Why no client could be built.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("reading the kubeconfig {path}: {source}")]
    ReadKubeconfig {
        path: PathBuf,
        source: KubeconfigError,
    },
    #[error("using the kubeconfig {path}: {source}")]
    UseKubeconfig {
        path: PathBuf,
        source: KubeconfigError,
    },
    #[error("no in-cluster config ({in_cluster}) and no usable kubeconfig: {source}")]
    NoConfig {
        in_cluster: InClusterError,
        source: InferConfigError,
    },
    #[error("building the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

/// A client from `kubeconfig` if given, else the pod's service account
/// (in-cluster config), else the usual kubeconfig (`$KUBECONFIG`,
/// `~/.kube/config`).
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, ConnectError> {
    let config = match kubeconfig {
        Some(path) => {
            let file =
                Kubeconfig::read_from(path).map_err(|source| ConnectError::ReadKubeconfig {
                    path: path.to_path_buf(),
                    source,
                })?;
            Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(|source| ConnectError::UseKubeconfig {
                    path: path.to_path_buf(),
                    source,
                })?
        }
        None => match Config::incluster() {
            Ok(config) => config,
            Err(in_cluster) => Config::infer()
                .await
                .map_err(|source| ConnectError::NoConfig { in_cluster, source })?,
        },
    };
    Client::try_from(config).map_err(ConnectError::Client)
}
