//! The project's own binaries and scratch directories, for the tests, the benches and the
//! demo helpers of this crate.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// Path of binary `bin` of workspace package `package`, built first if it is missing or
/// stale: a nested `cargo build` of that one binary into the target dir and profile of the
/// running test or bench (quick after `cargo build --workspace`, as in `./scripts/test.sh`:
/// at most the crates whose features differ for one package are built). Built once per
/// process; parallel callers wait for the first.
///
/// # Panics
/// When the build fails (this is test harness code: the test cannot go on without it).
pub fn project_bin(package: &str, bin: &str) -> PathBuf {
    project_bin_with(package, bin, &[])
}

/// [`project_bin`] with cargo features of `package` on (`sriov-test` needs `test-fake`).
///
/// # Panics
/// As [`project_bin`].
pub fn project_bin_with(package: &str, bin: &str, features: &[&str]) -> PathBuf {
    static BUILT: OnceLock<Mutex<BTreeMap<String, PathBuf>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let mut built = built
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(p) = built.get(bin) {
        return p.clone();
    }
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("the test's own path: {e}"));
    // <target>/<profile>/deps/<test binary>
    let Some(profile_dir) = exe.parent().and_then(Path::parent).map(Path::to_path_buf) else {
        panic!("{} is not under <target>/<profile>/deps", exe.display());
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-q", "-p", package, "--bin", bin]);
    if !features.is_empty() {
        cmd.arg("--features").arg(features.join(","));
    }
    cmd.arg("--target-dir")
        .arg(profile_dir.parent().unwrap_or(&profile_dir))
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running cargo: {e}"));
    assert!(
        out.status.success(),
        "building {bin}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = profile_dir.join(bin);
    built.insert(bin.to_string(), path.clone());
    path
}

/// A scratch directory for a test: on tmpfs when there is one (fixture trees are
/// thousands of small files), removed on drop.
///
/// # Panics
/// When no temporary directory can be made.
pub fn scratch() -> tempfile::TempDir {
    simhost::tempdir().unwrap_or_else(|e| panic!("a scratch directory: {e}"))
}

/// The `device-plugin` flags of a DRA node laid out under `dir` for `driver`: `--dra`,
/// the driver name, its plugin and registry dirs (`plugins/<driver>`, `plugins_registry`),
/// the DRA device-info dir (`devinfo-dra`) and the CDI dir (`cdi`). Node name and
/// kubeconfig are the caller's.
pub fn dra_args(dir: &Path, driver: &str) -> Vec<std::ffi::OsString> {
    let path = |p: PathBuf| p.into_os_string();
    vec![
        "--dra".into(),
        "--dra-driver-name".into(),
        driver.into(),
        "--dra-plugin-dir".into(),
        path(dir.join("plugins").join(driver)),
        "--dra-registry-dir".into(),
        path(dir.join("plugins_registry")),
        "--dra-device-info-dir".into(),
        path(dir.join("devinfo-dra")),
        "--cdi-dir".into(),
        path(dir.join("cdi")),
    ]
}
