//! The node image and the DaemonSet's init container, run for real.
//!
//! The runtime stage of `deploy/Containerfile` is built with podman from this
//! workspace's `sriov` (linked statically, as the image needs: it is `FROM scratch`) and
//! Debian's static busybox (what its busybox stage installs). Its build stages need
//! base images and the network, which this machine does not have; the test takes the
//! runtime stage from the file itself and only points its `COPY --from` lines at local
//! directories.
//!
//! Then the init container of `deploy/daemonset.yaml` runs in that image as the
//! DaemonSet runs it: its command, read-only root, no capabilities, no privilege
//! escalation, root, the host's `/opt/cni/bin` (a temp dir) mounted where the manifest
//! says. It must replace an existing `sriov` atomically (a new file renamed over the old
//! one: whoever has the old one open keeps reading it) and leave nothing else behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod e2e_common;

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use deploy_manifests::Deployment;
use deploy_manifests::k8s_openapi::api::core::v1::{Container, PodSpec};
use e2e_common::podman::{Podman, RUN_OPTS, podman_unavailable};
use e2e_common::*;

/// Whether the ELF file at `path` is statically linked (no PT_INTERP program header).
fn is_static(path: &Path) -> bool {
    let mut b = Vec::new();
    std::fs::File::open(path)
        .unwrap()
        .read_to_end(&mut b)
        .unwrap();
    assert_eq!(&b[..4], b"\x7fELF", "{} is not ELF", path.display());
    assert_eq!(b[4], 2, "64-bit ELF");
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(b[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).all(|i| {
        let p_type = u32::from_le_bytes(b[phoff + i * phentsize..][..4].try_into().unwrap());
        p_type != 3 // PT_INTERP
    })
}

/// `sriov` linked statically (glibc, `crt-static`), in a target dir of its own so its
/// flags do not invalidate the workspace's build.
fn static_sriov() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .unwrap()
        .join("static-image");
    let triple = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run_ok(
        Command::new(cargo)
            .args([
                "build",
                "-q",
                "-p",
                "sriov-cni",
                "--bin",
                deploy_manifests::CNI_BINARY,
                "--target",
                &triple,
            ])
            .arg("--target-dir")
            .arg(&target)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .current_dir(env!("CARGO_MANIFEST_DIR")),
    );
    let bin = target
        .join(&triple)
        .join("debug")
        .join(deploy_manifests::CNI_BINARY);
    assert!(is_static(&bin), "{} is not static", bin.display());
    bin
}

fn daemonset_pod() -> PodSpec {
    let d = Deployment::load(&deploy_manifests::deploy_dir()).unwrap();
    d.pod_spec().unwrap().clone()
}

/// The `podman run` options that give a container the manifest's security context and
/// host-path mounts (`host_dirs` maps hostPath to a local stand-in).
fn run_options(pod: &PodSpec, c: &Container, host_dirs: &[(&str, &Path)]) -> Vec<String> {
    let mut opts: Vec<String> = RUN_OPTS.iter().map(|s| s.to_string()).collect();
    opts.extend(["--network", "none"].map(String::from));
    let sc = c.security_context.as_ref().unwrap();
    assert_ne!(sc.privileged, Some(true));
    if sc.read_only_root_filesystem == Some(true) {
        opts.push("--read-only".into());
    }
    if sc.allow_privilege_escalation == Some(false) {
        opts.extend(["--security-opt", "no-new-privileges"].map(String::from));
    }
    let caps = sc.capabilities.as_ref().unwrap();
    for cap in caps.drop.iter().flatten() {
        opts.extend(["--cap-drop".into(), cap.to_lowercase()]);
    }
    for cap in caps.add.iter().flatten() {
        opts.extend(["--cap-add".into(), cap.to_lowercase()]);
    }
    opts.extend(["--user".into(), sc.run_as_user.unwrap().to_string()]);
    for m in c.volume_mounts.iter().flatten() {
        let v = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == m.name)
            .unwrap();
        let host = &v.host_path.as_ref().unwrap().path;
        let (_, local) = host_dirs
            .iter()
            .find(|(h, _)| h == host)
            .unwrap_or_else(|| panic!("no stand-in for {host}"));
        let ro = if m.read_only == Some(true) { ":ro" } else { "" };
        opts.extend([
            "-v".into(),
            format!("{}:{}{ro}", local.display(), m.mount_path),
        ]);
    }
    // The manifest's `command` replaces the image's entrypoint.
    opts.extend([
        "--entrypoint".into(),
        serde_json::to_string(c.command.as_ref().unwrap()).unwrap(),
    ]);
    opts
}

