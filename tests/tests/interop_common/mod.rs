//! The independent gRPC clients of the interop tests (`grpc_interop.rs`,
//! `dra_grpc_interop.rs`): grpc-go (Debian's `golang-google-grpc-dev`, built here in
//! GOPATH mode from `tests/interop/grpc_go_probe.go`) and grpcio (Debian's
//! `python3-grpcio`, `tests/interop/grpcio_probe.py`), each making raw calls on one
//! connection; requests and responses are encoded and decoded by the tests with prost.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, missing_docs)]

use prost::Message;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

pub const GRPC_GO_SRC: &str = "/usr/share/gocode/src/google.golang.org/grpc";
pub const PYTHON: &str = "/usr/bin/python3";

/// The grpc-go probe, built once per test process into the target's tmp dir.
pub fn go_probe() -> Result<PathBuf, String> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            if !Path::new(GRPC_GO_SRC).is_dir() {
                return Err(format!(
                    "{GRPC_GO_SRC} missing (apt-get install golang-google-grpc-dev)"
                ));
            }
            let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/grpc_go_probe.go");
            let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("grpc_go_probe");
            let built = Command::new("go")
                .arg("build")
                .arg("-o")
                .arg(&out)
                .arg(&src)
                .env("GOPATH", "/usr/share/gocode")
                .env("GO111MODULE", "off")
                .env("GOPROXY", "off")
                .env("GOFLAGS", "")
                .env(
                    "GOCACHE",
                    Path::new(env!("CARGO_TARGET_TMPDIR")).join("gocache"),
                )
                .output()
                .map_err(|e| format!("running go (apt-get install golang-go): {e}"))?;
            if !built.status.success() {
                return Err(format!(
                    "go build {}: {}",
                    src.display(),
                    String::from_utf8_lossy(&built.stderr)
                ));
            }
            Ok(out)
        })
        .clone()
}

pub fn grpcio_available() -> Result<(), String> {
    let ok = Command::new(PYTHON)
        .args(["-c", "import grpc"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{PYTHON} cannot import grpc (apt-get install python3-grpcio)"
        ))
    }
}

/// One way of dialling.
#[derive(Debug, Clone, Copy)]
pub enum Dialer {
    /// grpc-go with this `WithAuthority` (None: none, the plugin watcher's way).
    Go(Option<&'static str>),
    /// grpcio with this authority mode (see grpcio_probe.py).
    Py(&'static str),
}

/// One call for a probe: kind (`unary`/`stream`), full method, request.
pub struct Call {
    pub stream: bool,
    pub method: &'static str,
    pub request: Vec<u8>,
}

pub fn unary(method: &'static str, m: &impl Message) -> Call {
    Call {
        stream: false,
        method,
        request: m.encode_to_vec(),
    }
}

/// The plugin watcher's calls on a registration socket, on one connection: `GetInfo`,
/// then `NotifyRegistrationStatus` (registered).
pub fn watcher_calls() -> [Call; 2] {
    [
        unary(
            "/pluginregistration.Registration/GetInfo",
            &proto::pluginregistration::InfoRequest {},
        ),
        unary(
            "/pluginregistration.Registration/NotifyRegistrationStatus",
            &proto::pluginregistration::RegistrationStatus {
                plugin_registered: true,
                error: String::new(),
            },
        ),
    ]
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Runs `calls` on one connection to `socket` dialled as `dialer`; each answer is the
/// response bytes or the gRPC error line.
pub fn probe(dialer: Dialer, socket: &Path, calls: &[Call]) -> Vec<Result<Vec<u8>, String>> {
    let mut cmd = match dialer {
        Dialer::Go(authority) => {
            let mut c = Command::new(go_probe().unwrap());
            c.arg("-socket").arg(socket);
            if let Some(a) = authority {
                c.arg("-authority").arg(a);
            }
            c
        }
        Dialer::Py(mode) => {
            let mut c = Command::new(PYTHON);
            c.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/grpcio_probe.py"))
                .arg("--socket")
                .arg(socket)
                .arg("--authority")
                .arg(mode);
            c
        }
    };
    for c in calls {
        let kind = if c.stream { "stream" } else { "unary" };
        cmd.arg(format!("{kind}:{}:{}", c.method, hex(&c.request)));
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{dialer:?} on {}: {}",
        socket.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<_> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| match l.strip_prefix("ok ") {
            Some(h) => Ok(unhex(h)),
            None => Err(l.to_string()),
        })
        .collect();
    assert_eq!(lines.len(), calls.len(), "{dialer:?}: {lines:?}");
    lines
}

/// Both probes, or what is missing.
pub fn probes_available() -> Result<(), String> {
    go_probe().and_then(|_| grpcio_available())
}

/// Every way of dialling: grpc-go as the plugin watcher (no authority, so the raw path)
/// and as the device manager (`localhost`); grpcio's own authority, the raw path, and the
/// percent-encoded path (newer grpc-go).
pub const DIALERS: [Dialer; 5] = [
    Dialer::Go(None),
    Dialer::Go(Some("localhost")),
    Dialer::Py("default"),
    Dialer::Py("raw"),
    Dialer::Py("encoded"),
];
