//! `demo-kubelet`: the kubelet side of `scripts/demo.sh`, for a pod's whole life.
//!
//! `serve` runs the kubelet simulator (and its pod-resources socket) and takes one
//! command per line on stdin, so the script can admit a pod, later delete it and look at
//! the books in between (`kubelet-sim` runs a fixed sequence instead). Each answer ends
//! with a line `==ok` or `==error <why>`:
//!
//! ```text
//! register RES[,RES...]                  wait for each to register; print it and its devices
//! admit NS/NAME CONTAINER RES[:N]...     GetPreferredAllocation + Allocate; print the answers
//! delete NS/NAME                         forget the pod (its devices are free again)
//! free RES                               listed / healthy / allocated / free devices of RES
//! ```
//!
//! `pod-resources` is a client of a pod-resources socket, as multus is (`List`),
//! `wait-removed` waits (inotify, bounded) for a file to go, e.g. a device-info file the
//! device plugin sweeps, and `wait-for` for one to appear.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use node_tests::report::{
    numa_nodes, print_devices, print_registration, print_response, resource_count,
};
use node_tests::{KubeletSim, PodSpec, podresources};
use tokio::sync::mpsc;

#[derive(Parser, Debug)]
#[command(about = "The kubelet side of scripts/demo.sh")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the kubelet simulator; commands on stdin (see the source's header).
    Serve {
        /// Device-plugin directory to serve kubelet.sock in.
        #[arg(long)]
        dir: PathBuf,
        /// Serve podresources.v1 on this socket.
        #[arg(long)]
        pod_resources: PathBuf,
        /// Seconds to wait for each registration or device list.
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
    },
    /// `List` on a pod-resources socket: one line per device entry of each pod.
    PodResources {
        /// The socket.
        #[arg(long)]
        socket: PathBuf,
        /// Only this pod (NS/NAME).
        #[arg(long)]
        pod: Option<String>,
    },
    /// Wait until PATH exists.
    WaitFor {
        /// The file.
        path: PathBuf,
        /// Seconds to wait at most.
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
    },
    /// Wait until PATH no longer exists.
    WaitRemoved {
        /// The file.
        path: PathBuf,
        /// Seconds to wait at most.
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    match Args::parse().cmd {
        Cmd::Serve {
            dir,
            pod_resources,
            timeout,
        } => serve(&dir, &pod_resources, seconds(timeout)?).await,
        Cmd::PodResources { socket, pod } => list_pod_resources(&socket, pod.as_deref()).await,
        Cmd::WaitFor { path, timeout } => {
            node_tests::fswait::wait_for_path(&path, seconds(timeout)?).await?;
            println!("{} is there", path.display());
            Ok(())
        }
        Cmd::WaitRemoved { path, timeout } => {
            let start = Instant::now();
            node_tests::fswait::wait_for_removal(&path, seconds(timeout)?).await?;
            println!(
                "{} removed after {} ms",
                path.display(),
                start.elapsed().as_millis()
            );
            Ok(())
        }
    }
}

fn seconds(s: f64) -> Result<Duration> {
    if !(s.is_finite() && s > 0.0) {
        bail!("timeout must be a positive number of seconds, not {s}");
    }
    Ok(Duration::from_secs_f64(s))
}

async fn serve(dir: &Path, pod_resources: &Path, timeout: Duration) -> Result<()> {
    let sim = KubeletSim::start(dir)
        .await
        .with_context(|| format!("start kubelet simulator in {}", dir.display()))?;
    let _server = sim
        .serve_pod_resources(pod_resources)
        .with_context(|| format!("serve pod-resources on {}", pod_resources.display()))?;
    println!("kubelet-sim: listening on {}", sim.socket_path().display());
    println!("kubelet-sim: pod-resources on {}", pod_resources.display());
    println!("==ok");

    // tokio has no stdin here (no io-std): a thread reads the lines.
    let (tx, mut rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = rx.recv().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.is_empty() {
            continue;
        }
        match command(&sim, &words, timeout).await {
            Ok(()) => println!("==ok"),
            // One line: the script reads answers line by line.
            Err(e) => println!("==error {}", format!("{e:#}").replace('\n', " ")),
        }
    }
    sim.shutdown().await?;
    Ok(())
}

