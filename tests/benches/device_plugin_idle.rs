//! Idle cost of the real `device-plugin` daemon on the 1024-VF host (simhost `Large`),
//! registered with the kubelet simulator, `ListAndWatch` streams open, default settings
//! (60 s periodic rescan, 15 s safety poll): CPU time (utime + stime from
//! `/proc/<pid>/stat`) over a window (default 60 s, `--seconds N`), and RSS. Also times
//! kubelet restarts on this host (re-registration of both resources).
//!
//! `cargo bench -p node-tests --bench device_plugin_idle [-- --seconds N]`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use node_tests::{DEFAULT_TIMEOUT, KubeletSim};
use simhost::{Profile, SimHost};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // fields after the ")" of the command name: state is field 3, utime 14, stime 15
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn clk_tck() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(100.0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seconds: u64 = args
        .iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let bin = node_tests::project_bin("device-plugin", "device-plugin");
    let dir = node_tests::scratch();
    let host = SimHost::create(dir.path().join("host"), Profile::Large).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let kubelet = KubeletSim::start(dir.path().join("dp")).await.unwrap();
        let mut child = Command::new(&bin)
            .arg("--root")
            .arg(host.root())
            .arg("--device-plugin-path")
            .arg(kubelet.dir())
            .arg("--device-info-dir")
            .arg(dir.path().join("devinfo"))
            .arg("--pod-resources-socket")
            .arg(dir.path().join("absent.sock"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("daemon.log")).unwrap())
            .spawn()
            .unwrap();
        let pid = child.id();
        let resources = ["rdma/hca", "rdma/vhca"];
        kubelet
            .wait_all_registered(&resources, DEFAULT_TIMEOUT)
            .await
            .unwrap();
        kubelet
            .wait_devices("rdma/vhca", DEFAULT_TIMEOUT, |d| d.len() == 1024)
            .await
            .unwrap();

        // kubelet restarts on the 1024-VF host
        let mut worst = Vec::new();
        for _ in 0..20 {
            kubelet.restart().await.unwrap();
            let t = kubelet
                .reregistration_times(&resources, DEFAULT_TIMEOUT)
                .await
                .unwrap();
            worst.push(t.values().copied().max().unwrap());
        }
        worst.sort();
        println!(
            "kubelet restarts (Large host, 20x): re-registration median {:.1} ms, worst {:.1} ms",
            worst[worst.len() / 2].as_secs_f64() * 1e3,
            worst[worst.len() - 1].as_secs_f64() * 1e3
        );
        kubelet
            .wait_devices("rdma/vhca", DEFAULT_TIMEOUT, |d| d.len() == 1024)
            .await
            .unwrap();

        // idle
        let tck = clk_tck();
        let c0 = cpu_ticks(pid);
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let cpu = (cpu_ticks(pid) - c0) as f64 / tck;
        let wall = t0.elapsed().as_secs_f64();
        println!(
            "idle CPU over {wall:.0} s (1024 VFs, registered, streams open, default 60 s rescan + 15 s safety poll): {:.3} s CPU = {:.3} % of one core; RSS {} KiB",
            cpu,
            100.0 * cpu / wall,
            rss_kib(pid)
        );
        let _ = child.kill();
        let _ = child.wait();
    });
}
