//! gRPC over unix sockets, the way the kubelet and device plugins talk.
//!
//! - [`connect_unix`]: a tonic [`Channel`] to a socket path, connected eagerly within a
//!   bounded time (a missing or dead socket is an error, not a hang).
//! - [`UnixServer::spawn`]: binds a socket (replacing a stale file), serves tonic
//!   [`Routes`] on it and stops within a bounded time. Graceful shutdown alone could wait
//!   forever, because `ListAndWatch` streams never end, and tonic runs each connection on
//!   its own task, so aborting the server task leaves them open; after the grace period
//!   every accepted socket is shut down, which ends its streams on both sides.
//!   Every accepted socket is read through [`crate::h2front::H2Front`], so requests
//!   are answered whatever their HTTP/2 `:authority` (the kubelet's plugin watcher sends
//!   the socket path there), and requests h2 refuses are logged.

use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::service::Routes;
use tonic::transport::server::{Connected, UdsConnectInfo};
use tonic::transport::{Channel, Endpoint, Server, Uri};

use crate::h2front::H2Front;

/// How long [`connect_unix`] waits for the connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long [`UnixServer::shutdown`] lets in-flight calls finish before cutting them.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Errors of the unix-socket helpers; each names the socket path.
#[derive(Debug, thiserror::Error)]
pub enum UnixError {
    /// A stale file at the socket path could not be removed before binding.
    #[error("remove stale socket {path}: {source}")]
    RemoveStale {
        /// The socket path.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Binding the socket failed.
    #[error("bind unix socket {path}: {source}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Connecting to the socket failed.
    #[error("connect to unix socket {path}: {source}")]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The underlying error.
        source: tonic::transport::Error,
    },
    /// Connecting to the socket did not finish in time.
    #[error("connect to unix socket {path}: no connection within {timeout:?}")]
    ConnectTimeout {
        /// The socket path.
        path: PathBuf,
        /// The time allowed.
        timeout: Duration,
    },
    /// The gRPC server on the socket failed.
    #[error("serve gRPC on {path}: {source}")]
    Serve {
        /// The socket path.
        path: PathBuf,
        /// The underlying error.
        source: tonic::transport::Error,
    },
    /// The server task panicked.
    #[error("gRPC server task for {path} panicked")]
    Panicked {
        /// The socket path.
        path: PathBuf,
    },
}

/// Connects a tonic [`Channel`] to the unix socket at `path` within
/// [`DEFAULT_CONNECT_TIMEOUT`].
pub async fn connect_unix(path: impl AsRef<Path>) -> Result<Channel, UnixError> {
    connect_unix_timeout(path, DEFAULT_CONNECT_TIMEOUT).await
}

/// Connects a tonic [`Channel`] to the unix socket at `path`, failing after `timeout`.
///
/// The channel reconnects by itself (to the same path) if the connection drops later.
pub async fn connect_unix_timeout(
    path: impl AsRef<Path>,
    timeout: Duration,
) -> Result<Channel, UnixError> {
    let path = path.as_ref().to_path_buf();
    // The URI is only a placeholder: the connector ignores it and dials the socket. Its
    // authority becomes the `:authority` header, which kubelet's gRPC accepts.
    let endpoint = Endpoint::from_static("http://localhost").connect_timeout(timeout);
    let dial = path.clone();
    let connector = tower::service_fn(move |_: Uri| {
        let dial = dial.clone();
        async move { UnixStream::connect(dial).await.map(TokioIo::new) }
    });
    match tokio::time::timeout(timeout, endpoint.connect_with_connector(connector)).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(source)) => Err(UnixError::Connect { path, source }),
        Err(_) => Err(UnixError::ConnectTimeout { path, timeout }),
    }
}

/// Binds a unix listener at `path`, removing a stale socket file left by an earlier run.
pub fn bind_unix(path: impl AsRef<Path>) -> Result<UnixListener, UnixError> {
    let path = path.as_ref();
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(UnixError::RemoveStale {
                path: path.to_path_buf(),
                source,
            });
        }
    }
    UnixListener::bind(path).map_err(|source| UnixError::Bind {
        path: path.to_path_buf(),
        source,
    })
}

/// A tonic server listening on a unix socket, running on its own task.
///
/// The socket is listening when [`UnixServer::spawn`] returns, so a plugin may call
/// `Register` right after. Dropping the handle aborts the server.
#[derive(Debug)]
pub struct UnixServer {
    path: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
    conns: Conns,
}

/// The accepted connections, to cut them at shutdown: a duplicate of each socket, kept
/// while the connection (its [`Tracked`] stream) lives.
#[derive(Debug, Clone, Default)]
struct Conns(Arc<Mutex<Vec<Conn>>>);

