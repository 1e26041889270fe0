//! `kubelet-sim`: the fake kubelet on its own, for the demo and for poking at a device
//! plugin by hand. Starts the simulator in a directory, waits for the expected resources
//! to register, prints registrations and device lists, optionally runs one `Allocate` per
//! `--allocate` and prints the answers, and optionally stays up (`--hold`) serving
//! registrations and pod-resources until Ctrl-C.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use node_tests::report::{print_devices, print_registration, print_response, resource_count};
use node_tests::{KubeletSim, PodSpec};

#[derive(Parser, Debug)]
#[command(about = "In-process fake kubelet for device plugins")]
struct Args {
    /// Device-plugin directory to serve kubelet.sock in (its files are wiped, as kubelet does).
    #[arg(long)]
    dir: PathBuf,
    /// Resource names to wait for (repeat or comma-separate).
    #[arg(long, value_delimiter = ',')]
    expect: Vec<String>,
    /// Admit a pod asking for N (default 1) devices of RESOURCE and print the Allocate answer.
    #[arg(long, value_name = "RESOURCE[:N]")]
    allocate: Vec<String>,
    /// Seconds to wait for each step.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Also watch this plugins_registry directory, as kubelet's plugin watcher does.
    #[arg(long)]
    plugins_registry: Option<PathBuf>,
    /// Serve podresources.v1 on this socket.
    #[arg(long)]
    pod_resources: Option<PathBuf>,
    /// Keep running after the steps above until Ctrl-C.
    #[arg(long)]
    hold: bool,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    run(Args::parse()).await
}

async fn run(args: Args) -> Result<()> {
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        bail!("--timeout must be a positive number of seconds");
    }
    let timeout = Duration::from_secs_f64(args.timeout);
    let sim = KubeletSim::start(&args.dir)
        .await
        .with_context(|| format!("start kubelet simulator in {}", args.dir.display()))?;
    println!("kubelet-sim: listening on {}", sim.socket_path().display());
    if let Some(reg) = &args.plugins_registry {
        sim.watch_plugins_registry(reg)?;
        println!("kubelet-sim: watching plugins registry {}", reg.display());
    }
    let _pod_resources = match &args.pod_resources {
        Some(p) => {
            let server = sim.serve_pod_resources(p)?;
            println!("kubelet-sim: pod-resources on {}", p.display());
            Some(server)
        }
        None => None,
    };

    for resource in &args.expect {
        let reg = sim
            .wait_registered(resource, timeout)
            .await
            .with_context(|| format!("waiting for {resource} to register"))?;
        print_registration(&reg);
        let list = sim
            .wait_devices(resource, timeout, |_| true)
            .await
            .with_context(|| format!("waiting for the device list of {resource}"))?;
        print_devices(resource, &list);
    }

    for (i, spec) in args.allocate.iter().enumerate() {
        let (resource, count) =
            resource_count(spec).map_err(|e| anyhow::anyhow!("--allocate {e}"))?;
        if !args.expect.contains(&resource) {
            sim.wait_registered(&resource, timeout).await?;
            sim.wait_devices(&resource, timeout, |_| true).await?;
        }
        let pod = PodSpec::new("default", format!("demo-{}", i + 1))
            .container("main", &[(resource.as_str(), count)]);
        let got = sim
            .admit_pod(&pod)
            .await
            .with_context(|| format!("allocating {count} x {resource}"))?;
        let Some(a) = got.get("main", &resource) else {
            bail!("pod {} got no {resource}", pod.key());
        };
        println!();
        println!(
            "allocate {count} x {resource} for pod {} container main",
            pod.key()
        );
        if let Some(p) = &a.preferred {
            println!("  preferred (GetPreferredAllocation): {}", p.join(", "));
        }
        println!("  devices: {}", a.device_ids.join(", "));
        print_response(&a.response);
    }

    if args.hold {
        println!();
        println!("kubelet-sim: holding; Ctrl-C to stop");
        tokio::signal::ctrl_c().await.context("wait for Ctrl-C")?;
    }
    sim.shutdown().await?;
    Ok(())
}