async fn command(sim: &KubeletSim, words: &[&str], timeout: Duration) -> Result<()> {
    match words {
        ["register", list] => {
            for resource in list.split(',') {
                let reg = sim
                    .wait_registered(resource, timeout)
                    .await
                    .with_context(|| format!("waiting for {resource} to register"))?;
                print_registration(&reg);
                let devices = sim
                    .wait_devices(resource, timeout, |_| true)
                    .await
                    .with_context(|| format!("waiting for the device list of {resource}"))?;
                print_devices(resource, &devices);
            }
            Ok(())
        }
        ["admit", pod, container, limits @ ..] if !limits.is_empty() => {
            let (ns, name) = pod_key(pod)?;
            let limits = limits
                .iter()
                .map(|l| resource_count(l).map_err(anyhow::Error::msg))
                .collect::<Result<Vec<_>>>()?;
            let refs: Vec<(&str, usize)> = limits.iter().map(|(r, n)| (r.as_str(), *n)).collect();
            let spec = PodSpec::new(ns, name).container(*container, &refs);
            let got = sim
                .admit_pod(&spec)
                .await
                .with_context(|| format!("admitting pod {pod}"))?;
            for c in &got.containers {
                for (resource, a) in &c.resources {
                    println!();
                    println!(
                        "{} x {resource} for pod {} container {}",
                        a.device_ids.len(),
                        got.key(),
                        c.name
                    );
                    if let Some(p) = &a.preferred {
                        println!("  GetPreferredAllocation -> {}", p.join(", "));
                    }
                    println!("  Allocate {}", a.device_ids.join(", "));
                    print_response(&a.response);
                }
            }
            Ok(())
        }
        ["delete", pod] => {
            let (ns, name) = pod_key(pod)?;
            let Some(gone) = sim.delete_pod(ns, name) else {
                bail!("no pod {pod}");
            };
            println!(
                "kubelet: pod {} deleted; its devices are free again:",
                gone.key()
            );
            for c in &gone.containers {
                for (resource, a) in &c.resources {
                    println!("  {resource}: {}", a.device_ids.join(", "));
                }
            }
            Ok(())
        }
        ["free", resource] => {
            let state = sim.state();
            let Some(list) = state.devices.get(*resource) else {
                bail!("{resource} is not registered");
            };
            let held = state.allocated(resource);
            let free = list.healthy().filter(|d| !held.contains(&d.id)).count();
            println!(
                "{resource}: {} listed, {} healthy, {} held by pods, {free} free",
                list.devices.len(),
                list.healthy_count(),
                held.len()
            );
            Ok(())
        }
        _ => bail!("unknown command {:?}", words.join(" ")),
    }
}

fn pod_key(key: &str) -> Result<(&str, &str)> {
    match key.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() => Ok((ns, name)),
        _ => bail!("pod {key:?}: expected NAMESPACE/NAME"),
    }
}

async fn list_pod_resources(socket: &Path, pod: Option<&str>) -> Result<()> {
    let want = pod.map(pod_key).transpose()?;
    let list = podresources::list(socket)
        .await
        .with_context(|| format!("List on {}", socket.display()))?;
    let mut n = 0;
    for p in &list.pod_resources {
        if want.is_some_and(|(ns, name)| (p.namespace.as_str(), p.name.as_str()) != (ns, name)) {
            continue;
        }
        for c in &p.containers {
            for d in &c.devices {
                let numa = numa_nodes(d.topology.iter().flat_map(|t| &t.nodes).map(|n| n.id));
                for id in &d.device_ids {
                    n += 1;
                    println!(
                        "{}/{}  {}  {}  {id}  numa {}",
                        p.namespace, p.name, c.name, d.resource_name, numa
                    );
                }
            }
        }
    }
    if n == 0 {
        println!("(no devices held by {})", pod.unwrap_or("any pod"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::pod_key;

    #[test]
    fn pod_keys_parse() {
        assert_eq!(pod_key("default/p").unwrap(), ("default", "p"));
        assert!(pod_key("p").is_err());
        assert!(pod_key("/p").is_err());
    }
}
