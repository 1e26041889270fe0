//! The kubelet plugin watcher's side of `pluginregistration`: a plugin puts a socket in
//! `plugins_registry`; the kubelet calls `GetInfo` on it, validates the answer, connects to
//! the device-plugin endpoint it names, and reports the outcome with
//! `NotifyRegistrationStatus`.
//!
//! As in the kubelet: an empty `PluginInfo.endpoint` means the registry socket itself, a
//! relative one is used as given (so resolves against the current directory, which is
//! almost certainly a plugin bug), and the device manager's checks apply (supported
//! version `v1beta1`, extended resource name).

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use notify::{EventKind, RecursiveMode, Watcher};
use proto::deviceplugin::v1beta1::RegisterRequest;
use proto::pluginregistration::{
    self as pr, InfoRequest, PluginInfo, registration_client::RegistrationClient,
};
use proto::unix::connect_unix_timeout;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::SimError;
use crate::kubelet::{
    DIAL_TIMEOUT, Inner, KubeletSim, RegisteredVia, Registration, call, check_resource_name,
    connect_plugin, lock,
};

/// A running watch of a `plugins_registry` directory; stops when dropped.
pub(crate) struct Watch {
    _watcher: notify::RecommendedWatcher,
    task: JoinHandle<()>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl KubeletSim {
    /// Registers the plugin behind the registry socket `socket` as the kubelet's plugin
    /// watcher does: `GetInfo`, checks, connect to its endpoint (`GetDevicePluginOptions`,
    /// `ListAndWatch`), then `NotifyRegistrationStatus` with the outcome.
    pub async fn register_plugin_socket(&self, socket: &Path) -> Result<Registration, SimError> {
        register_socket(self.inner(), socket).await
    }

    /// Watches `dir` (created if missing) like the kubelet's plugin watcher: every socket
    /// there now, and every one created later, is registered with
    /// [`KubeletSim::register_plugin_socket`] in the background (failures show in
    /// [`KubeletSim::attempts`]). Survives [`KubeletSim::restart`], after which the
    /// directory is read again, as a restarted kubelet does.
    pub fn watch_plugins_registry(&self, dir: &Path) -> Result<(), SimError> {
        std::fs::create_dir_all(dir).map_err(|source| SimError::Io {
            op: "create",
            path: dir.to_path_buf(),
            source,
        })?;
        let inner = self.inner();
        *lock(inner.registry_dir()) = Some(dir.to_path_buf());
        let (tx, rx) = mpsc::unbounded_channel::<PathBuf>();
        let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            if let Ok(ev) = ev
                && matches!(ev.kind, EventKind::Create(_))
            {
                for p in ev.paths {
                    let _ = tx.send(p);
                }
            }
        })
        .map_err(|source| SimError::Watch {
            path: dir.to_path_buf(),
            source,
        })?;
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|source| SimError::Watch {
                path: dir.to_path_buf(),
                source,
            })?;
        // Read the directory after the watch is set, so nothing slips between the two.
        let existing: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|source| SimError::Io {
                op: "read dir",
                path: dir.to_path_buf(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        let task = tokio::spawn(run_watch(Arc::downgrade(inner), existing, rx));
        *lock(inner.registry()) = Some(Watch {
            _watcher: watcher,
            task,
        });
        Ok(())
    }
}

async fn run_watch(
    inner: Weak<Inner>,
    existing: Vec<PathBuf>,
    mut created: mpsc::UnboundedReceiver<PathBuf>,
) {
    let handle = |path: PathBuf| {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if !is_plugin_socket(&path) {
            return;
        }
        // One task per socket, so a slow plugin does not hold up the others.
        tokio::spawn(async move {
            // Accepted and refused registrations are in the attempts; this covers the rest.
            if let Err(e) = register_socket(&inner, &path).await {
                tracing::warn!(socket = %path.display(), "plugin watcher: {e}");
            }
        });
    };
    for p in existing {
        handle(p);
    }
    while let Some(p) = created.recv().await {
        handle(p);
    }
}

/// The kubelet's plugin watcher skips hidden files and anything that is not a socket.
fn is_plugin_socket(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.'));
    !hidden && std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

async fn register_socket(inner: &Arc<Inner>, socket: &Path) -> Result<Registration, SimError> {
    let target = socket.display().to_string();
    let mut client = RegistrationClient::new(connect_unix_timeout(socket, DIAL_TIMEOUT).await?);
    let info: PluginInfo = call("GetInfo", &target, client.get_info(InfoRequest {})).await?;

    let endpoint = if info.endpoint.is_empty() {
        socket.to_path_buf()
    } else {
        PathBuf::from(&info.endpoint)
    };
    let request = RegisterRequest {
        version: info.supported_versions.first().cloned().unwrap_or_default(),
        endpoint: info.endpoint.clone(),
        resource_name: info.name.clone(),
        options: None,
    };
    let checked = if info.r#type != proto::DEVICE_PLUGIN_TYPE {
        Err(format!(
            "no handler registered for plugin type: {} at socket {target}",
            info.r#type
        ))
    } else if !info
        .supported_versions
        .iter()
        .any(|v| proto::SUPPORTED_VERSIONS.contains(&v.as_str()))
    {
        Err(format!(
            "none of the versions {:?} is supported by kubelet (supported: {:?})",
            info.supported_versions,
            proto::SUPPORTED_VERSIONS
        ))
    } else {
        check_resource_name(&info.name)
    };
    let result = match checked {
        Ok(()) => {
            let mut request = request;
            // The version kubelet picks from the plugin's list.
            request.version = proto::VERSION.to_string();
            connect_plugin(inner, request, endpoint, RegisteredVia::PluginWatcher).await
        }
        Err(reason) => {
            let err = SimError::BadAnswer {
                target: target.clone(),
                reason,
            };
            inner.state().send_modify(|s| {
                s.attempts.push(crate::RegisterAttempt {
                    request,
                    via: RegisteredVia::PluginWatcher,
                    epoch: s.epoch,
                    at: std::time::Instant::now(),
                    error: Some(err.to_string()),
                });
            });
            Err(err)
        }
    };
    let status = match &result {
        Ok(_) => pr::RegistrationStatus {
            plugin_registered: true,
            error: String::new(),
        },
        Err(e) => pr::RegistrationStatus {
            plugin_registered: false,
            error: format!("RegisterPlugin error -- {e}"),
        },
    };
    call(
        "NotifyRegistrationStatus",
        &target,
        client.notify_registration_status(status),
    )
    .await?;
    result
}
