//! The dispatcher: environment and stdin in, result or error JSON out, exit code back.
//!
//! Environment switches besides the CNI ones (documented in `sriov-cni/README.md`):
//! `SRIOV_CNI_SYSFS_ROOT` (root for sysfs reads, default `/`), `SRIOV_CNI_DATA_DIR`
//! (cache and locks, default `/var/lib/cni/sriov`) and, for tests only,
//! `SRIOV_CNI_FAKE_VF_STATE` (see [`crate::fake`]).

use crate::cache::DEFAULT_DATA_DIR;
use crate::config::{Command, Env, NetConf, peek_version};
use crate::error::Error;
use crate::fake::FileFake;
use crate::plugin::Plugin;
use crate::result::error_json;
use crate::sriov::{NetlinkVf, VfConfigurator};
use crate::version::{CniVersion, version_json};
use rdma_hca::Host;
use std::io::Write;
use std::path::PathBuf;

/// Env var: root directory for sysfs reads (fixtures in tests). Default `/`.
pub const ENV_SYSFS_ROOT: &str = "SRIOV_CNI_SYSFS_ROOT";
/// Env var: data directory (cache files, `lock/`). Default `/var/lib/cni/sriov`.
pub const ENV_DATA_DIR: &str = "SRIOV_CNI_DATA_DIR";
/// Env var, TEST ONLY: use the file-backed VF fake at this path instead of netlink.
pub const ENV_FAKE_VF_STATE: &str = "SRIOV_CNI_FAKE_VF_STATE";

/// Run one invocation. `get` reads environment variables; the JSON answer goes to `out`.
/// Returns the process exit code.
pub fn main_with(get: impl Fn(&str) -> Option<String>, stdin: &[u8], out: &mut dyn Write) -> i32 {
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
    let mut vf: Box<dyn VfConfigurator> = match get(ENV_FAKE_VF_STATE).filter(|s| !s.is_empty()) {
        Some(p) => {
            crate::warn!("TEST MODE: VF settings go to the fake state file {p}");
            Box::new(FileFake::new(p))
        }
        None => match NetlinkVf::new() {
            Ok(n) => Box::new(n),
            Err(e) => return emit_err(out, &Error::Netlink(e)),
        },
    };
    let mut plugin = Plugin {
        host: Host::new(root),
        vf: vf.as_mut(),
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
