//! The dispatcher: environment and stdin in, result or error JSON out, exit code back.
//!
//! Environment switches besides the CNI ones (documented in `sriov-cni/README.md`):
//! `SRIOV_CNI_SYSFS_ROOT` (root for sysfs reads, default `/`), `SRIOV_CNI_DATA_DIR`
//! (cache and locks, default `/var/lib/cni/sriov`). `SRIOV_CNI_FAKE_VF_STATE` selects the
//! file-backed VF fake only in the test binary `sriov-test` (cargo feature `test-fake`);
//! the shipped `sriov` refuses ADD while it is set, so a variable left over in a
//! runtime's environment cannot turn every ADD into a success that programs no VF.

use crate::cache::DEFAULT_DATA_DIR;
use crate::config::{Command, Env, EnvError, NetConf, peek_version};
use crate::error::Error;
use crate::links::KernelLinks;
use crate::plugin::Plugin;
use crate::result::error_json;
use crate::sriov::{NetlinkVf, NoSeam, TestSeam, VfConfigurator};
use crate::version::{CniVersion, version_json};
use rdma_hca::Host;
use std::io::Write;
use std::path::PathBuf;

/// Env var: root directory for sysfs reads (fixtures in tests). Default `/`.
pub const ENV_SYSFS_ROOT: &str = "SRIOV_CNI_SYSFS_ROOT";
/// Env var: data directory (cache files, `lock/`). Default `/var/lib/cni/sriov`.
pub const ENV_DATA_DIR: &str = "SRIOV_CNI_DATA_DIR";
/// Env var, TEST ONLY: the file-backed VF fake's state file (`sriov-test` only).
pub const ENV_FAKE_VF_STATE: &str = "SRIOV_CNI_FAKE_VF_STATE";

/// Where VF settings go: the kernel, or (test binary only) the file-backed fake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Netlink, no test seam. [`ENV_FAKE_VF_STATE`] set makes ADD fail.
    Kernel,
    /// The fake at [`ENV_FAKE_VF_STATE`] when that is set, netlink otherwise.
    #[cfg(feature = "test-fake")]
    FakeWhenSet,
}

/// Run one invocation of the shipped plugin. `get` reads environment variables; the JSON
/// answer goes to `out`. Returns the process exit code.
pub fn main_with(get: impl Fn(&str) -> Option<String>, stdin: &[u8], out: &mut dyn Write) -> i32 {
    main_on(Backend::Kernel, get, stdin, out)
}

/// [`main_with`] on a chosen backend (the test binary passes [`Backend::FakeWhenSet`]).
pub fn main_on(
    backend: Backend,
    get: impl Fn(&str) -> Option<String>,
    stdin: &[u8],
    out: &mut dyn Write,
) -> i32 {
    let err_version = peek_version(stdin)
        .filter(|v| v.parse::<CniVersion>().is_ok())
        .unwrap_or_else(|| CniVersion::LATEST.as_str().to_string());
    let emit_err = |out: &mut dyn Write, e: &Error| {
        crate::log::log(crate::config::LogLevel::Error, format_args!("{e}"));
        let j = error_json(&err_version, e.code(), &e.to_string(), &e.details());
        let _ = writeln!(out, "{j}");
        1
    };
    let env = match Env::from_vars(&get) {
        Ok(e) => e,
        Err(e) => return emit_err(out, &Error::Env(e)),
    };
    if env.command == Command::Version {
        let _ = writeln!(out, "{}", version_json(peek_version(stdin).as_deref()));
        return 0;
    }
    let needs_device = env.command == Command::Add;
    let conf = match NetConf::parse(stdin, needs_device) {
        Ok(c) => c,
        Err(e) => return emit_err(out, &e),
    };
    crate::log::init(conf.log_level, conf.log_file.as_deref());
    for key in &conf.unknown_keys {
        crate::warn!("network config: unknown key {key:?}, ignored");
    }
    if matches!(env.command, Command::Status | Command::Gc) && !conf.cni_version.has_status_gc() {
        let e = Error::IncompatibleVersion {
            requested: conf.cni_version.to_string(),
            reason: format!("{} needs cniVersion 1.1.0", env.command.as_str()),
        };
        return emit_err(out, &e);
    }
    let root = get(ENV_SYSFS_ROOT)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "/".into());
    let data_dir = PathBuf::from(
        get(ENV_DATA_DIR)
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| DEFAULT_DATA_DIR.into()),
    );
    let fake_path = get(ENV_FAKE_VF_STATE).filter(|s| !s.is_empty());
    let (mut vf, mut seam): (Box<dyn VfConfigurator>, Box<dyn TestSeam>) =
        match (backend, fake_path) {
            #[cfg(feature = "test-fake")]
            (Backend::FakeWhenSet, Some(p)) => {
                crate::warn!("TEST MODE: VF settings go to the fake state file {p}");
                (
                    Box::new(crate::fake::FileFake::new(&p)),
                    Box::new(crate::fake::FileFake::new(&p)),
                )
            }
            // Only ADD is refused: DEL, CHECK and GC of a runtime must still clean up
            // what an earlier ADD (before the variable appeared) left.
            (Backend::Kernel, Some(p)) if env.command == Command::Add => {
                let e = Error::Env(EnvError {
                    var: ENV_FAKE_VF_STATE,
                    value: p,
                    reason: "is for the test binary sriov-test only: the shipped sriov does \
                             not fake VFs; unset it in the runtime's environment"
                        .into(),
                });
                return emit_err(out, &e);
            }
            _ => match NetlinkVf::new() {
                Ok(n) => (Box::new(n), Box::new(NoSeam)),
                Err(e) => return emit_err(out, &Error::Netlink(e)),
            },
        };
    let mut plugin = Plugin {
        host: Host::new(root),
        vf: vf.as_mut(),
        seam: seam.as_mut(),
        links: &mut KernelLinks,
        data_dir,
    };
    crate::debug!(
        "{} {}/{} netns {:?}",
        env.command.as_str(),
        env.container_id,
        env.ifname,
        env.netns
    );
    match plugin.run(&env, &conf) {
        Ok(Some(v)) => {
            let _ = writeln!(out, "{v}");
            0
        }
        Ok(None) => 0,
        Err(e) => emit_err(out, &e),
    }
}