/// Builds the Containerfile's runtime stage with local stand-ins for its `COPY --from`
/// stages.
fn build_image(pm: &Podman, ctx: &Path, sriov: &Path) -> String {
    let text =
        std::fs::read_to_string(deploy_manifests::deploy_dir().join("Containerfile")).unwrap();
    let runtime = &text[text.rfind("\nFROM scratch").expect("a FROM scratch stage")..];
    let mut file = runtime.to_owned();
    for (stage, dir) in [("build", "stage-build"), ("busybox", "stage-busybox")] {
        let from = format!("COPY --from={stage} /out/ /");
        assert!(file.contains(&from), "runtime stage copies {stage}'s /out/");
        file = file.replace(&from, &format!("COPY {dir}/ /"));
    }
    assert!(
        !file.contains("--from="),
        "a stage the test does not stand in for: {file}"
    );
    let bin = ctx.join("stage-build/usr/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(sriov, bin.join(deploy_manifests::CNI_BINARY)).unwrap();
    let bb = ctx.join("stage-busybox/bin");
    std::fs::create_dir_all(&bb).unwrap();
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.exists() && is_static(busybox),
        "needs Debian's busybox-static"
    );
    std::fs::copy(busybox, bb.join("busybox")).unwrap();
    std::fs::write(ctx.join("Containerfile"), file).unwrap();
    let tag = "localhost/sriov-rdma-node:e2e";
    let ctx_s = ctx.display().to_string();
    pm.ok(&[
        "build",
        "--network",
        "none",
        "-f",
        &format!("{ctx_s}/Containerfile"),
        "-t",
        tag,
        &ctx_s,
    ]);
    tag.to_owned()
}

#[test]
fn init_container_installs_sriov_atomically_in_the_image() {
    if let Some(why) = podman_unavailable() {
        simhost::skip::skip(
            "init_container_installs_sriov_atomically_in_the_image",
            &why,
        );
        return;
    }
    let sriov = static_sriov();
    let tmp = tempfile::tempdir().unwrap();
    let pm = Podman::new(&tmp.path().join("podman"), None, None);
    let ctx = tmp.path().join("ctx");
    let image = build_image(&pm, &ctx, &sriov);

    let pod = daemonset_pod();
    let init = pod
        .init_containers
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.name == "install-cni")
        .unwrap();
    assert_eq!(init.image.as_deref(), pod.containers[0].image.as_deref());
    let host_bin = tmp.path().join("host-opt-cni-bin");
    std::fs::create_dir_all(&host_bin).unwrap();
    // The node already has an older plugin, and a runtime has it open.
    let installed = host_bin.join(deploy_manifests::CNI_BINARY);
    std::fs::write(&installed, "old plugin").unwrap();
    let old_inode = std::fs::metadata(&installed).unwrap().ino();
    let mut old = std::fs::File::open(&installed).unwrap();

    let opts = run_options(&pod, init, &[(deploy_manifests::CNI_BIN_DIR, &host_bin)]);
    for round in 1..=2 {
        let mut args: Vec<&str> = vec!["run", "--rm"];
        args.extend(opts.iter().map(String::as_str));
        args.push(&image);
        pm.ok(&args);
        // Exactly the plugin and its ib-sriov link, the image's bytes, executable, and a
        // new inode.
        let mut files: Vec<String> = std::fs::read_dir(&host_bin)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(
            files,
            ["ib-sriov", deploy_manifests::CNI_BINARY],
            "round {round}"
        );
        assert_eq!(
            std::fs::read_link(host_bin.join("ib-sriov")).unwrap(),
            std::path::Path::new(deploy_manifests::CNI_BINARY),
            "round {round}"
        );
        assert!(
            std::fs::read(&installed).unwrap() == std::fs::read(&sriov).unwrap(),
            "round {round}"
        );
        let meta = std::fs::metadata(&installed).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o755);
        assert_ne!(
            meta.ino(),
            old_inode,
            "replaced by rename, not rewritten in place"
        );
    }
    let mut was = String::new();
    old.read_to_string(&mut was).unwrap();
    assert_eq!(was, "old plugin", "the open old binary was never touched");

    // The installed plugin runs on the host, and in the scratch image on its own.
    let version = run_ok(Command::new(&installed).env("CNI_COMMAND", "VERSION"));
    assert!(version.contains("supportedVersions"), "{version}");
    let mut args: Vec<&str> = vec!["run", "--rm"];
    args.extend(RUN_OPTS);
    args.extend([
        "--network",
        "none",
        "--env",
        "CNI_COMMAND=VERSION",
        "--entrypoint",
        "/usr/bin/sriov",
        &image,
    ]);
    let in_image = pm.ok(&args);
    assert!(in_image.contains("\"1.1.0\""), "{in_image}");
}
