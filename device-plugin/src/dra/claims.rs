//! Reading a ResourceClaim: where it comes from ([`ClaimSource`]; the real one is the API
//! server through kube, [`KubeClaims`]) and what of its allocation is ours
//! ([`allocation_for`]).

use k8s_openapi::api::resource::v1::ResourceClaim;
use std::fmt;
use std::path::{Path, PathBuf};

/// A claim as the kubelet names it in NodePrepareResources.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct ClaimRef {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.name`.
    pub name: String,
}

impl fmt::Display for ClaimRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} (uid {})", self.namespace, self.name, self.uid)
    }
}

/// Why a claim could not be read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClaimSourceError {
    /// The API server has no such claim.
    #[error("not found")]
    NotFound,
    /// Any other failure (transport, authorization, decoding), as the client said it.
    #[error("{0}")]
    Api(String),
}

/// Where ResourceClaims are read from.
#[tonic::async_trait]
pub trait ClaimSource: Send + Sync {
    /// `GET /apis/resource.k8s.io/v1/namespaces/{namespace}/resourceclaims/{name}`.
    async fn get(&self, namespace: &str, name: &str) -> Result<ResourceClaim, ClaimSourceError>;
}

/// Claims from the API server (kubeconfig or in-cluster config, as kube infers it).
#[derive(Clone)]
pub struct KubeClaims {
    client: kube::Client,
}

impl KubeClaims {
    /// Through `client`.
    pub fn new(client: kube::Client) -> Self {
        KubeClaims { client }
    }

    /// Through the config kube infers: `$KUBECONFIG` / `~/.kube/config`, else the
    /// in-cluster service account.
    pub async fn infer() -> Result<Self, ClaimSourceError> {
        let cfg = kube::Config::infer()
            .await
            .map_err(|e| ClaimSourceError::Api(format!("kube config: {e}")))?;
        let client = kube::Client::try_from(cfg)
            .map_err(|e| ClaimSourceError::Api(format!("kube client: {e}")))?;
        Ok(KubeClaims { client })
    }
}

/// Why no API server client could be made.
#[derive(Debug, thiserror::Error)]
pub enum KubeClientError {
    /// The `--kubeconfig` file is unreadable or unusable.
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// What kube reported.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// Neither `$KUBECONFIG`/`~/.kube/config` nor the in-cluster service account.
    #[error("kube config ($KUBECONFIG, ~/.kube/config or in-cluster service account): {0}")]
    Infer(#[source] kube::config::InferConfigError),
    /// The config could not make a client (TLS, proxy).
    #[error("kube client: {0}")]
    Client(#[source] kube::Error),
}

/// An API server client from `kubeconfig` when given (`--kubeconfig`), else from what
/// kube infers (`$KUBECONFIG` / `~/.kube/config`, else in-cluster).
pub async fn kube_client(kubeconfig: Option<&Path>) -> Result<kube::Client, KubeClientError> {
    let cfg = match kubeconfig {
        Some(path) => {
            let err = |source| KubeClientError::Kubeconfig {
                path: path.to_path_buf(),
                source,
            };
            let kc = kube::config::Kubeconfig::read_from(path).map_err(err)?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(err)?
        }
        None => kube::Config::infer()
            .await
            .map_err(KubeClientError::Infer)?,
    };
    kube::Client::try_from(cfg).map_err(KubeClientError::Client)
}

#[tonic::async_trait]
impl ClaimSource for KubeClaims {
    async fn get(&self, namespace: &str, name: &str) -> Result<ResourceClaim, ClaimSourceError> {
        let api: kube::Api<ResourceClaim> = kube::Api::namespaced(self.client.clone(), namespace);
        match api.get(name).await {
            Ok(c) => Ok(c),
            Err(kube::Error::Api(s)) if s.code == 404 => Err(ClaimSourceError::NotFound),
            Err(e) => Err(ClaimSourceError::Api(e.to_string())),
        }
    }
}

/// One device allocated to a request, for our driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocatedDevice {
    /// The request (`req` or `req/subrequest`).
    pub request: String,
    /// The pool.
    pub pool: String,
    /// The device name.
    pub device: String,
}

/// Opaque config for our driver, in the order it applies (class config before claim
/// config, so later entries win).
#[derive(Debug, Clone, PartialEq)]
pub struct OpaqueConfig {
    /// The requests it applies to (empty = all).
    pub requests: Vec<String>,
    /// `FromClass` or `FromClaim`.
    pub source: String,
    /// The parameters as written.
    pub parameters: serde_json::Value,
}

impl OpaqueConfig {
    /// Whether it applies to `request` (a config for `req` also covers `req/sub`).
    pub fn applies_to(&self, request: &str) -> bool {
        let parent = request.split('/').next().unwrap_or(request);
        self.requests.is_empty() || self.requests.iter().any(|r| r == request || r == parent)
    }
}

/// What of a claim's allocation is ours.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClaimAllocation {
    /// Our devices.
    pub devices: Vec<AllocatedDevice>,
    /// Our opaque configs.
    pub configs: Vec<OpaqueConfig>,
}

/// The part of `claim`'s allocation for `driver`; `None` when it is not allocated.
pub fn allocation_for(claim: &ResourceClaim, driver: &str) -> Option<ClaimAllocation> {
    let devs = claim.status.as_ref()?.allocation.as_ref()?.devices.as_ref();
    let mut out = ClaimAllocation::default();
    let Some(devs) = devs else {
        return Some(out);
    };
    for r in devs.results.iter().flatten() {
        if r.driver == driver {
            out.devices.push(AllocatedDevice {
                request: r.request.clone(),
                pool: r.pool.clone(),
                device: r.device.clone(),
            });
        }
    }
    let mut configs: Vec<_> = devs
        .config
        .iter()
        .flatten()
        .filter_map(|c| {
            let o = c.opaque.as_ref().filter(|o| o.driver == driver)?;
            Some(OpaqueConfig {
                requests: c.requests.clone().unwrap_or_default(),
                source: c.source.clone(),
                parameters: o.parameters.0.clone(),
            })
        })
        .collect();
    // class configs first, then the claim's: the claim's override (stable within a source)
    configs.sort_by_key(|c| c.source != "FromClass");
    out.configs = configs;
    Some(out)
}
