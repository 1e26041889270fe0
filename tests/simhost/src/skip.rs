//! What a test does when this machine cannot run it (not root, a tool missing): the one
//! policy for every test crate of the workspace.
//!
//! A test that returns early passes, so a broken setup would look green. Hence:
//!
//! - under `CI=true`, or when the test runs as root (as `./scripts/test.sh` does, where
//!   everything a test needs is installed by `scripts/deps.sh test`), a skip is a
//!   failure: [`skip`] panics with the test's name and the reason;
//! - in a non-root developer run the test passes and the skip is reported: a line on the
//!   terminal (written past the test harness's output capture, so `cargo test` shows it
//!   for a passing test) and the same line appended to `<target>/skipped-tests.txt`, the
//!   summary of every skip across test processes (nextest runs each test in its own).
//!
//! ```no_run
//! fn needs_root() -> Result<(), String> { Err("needs root".into()) }
//! # fn a_test() {
//! if let Err(why) = needs_root() {
//!     simhost::skip::skip("a_test", &why);
//!     return;
//! }
//! # }
//! ```

use std::io::Write;
use std::path::PathBuf;

/// Whether a skip must fail the test: `CI=true`, or running as root.
pub fn strict() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true") || is_root()
}

/// Whether the effective user is root (the `Uid:` line of `/proc/self/status`; an
/// unreadable one counts as not root).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Records that `test` cannot run here because of `reason`: panics (a failure) when
/// [`strict`], otherwise reports the skip and returns, and the caller returns too.
pub fn skip(test: &str, reason: &str) {
    if strict() {
        let why = if is_root() {
            "running as root"
        } else {
            "CI=true"
        };
        panic!("{test} cannot run: {reason} (a skip is a failure when {why})");
    }
    let line = format!("SKIPPED {test}: {reason} (as root or with CI=true this fails)\n");
    // io::stderr() directly: libtest captures only the print macros
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Some(file) = summary_file() {
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
            .and_then(|mut f| f.write_all(line.as_bytes()));
    }
}

/// `<target>/skipped-tests.txt`: test binaries run from `<target>/<profile>/deps/`.
fn summary_file() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let deps = exe.parent()?;
    (deps.file_name()? == "deps").then_some(())?;
    Some(deps.parent()?.parent()?.join("skipped-tests.txt"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_read_from_proc() {
        // the test runner's own uid, read independently through the owner of /proc/self
        use std::os::unix::fs::MetadataExt;
        let owner = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
        assert_eq!(is_root(), owner == Some(0));
    }
}