/// Liveness of one connection, and a duplicate of its socket.
type Conn = (Weak<()>, std::os::unix::net::UnixStream);

impl Conns {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Conn>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Wraps an accepted stream, remembering a duplicate of its socket.
    fn track(&self, stream: UnixStream, socket: &Arc<str>) -> io::Result<Tracked> {
        let std = stream.into_std()?;
        let dup = std.try_clone()?;
        let alive = Arc::new(());
        let mut conns = self.lock();
        // Forget connections that have ended, so long-lived servers do not pile up fds.
        conns.retain(|(w, _)| w.strong_count() > 0);
        conns.push((Arc::downgrade(&alive), dup));
        drop(conns);
        Ok(Tracked {
            inner: H2Front::new(UnixStream::from_std(std)?, socket.clone()),
            _alive: alive,
        })
    }

    /// Shuts down every live connection's socket: both ends see EOF at once.
    fn cut(&self) {
        for (w, s) in self.lock().drain(..) {
            if w.strong_count() > 0 {
                // Already-closed sockets are fine to leave alone.
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

/// An accepted connection whose socket [`Conns`] can shut down from outside, read and
/// written through [`H2Front`] (every `:authority` accepted, refusals logged).
struct Tracked {
    inner: H2Front<UnixStream>,
    _alive: Arc<()>,
}

impl Connected for Tracked {
    type ConnectInfo = UdsConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.get_ref().connect_info()
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl UnixServer {
    /// Binds `path` (see [`bind_unix`]) and serves `routes` on it.
    ///
    /// Must be called within a tokio runtime.
    pub fn spawn(path: impl AsRef<Path>, routes: Routes) -> Result<Self, UnixError> {
        Self::spawn_with_shutdown(path, routes, std::future::pending())
    }

    /// Like [`UnixServer::spawn`], and also stops gracefully once `signal` completes.
    pub fn spawn_with_shutdown(
        path: impl AsRef<Path>,
        routes: Routes,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> Result<Self, UnixError> {
        let label = path.as_ref().display().to_string();
        Self::spawn_labelled(path, &label, routes, signal)
    }

    /// Like [`UnixServer::spawn_with_shutdown`], naming the socket `label` in log lines
    /// (for a socket bound under a temporary name and then linked into place).
    pub fn spawn_labelled(
        path: impl AsRef<Path>,
        label: &str,
        routes: Routes,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> Result<Self, UnixError> {
        let path = path.as_ref().to_path_buf();
        let conns = Conns::default();
        let tracker = conns.clone();
        let label: Arc<str> = Arc::from(label);
        let incoming =
            UnixListenerStream::new(bind_unix(&path)?).map(move |s| tracker.track(s?, &label));
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            tokio::select! {
                _ = stopped => {}
                () = signal => {}
            }
        };
        let task = tokio::spawn(
            Server::builder()
                .add_routes(routes)
                .serve_with_incoming_shutdown(incoming, shutdown),
        );
        Ok(Self {
            path,
            stop: Some(stop),
            task: Some(task),
            conns,
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the server task has ended (failed, or stopped by its signal).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stops the server with [`DEFAULT_SHUTDOWN_GRACE`]; see [`UnixServer::shutdown_within`].
    pub async fn shutdown(self) -> Result<(), UnixError> {
        self.shutdown_within(DEFAULT_SHUTDOWN_GRACE).await
    }

    /// Stops accepting, lets in-flight calls run for at most `grace`, then shuts down
    /// every connection's socket (ending streams such as `ListAndWatch` on both sides),
    /// and removes the socket file (if still there). Returns the server's own error if it
    /// had failed.
    pub async fn shutdown_within(mut self, grace: Duration) -> Result<(), UnixError> {
        if let Some(stop) = self.stop.take() {
            // The server may already be gone; then there is nobody to tell.
            let _ = stop.send(());
        }
        let result = match self.task.take() {
            None => Ok(()),
            Some(mut task) => match tokio::time::timeout(grace, &mut task).await {
                Ok(Ok(Ok(()))) => Ok(()),
                Ok(Ok(Err(source))) => Err(UnixError::Serve {
                    path: self.path.clone(),
                    source,
                }),
                Ok(Err(join)) if join.is_panic() => Err(UnixError::Panicked {
                    path: self.path.clone(),
                }),
                Ok(Err(_)) => Ok(()),
                Err(_) => {
                    // Streams such as ListAndWatch never finish by themselves.
                    self.conns.cut();
                    if tokio::time::timeout(grace, &mut task).await.is_err() {
                        task.abort();
                    }
                    Ok(())
                }
            },
        };
        remove_socket(&self.path);
        result
    }
}

impl Drop for UnixServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            self.conns.cut();
        }
    }
}

/// Removes a socket file, treating "already gone" as done; other errors are ignored
/// because the next bind replaces the file anyway.
fn remove_socket(path: &Path) {
    let _ = std::fs::remove_file(path);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deviceplugin::v1beta1 as dp;
    use dp::registration_client::RegistrationClient;
    use dp::registration_server::{Registration, RegistrationServer};
    use tokio::sync::mpsc;

    struct Recorder(mpsc::UnboundedSender<dp::RegisterRequest>);

    #[tonic::async_trait]
    impl Registration for Recorder {
        async fn register(
            &self,
            req: tonic::Request<dp::RegisterRequest>,
        ) -> Result<tonic::Response<dp::Empty>, tonic::Status> {
            self.0
                .send(req.into_inner())
                .map_err(|_| tonic::Status::internal("test receiver gone"))?;
            Ok(tonic::Response::new(dp::Empty {}))
        }
    }

    #[tokio::test]
    async fn round_trip_over_unix_socket_and_shutdown_removes_socket() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("kubelet.sock");
        // A stale regular file where the socket goes must be replaced.
        std::fs::write(&sock, b"stale").unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let server =
            UnixServer::spawn(&sock, Routes::new(RegistrationServer::new(Recorder(tx)))).unwrap();

        let mut client = RegistrationClient::new(connect_unix(&sock).await.unwrap());
        client
            .register(dp::RegisterRequest {
                version: crate::VERSION.into(),
                endpoint: "x.sock".into(),
                resource_name: "rdma/hca".into(),
                options: None,
            })
            .await
            .unwrap();
        let got = rx.recv().await.unwrap();
        assert_eq!(got.resource_name, "rdma/hca");
        assert_eq!(got.endpoint, "x.sock");

        assert!(!server.is_finished());
        server.shutdown().await.unwrap();
        assert!(!sock.exists());
    }

    /// A DevicePlugin whose ListAndWatch stream never ends, like a real plugin's.
    struct Endless;

    #[tonic::async_trait]
    impl dp::device_plugin_server::DevicePlugin for Endless {
        type ListAndWatchStream =
            tokio_stream::Pending<Result<dp::ListAndWatchResponse, tonic::Status>>;
        async fn get_device_plugin_options(
            &self,
            _: tonic::Request<dp::Empty>,
        ) -> Result<tonic::Response<dp::DevicePluginOptions>, tonic::Status> {
            Ok(tonic::Response::new(dp::DevicePluginOptions::default()))
        }
        async fn list_and_watch(
            &self,
            _: tonic::Request<dp::Empty>,
        ) -> Result<tonic::Response<Self::ListAndWatchStream>, tonic::Status> {
            Ok(tonic::Response::new(tokio_stream::pending()))
        }
        async fn get_preferred_allocation(
            &self,
            _: tonic::Request<dp::PreferredAllocationRequest>,
        ) -> Result<tonic::Response<dp::PreferredAllocationResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("test"))
        }
        async fn allocate(
            &self,
            _: tonic::Request<dp::AllocateRequest>,
        ) -> Result<tonic::Response<dp::AllocateResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("test"))
        }
        async fn pre_start_container(
            &self,
            _: tonic::Request<dp::PreStartContainerRequest>,
        ) -> Result<tonic::Response<dp::PreStartContainerResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("test"))
        }
    }

    #[tokio::test]
    async fn shutdown_ends_open_streams_within_the_grace_period() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("plugin.sock");
        let server = UnixServer::spawn(
            &sock,
            Routes::new(dp::device_plugin_server::DevicePluginServer::new(Endless)),
        )
        .unwrap();
        let mut client =
            dp::device_plugin_client::DevicePluginClient::new(connect_unix(&sock).await.unwrap());
        let mut stream = client
            .list_and_watch(dp::Empty {})
            .await
            .unwrap()
            .into_inner();
        let bound = Duration::from_secs(5);
        tokio::time::timeout(bound, server.shutdown_within(Duration::from_millis(50)))
            .await
            .unwrap()
            .unwrap();
        // The client learns at once: the stream ends (error or end), no hang.
        let end = tokio::time::timeout(bound, stream.message()).await.unwrap();
        assert!(!matches!(end, Ok(Some(_))), "{end:?}");
        assert!(!sock.exists());
    }

    #[tokio::test]
    async fn connect_to_missing_socket_fails_naming_path() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("nope.sock");
        let err = connect_unix_timeout(&sock, Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(matches!(err, UnixError::Connect { .. }), "{err:?}");
        assert!(err.to_string().contains("nope.sock"), "{err}");
    }
}
