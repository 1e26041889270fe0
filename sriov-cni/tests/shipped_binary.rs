//! The shipped `sriov` binary never fakes VFs: with `SRIOV_CNI_FAKE_VF_STATE` set (a
//! leftover in a runtime's environment) it refuses ADD with a CNI error naming the
//! variable, and leaves the fake's file alone. Runs unprivileged: the refusal comes
//! before any netlink socket is opened.
//!
//! `CARGO_BIN_EXE_sriov` is built from the same `src/main.rs` as the release binary. In a
//! test build the library has the `test-fake` feature on (this crate's dev-dependency on
//! itself), but `sriov`'s `main` never selects the fake backend: only `sriov-test`'s does.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use serde_json::{Value, json};
use std::io::Write;
use std::process::{Command, Stdio};

fn run(bin: &str, cmd: &str, fake: &std::path::Path, data: &std::path::Path) -> (i32, Value) {
    let conf = json!({
        "cniVersion": "1.0.0",
        "name": "net",
        "type": "sriov",
        "deviceID": "0000:3b:00.2",
    });
    let mut child = Command::new(bin)
        .env_clear()
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", "c1")
        .env("CNI_IFNAME", "net1")
        .env("CNI_NETNS", "/proc/self/ns/net")
        .env("CNI_PATH", "/nonexistent")
        .env("SRIOV_CNI_DATA_DIR", data)
        .env("SRIOV_CNI_SYSFS_ROOT", data)
        .env("SRIOV_CNI_FAKE_VF_STATE", fake)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    (
        o.status.code().unwrap_or(-1),
        serde_json::from_str(out.trim()).unwrap_or(Value::Null),
    )
}

#[test]
fn shipped_binary_refuses_add_with_the_fake_variable_set() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("fake-vf.json");
    let (code, out) = run(common::SHIPPED_BIN, "ADD", &fake, dir.path());
    assert_eq!(code, 1, "{out}");
    // CNI error code 4: invalid environment variables.
    assert_eq!(out["code"], 4, "{out}");
    let msg = out["msg"].as_str().unwrap();
    assert!(
        msg.contains("SRIOV_CNI_FAKE_VF_STATE") && msg.contains(&fake.display().to_string()),
        "{msg}"
    );
    assert!(!fake.exists(), "the shipped binary wrote the fake's file");
    assert!(
        !fake.with_extension("lock").exists(),
        "the shipped binary took the fake's lock"
    );
}

#[test]
fn the_test_binary_takes_the_fake_where_the_shipped_one_refuses() {
    // The same invocation on `sriov-test` gets past the variable (and fails later, on
    // the fixture-less sysfs root, naming deviceID): the refusal is the shipped binary's.
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("fake-vf.json");
    let (code, out) = run(common::BIN, "ADD", &fake, dir.path());
    assert_eq!(code, 1, "{out}");
    assert_eq!(out["code"], 7, "{out}");
    assert!(out["msg"].as_str().unwrap().contains("deviceID"), "{out}");
}
