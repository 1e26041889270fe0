//! Waiting for files to appear or vanish, driven by inotify (never by polling sleeps).

use std::path::Path;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::SimError;

/// Waits until `path` exists, at most `timeout`. The parent directory must exist.
pub async fn wait_for_path(path: &Path, timeout: Duration) -> Result<(), SimError> {
    wait_until(path, timeout, true).await
}

/// Waits until `path` no longer exists, at most `timeout`. The parent directory must exist.
pub async fn wait_for_removal(path: &Path, timeout: Duration) -> Result<(), SimError> {
    wait_until(path, timeout, false).await
}

async fn wait_until(path: &Path, timeout: Duration, exists: bool) -> Result<(), SimError> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        // Any event (or watch error) is only a cue to look again.
        let _ = tx.send(ev.is_ok());
    })
    .map_err(|source| SimError::Watch {
        path: parent.to_path_buf(),
        source,
    })?;
    watcher
        .watch(parent, RecursiveMode::NonRecursive)
        .map_err(|source| SimError::Watch {
            path: parent.to_path_buf(),
            source,
        })?;
    let what = format!(
        "{} to {}",
        path.display(),
        if exists { "appear" } else { "vanish" }
    );
    let wait = async {
        // Look after the watch is set, so a change in between is not missed.
        while path.exists() != exists {
            if rx.recv().await.is_none() {
                break;
            }
        }
    };
    tokio::time::timeout(timeout, wait)
        .await
        .map_err(|_| SimError::Timeout { what, timeout })?;
    if path.exists() == exists {
        Ok(())
    } else {
        Err(SimError::Watch {
            path: parent.to_path_buf(),
            source: notify::Error::generic("watcher stopped"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sees_a_file_created_after_the_wait_began_and_its_removal() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("kubelet.sock");
        let p2 = p.clone();
        let writer = tokio::spawn(async move { std::fs::write(&p2, b"x").unwrap() });
        wait_for_path(&p, Duration::from_secs(5)).await.unwrap();
        writer.await.unwrap();
        let p3 = p.clone();
        let remover = tokio::spawn(async move { std::fs::remove_file(&p3).unwrap() });
        wait_for_removal(&p, Duration::from_secs(5)).await.unwrap();
        remover.await.unwrap();
    }

    #[tokio::test]
    async fn times_out_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("never");
        let err = wait_for_path(&p, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(matches!(err, SimError::Timeout { .. }));
        assert!(err.to_string().contains("never"), "{err}");
    }
}
