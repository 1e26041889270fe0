//! What changes under a running daemon, turned into [`Event`]s on one channel: kubelet
//! restarts (a new `kubelet.sock`), config edits and link changes from the kernel. The
//! daemon's loop reacts; its own timers add the periodic rescan and the slow safety poll.

use notify::{EventKind, RecursiveMode, Watcher};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;

/// Something the daemon must react to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `kubelet.sock` was (re)created: kubelet restarted and wiped our sockets.
    KubeletRestarted,
    /// The config file (or the ConfigMap `..data` link behind it) changed.
    ConfigChanged,
    /// The kernel reported a link change (netdev added, removed, up/down, moved).
    LinksChanged,
}

/// Errors setting up a watch.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// inotify could not watch a directory.
    #[error("cannot watch {path}: {source}")]
    Watch {
        /// The directory.
        path: PathBuf,
        /// What notify said.
        #[source]
        source: notify::Error,
    },
    /// The rtnetlink multicast socket could not be opened.
    #[error("cannot subscribe to rtnetlink link events: {0}")]
    Netlink(#[source] std::io::Error),
}

/// Keeps the watches alive; dropping it stops them.
pub struct Watches {
    _fs: Vec<notify::RecommendedWatcher>,
}

/// Watch `dir` (not recursive) and send `event` whenever an entry named one of `names`
/// (or, with `configmap`, any `..`-prefixed entry a ConfigMap volume swaps) is created,
/// written or renamed into place.
///
/// The directory is watched rather than the file: a watch on a file dies when the file is
/// deleted (kubelet wipes its dir; ConfigMap updates rename over the file).
pub fn watch_dir(
    dir: &Path,
    names: Vec<OsString>,
    configmap: bool,
    event: Event,
    tx: mpsc::Sender<Event>,
) -> Result<notify::RecommendedWatcher, EventsError> {
    let handler = move |res: notify::Result<notify::Event>| {
        let Ok(ev) = res else { return };
        let relevant_kind = matches!(
            ev.kind,
            EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
        );
        let relevant_name = ev.paths.iter().any(|p| {
            p.file_name().is_some_and(|n| {
                names.iter().any(|w| w == n) || (configmap && n.to_string_lossy().starts_with(".."))
            })
        });
        if relevant_kind && relevant_name {
            // a full channel already holds a pending event of this kind: coalesce
            let _ = tx.try_send(event.clone());
        }
    };
    let mut w = notify::recommended_watcher(handler).map_err(|source| EventsError::Watch {
        path: dir.to_path_buf(),
        source,
    })?;
    w.watch(dir, RecursiveMode::NonRecursive)
        .map_err(|source| EventsError::Watch {
            path: dir.to_path_buf(),
            source,
        })?;
    Ok(w)
}

/// Watch the device-plugin dir for `kubelet.sock` and, when given, the config file's dir.
pub fn watch_files(
    device_plugin_dir: &Path,
    config_file: Option<&Path>,
    tx: mpsc::Sender<Event>,
) -> Result<Watches, EventsError> {
    let mut fs = vec![watch_dir(
        device_plugin_dir,
        vec![OsString::from(proto_kubelet_socket())],
        false,
        Event::KubeletRestarted,
        tx.clone(),
    )?];
    if let Some(cfg) = config_file {
        let dir = match cfg.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if let Some(name) = cfg.file_name() {
            // A missing config dir means the embedded default is in use: nothing to watch.
            if dir.is_dir() {
                fs.push(watch_dir(
                    &dir,
                    vec![name.to_os_string()],
                    true,
                    Event::ConfigChanged,
                    tx,
                )?);
            }
        }
    }
    Ok(Watches { _fs: fs })
}

fn proto_kubelet_socket() -> &'static str {
    "kubelet.sock"
}

/// Subscribe to rtnetlink link notifications (RTNLGRP_LINK) in the current netns and
/// send [`Event::LinksChanged`] for each batch. Runs on its own thread (a blocking recv
/// costs nothing while idle) until the receiver is dropped.
pub fn watch_links(tx: mpsc::Sender<Event>) -> Result<(), EventsError> {
    use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
    const RTMGRP_LINK: u32 = 1;
    let mut sock = Socket::new(NETLINK_ROUTE).map_err(EventsError::Netlink)?;
    sock.bind(&SocketAddr::new(0, RTMGRP_LINK))
        .map_err(EventsError::Netlink)?;
    std::thread::Builder::new()
        .name("rtnl-link-events".into())
        .spawn(move || {
            let mut buf = vec![0u8; 65536];
            loop {
                match sock.recv(&mut &mut buf[..], 0) {
                    Ok(_) => {
                        if tx.is_closed() {
                            return;
                        }
                        let _ = tx.try_send(Event::LinksChanged);
                    }
                    // ENOBUFS: we fell behind; a rescan covers whatever was dropped.
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                        let _ = tx.try_send(Event::LinksChanged);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "rtnetlink link events stopped; relying on periodic rescan");
                        return;
                    }
                }
            }
        })
        .map_err(EventsError::Netlink)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::time::Duration;

    async fn next(rx: &mut mpsc::Receiver<Event>) -> Event {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("no event within 5 s")
            .expect("channel closed")
    }

    #[tokio::test]
    async fn kubelet_sock_creation_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        let _w = watch_files(dir.path(), None, tx).unwrap();
        std::fs::write(dir.path().join("other.sock"), "").unwrap();
        std::fs::write(dir.path().join("kubelet.sock"), "").unwrap();
        assert_eq!(next(&mut rx).await, Event::KubeletRestarted);
    }

    #[tokio::test]
    async fn config_rename_and_configmap_swap_are_seen() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("config.json");
        std::fs::write(&cfg, "{}").unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        let _w = watch_files(dir.path(), Some(&cfg), tx).unwrap();
        // write-then-rename, as editors and kubectl cp do
        std::fs::write(dir.path().join("config.json.tmp"), "{\"a\":1}").unwrap();
        std::fs::rename(dir.path().join("config.json.tmp"), &cfg).unwrap();
        assert_eq!(next(&mut rx).await, Event::ConfigChanged);
        while rx.try_recv().is_ok() {}
        // ConfigMap volumes swap a `..data` symlink
        std::os::unix::fs::symlink("..2026_11_23", dir.path().join("..data_tmp")).unwrap();
        std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
        assert_eq!(next(&mut rx).await, Event::ConfigChanged);
    }

    #[tokio::test]
    async fn link_events_come_from_the_kernel() {
        if !nix::unistd::Uid::effective().is_root() {
            simhost::skip::skip(
                "link_events_come_from_the_kernel",
                "needs root to create a link",
            );
            return;
        }
        let (tx, mut rx) = mpsc::channel(8);
        watch_links(tx).unwrap();
        let name = format!("evt{}", std::process::id() % 100000);
        struct Cleanup(String);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                let _ = Command::new("ip").args(["link", "del", &self.0]).status();
            }
        }
        let _c = Cleanup(name.clone());
        let ok = Command::new("ip")
            .args([
                "link",
                "add",
                &name,
                "type",
                "veth",
                "peer",
                "name",
                &format!("{name}p"),
            ])
            .status()
            .unwrap()
            .success();
        assert!(ok, "ip link add failed");
        assert_eq!(next(&mut rx).await, Event::LinksChanged);
    }
}
