//! The kubelet's side of a DRA driver, as the kubelet (v1.34) plays it: its plugin watcher
//! finds `<plugins_registry>/<driver>-reg.sock`, calls `GetInfo` (type `DRAPlugin`),
//! picks the newest DRA service the plugin offers that it knows (`v1.DRAPlugin`, else
//! `v1beta1.DRAPlugin`), dials the endpoint the plugin names, reports with
//! `NotifyRegistrationStatus`; then `NodePrepareResources` / `NodeUnprepareResources` for
//! a pod's claims. Only the v1 service is called here (the kubelet prefers it).

use crate::SimError;
use proto::dra::v1;
use proto::pluginregistration as pr;
use proto::unix::connect_unix;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tonic::transport::Channel;

/// A claim as the kubelet names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimId {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
}

/// One prepared device, as NodePrepareResources answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedDevice {
    /// The requests it serves (empty = all).
    pub requests: Vec<String>,
    /// The pool.
    pub pool: String,
    /// The device.
    pub device: String,
    /// Fully qualified CDI device IDs (`vendor/class=name`).
    pub cdi_ids: Vec<String>,
}

/// A DRA plugin the stand-in registered, with its v1 client.
pub struct DraKubelet {
    /// What `GetInfo` answered.
    pub info: pr::PluginInfo,
    /// The registration socket.
    pub registration: PathBuf,
    client: v1::dra_plugin_client::DraPluginClient<Channel>,
}

impl DraKubelet {
    /// Register the plugin behind `reg_socket` as the plugin watcher does. Refuses (and
    /// reports `plugin_registered: false` to the plugin, as the kubelet would) a plugin
    /// that is not of type `DRAPlugin` or does not offer `v1.DRAPlugin`.
    pub async fn register(reg_socket: &Path) -> Result<DraKubelet, SimError> {
        let target = reg_socket.display().to_string();
        let ch = connect_unix(reg_socket).await?;
        let mut reg = pr::registration_client::RegistrationClient::new(ch);
        let info = reg
            .get_info(pr::InfoRequest {})
            .await
            .map_err(|status| SimError::Rpc {
                rpc: "GetInfo",
                target: target.clone(),
                status,
            })?
            .into_inner();
        let refuse = |reason: String| SimError::BadAnswer {
            target: target.clone(),
            reason,
        };
        let problem = if info.r#type != proto::dra::PLUGIN_TYPE {
            Some(format!(
                "GetInfo type {:?}, want {:?}",
                info.r#type,
                proto::dra::PLUGIN_TYPE
            ))
        } else if !info
            .supported_versions
            .iter()
            .any(|s| s == proto::dra::V1_SERVICE)
        {
            Some(format!(
                "GetInfo supported_versions {:?} lack {}",
                info.supported_versions,
                proto::dra::V1_SERVICE
            ))
        } else {
            None
        };
        let endpoint = connect_unix(&info.endpoint).await;
        let error = match (&problem, &endpoint) {
            (Some(p), _) => p.clone(),
            (None, Err(e)) => format!("dial endpoint {}: {e}", info.endpoint),
            (None, Ok(_)) => String::new(),
        };
        reg.notify_registration_status(pr::RegistrationStatus {
            plugin_registered: error.is_empty(),
            error: error.clone(),
        })
        .await
        .map_err(|status| SimError::Rpc {
            rpc: "NotifyRegistrationStatus",
            target: target.clone(),
            status,
        })?;
        if !error.is_empty() {
            return Err(refuse(error));
        }
        let ch = endpoint?;
        Ok(DraKubelet {
            info,
            registration: reg_socket.to_path_buf(),
            client: v1::dra_plugin_client::DraPluginClient::new(ch),
        })
    }

    fn claims(claims: &[ClaimId]) -> Vec<v1::Claim> {
        claims
            .iter()
            .map(|c| v1::Claim {
                namespace: c.namespace.clone(),
                uid: c.uid.clone(),
                name: c.name.clone(),
            })
            .collect()
    }

    /// `NodePrepareResources` for `claims`: per claim UID, its devices or its error.
    pub async fn prepare(
        &mut self,
        claims: &[ClaimId],
    ) -> Result<BTreeMap<String, Result<Vec<PreparedDevice>, String>>, SimError> {
        let r = self
            .client
            .node_prepare_resources(v1::NodePrepareResourcesRequest {
                claims: Self::claims(claims),
            })
            .await
            .map_err(|status| SimError::Rpc {
                rpc: "NodePrepareResources",
                target: self.info.endpoint.clone(),
                status,
            })?
            .into_inner();
        Ok(r.claims
            .into_iter()
            .map(|(uid, c)| {
                let v = if c.error.is_empty() {
                    Ok(c.devices
                        .into_iter()
                        .map(|d| PreparedDevice {
                            requests: d.request_names,
                            pool: d.pool_name,
                            device: d.device_name,
                            cdi_ids: d.cdi_device_ids,
                        })
                        .collect())
                } else {
                    Err(c.error)
                };
                (uid, v)
            })
            .collect())
    }

    /// `NodeUnprepareResources` for `claims`: per claim UID, `Ok` or its error.
    pub async fn unprepare(
        &mut self,
        claims: &[ClaimId],
    ) -> Result<BTreeMap<String, Result<(), String>>, SimError> {
        let r = self
            .client
            .node_unprepare_resources(v1::NodeUnprepareResourcesRequest {
                claims: Self::claims(claims),
            })
            .await
            .map_err(|status| SimError::Rpc {
                rpc: "NodeUnprepareResources",
                target: self.info.endpoint.clone(),
                status,
            })?
            .into_inner();
        Ok(r.claims
            .into_iter()
            .map(|(uid, c)| {
                (
                    uid,
                    if c.error.is_empty() {
                        Ok(())
                    } else {
                        Err(c.error)
                    },
                )
            })
            .collect())
    }
}
