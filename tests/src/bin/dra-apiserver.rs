//! `dra-apiserver`: the `resource.k8s.io/v1` API server stand-in on its own, for the demo
//! and for trying the DRA driver by hand. Listens on `127.0.0.1:<ephemeral>`, writes a
//! kubeconfig pointing at it, seeds ResourceClaims from JSON files, and serves until
//! Ctrl-C / SIGTERM; then prints the ResourceSlices it holds and every request it saw.
//! While it runs, `curl <url>/apis/resource.k8s.io/v1/resourceslices` shows the slices.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use node_tests::apiserver::ApiServer;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser, Debug)]
#[command(about = "resource.k8s.io/v1 API server stand-in (ResourceSlices, ResourceClaims)")]
struct Args {
    /// Write a kubeconfig for the stand-in here.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Seed a ResourceClaim: `NAMESPACE/NAME=FILE.json` (repeatable).
    #[arg(long, value_name = "NS/NAME=FILE")]
    claim: Vec<String>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let server = ApiServer::start().await.context("listening on 127.0.0.1")?;
    for c in &args.claim {
        let (id, file) = c
            .split_once('=')
            .with_context(|| format!("--claim {c}: expected NS/NAME=FILE"))?;
        let (ns, name) = id
            .split_once('/')
            .with_context(|| format!("--claim {c}: expected NS/NAME=FILE"))?;
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
        let v = serde_json::from_str(&text).with_context(|| format!("parsing {file}"))?;
        server.seed_claim(ns, name, v);
    }
    server
        .write_kubeconfig(&args.kubeconfig)
        .with_context(|| format!("writing {}", args.kubeconfig.display()))?;
    println!("listening on {}", server.url());
    println!("kubeconfig {}", args.kubeconfig.display());
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    for (name, s) in server.slices() {
        let spec = &s["spec"];
        let n = spec["devices"].as_array().map_or(0, Vec::len);
        println!(
            "slice {name}: driver {} node {} pool {} generation {} of {} slices, {n} devices",
            spec["driver"],
            spec["nodeName"],
            spec["pool"]["name"],
            spec["pool"]["generation"],
            spec["pool"]["resourceSliceCount"]
        );
    }
    for r in server.requests() {
        println!(
            "{} {}{} -> {} ({} B in, {} B out)",
            r.method,
            r.path,
            r.query.map(|q| format!("?{q}")).unwrap_or_default(),
            r.status,
            r.request_bytes,
            r.response_bytes
        );
    }
    Ok(())
}
