//! `device-plugin`: parse the command line, set up logging, run the daemon or `discover`.

use anyhow::Context;
use clap::{Parser, Subcommand};
use device_plugin::config::{Config, DEFAULT_CONFIG_FILE};
use device_plugin::daemon::{DaemonOptions, Lifecycle, run_with};
use device_plugin::{allocate, cdi, device_info_gc, discover, dra};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "device-plugin",
    version,
    about = "Kubelet device plugin for RDMA HCAs and SR-IOV VFs"
)]
struct Cli {
    /// Root of the host tree (/sys, /dev, /proc are read under it).
    #[arg(long, default_value = "/", global = true)]
    root: PathBuf,
    /// Config file (sriov-network-device-plugin, k8s-rdma-shared-dev-plugin or
    /// k8s-rdma-sriov-dev-plugin format). Without it, /etc/pcidp/config.json if present,
    /// else the embedded default.
    #[arg(long, global = true)]
    config_file: Option<PathBuf>,
    /// Kubelet's device-plugin directory.
    #[arg(long, default_value = proto::DEVICE_PLUGIN_PATH)]
    device_plugin_path: PathBuf,
    /// Log level (error, warn, info, debug, trace) or a tracing filter.
    #[arg(long, default_value = "info", global = true)]
    log_level: String,
    /// Write CDI specs and answer Allocate with CDI device names.
    #[arg(long)]
    cdi: bool,
    /// Where CDI specs go with --cdi.
    #[arg(long, default_value = cdi::DEFAULT_CDI_DIR)]
    cdi_dir: PathBuf,
    /// Where device-info files go.
    #[arg(long, default_value = allocate::DEFAULT_DEVICE_INFO_DIR)]
    device_info_dir: PathBuf,
    /// Kubelet's pod-resources socket (which devices are still allocated).
    #[arg(long, default_value = device_info_gc::DEFAULT_POD_RESOURCES_SOCKET)]
    pod_resources_socket: PathBuf,
    /// Seconds between sweeps of device-info files of unallocated devices (0 = never).
    #[arg(long, default_value_t = 60)]
    device_info_gc_interval: u64,
    /// Seconds a new device-info file is kept even when no pod lists its device.
    #[arg(long, default_value_t = device_info_gc::DEFAULT_GRACE.as_secs())]
    device_info_gc_grace: u64,
    /// Register through kubelet's plugin watcher: serve `pluginregistration` sockets in
    /// this directory (e.g. /var/lib/kubelet/plugins_registry) instead of calling Register.
    #[arg(long)]
    plugins_registry: Option<PathBuf>,
    /// Seconds between periodic rescans of the host (0 = off). Default: the config's
    /// `periodicUpdateInterval`, else 60.
    #[arg(long)]
    periodic_update_interval: Option<u64>,
    /// Seconds between safety checks of our sockets and kubelet.sock (0 = off); kubelet
    /// restarts are normally seen at once through inotify.
    #[arg(long, default_value_t = 15)]
    safety_poll_interval: u64,
    /// Also be a DRA driver: publish the VF pools' devices and serve the DRA kubelet
    /// plugin (needs API server access: kubeconfig or in-cluster).
    #[arg(long)]
    dra: bool,
    /// DRA driver name (a DNS subdomain); also the CDI vendor of its devices.
    #[arg(long, default_value = dra::DEFAULT_DRIVER_NAME)]
    dra_driver_name: String,
    /// DRA plugin dir (dra.sock, checkpoint). Default: /var/lib/kubelet/plugins/<driver>.
    #[arg(long)]
    dra_plugin_dir: Option<PathBuf>,
    /// Where the DRA registration socket `<driver>-reg.sock` goes (kubelet's plugin watcher).
    #[arg(long, default_value = proto::PLUGINS_REGISTRY_PATH)]
    dra_registry_dir: PathBuf,
    /// Where DRA claims' device-info files go.
    #[arg(long, default_value = dra::prepare::DEFAULT_DEVICE_INFO_DIR)]
    dra_device_info_dir: PathBuf,
    /// This node's name, for the DRA ResourceSlices (`nodeName` and pool). Default:
    /// $NODE_NAME (set it from the downward API's spec.nodeName). Required with --dra.
    #[arg(long)]
    node_name: Option<String>,
    /// Kubeconfig for the API server (DRA). Default: $KUBECONFIG, ~/.kube/config, else
    /// the in-cluster service account.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print the host's PFs and VFs with their pools or why they are excluded.
    Discover {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match real_main(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("device-plugin: {}", error_chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each cause only when the message so far does not already
/// quote it (the library errors put their source in their own message).
fn error_chain(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    let config_file = cli.config_file.clone();
    match cli.command {
        Some(Command::Discover { json }) => {
            let config = match &config_file {
                Some(f) => Config::load(f)?,
                None => Config::load_or_default(std::path::Path::new(DEFAULT_CONFIG_FILE))?,
            };
            for w in &config.warnings {
                tracing::warn!(file = ?config.source, key = %w.path, "config: {}", w.message);
            }
            let report = discover::report(&rdma_hca::Host::new(&cli.root), &config)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", discover::table(&report));
            }
            Ok(())
        }
        None => {
            let dra = cli.dra.then(|| dra_options(&cli));
            let opts = DaemonOptions {
                root: cli.root,
                config_file,
                device_plugin_path: cli.device_plugin_path,
                device_info_dir: Some(cli.device_info_dir),
                cdi_dir: cli.cdi.then_some(cli.cdi_dir),
                register_backoff: Duration::from_millis(100),
                register_backoff_max: Duration::from_secs(5),
                pod_resources_socket: cli.pod_resources_socket,
                device_info_gc_interval: Duration::from_secs(cli.device_info_gc_interval),
                device_info_gc_grace: Duration::from_secs(cli.device_info_gc_grace),
                dra,
            };
            let lifecycle = Lifecycle {
                plugins_registry: cli.plugins_registry,
                rescan_interval: cli.periodic_update_interval.map(Duration::from_secs),
                safety_poll: Duration::from_secs(cli.safety_poll_interval),
                ..Lifecycle::default()
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("start tokio runtime")?;
            rt.block_on(async { run_with(opts, lifecycle, shutdown_signal()).await })?;
            Ok(())
        }
    }
}

/// The DRA plugin's settings from the flags (CDI specs go to `--cdi-dir`).
fn dra_options(cli: &Cli) -> dra::plugin::DraOptions {
    let mut d = dra::plugin::DraOptions::new(&cli.dra_driver_name);
    if let Some(p) = &cli.dra_plugin_dir {
        d.plugin_dir = p.clone();
    }
    d.registry_dir = cli.dra_registry_dir.clone();
    d.cdi_dir = cli.cdi_dir.clone();
    d.device_info_dir = Some(cli.dra_device_info_dir.clone());
    d.node_name = cli
        .node_name
        .clone()
        .or_else(|| std::env::var("NODE_NAME").ok())
        .filter(|n| !n.is_empty());
    d.kubeconfig = cli.kubeconfig.clone();
    d
}

/// SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
