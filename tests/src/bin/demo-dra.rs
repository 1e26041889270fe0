//! `demo-dra`: the cluster's side of the DRA act of `scripts/demo.sh`.
//!
//! - `slices`: what a scheduler sees: this node's ResourceSlices of a driver, listed from
//!   the API server (the stand-in, through a kubeconfig) with `kube`'s typed client, one
//!   line per slice and the attributes of one device; `--expect DEVICE` fails unless that
//!   device is offered.
//! - `prepare` / `unprepare`: the kubelet's DRA calls for one claim, as the kubelet makes
//!   them (the plugin watcher's `GetInfo` on the registration socket, then the endpoint
//!   it names over `v1.DRAPlugin`). Prints the CDI device IDs; a claim error fails.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use k8s_openapi::api::resource::v1::ResourceSlice;
use kube::api::{Api, ListParams};
use node_tests::dra_kubelet::{ClaimId, DraKubelet};

#[derive(Parser, Debug)]
#[command(about = "The cluster's side of the DRA act of scripts/demo.sh")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// List this node's ResourceSlices of a driver.
    Slices {
        /// Kubeconfig of the API server.
        #[arg(long)]
        kubeconfig: PathBuf,
        /// The node.
        #[arg(long)]
        node: String,
        /// The driver.
        #[arg(long)]
        driver: String,
        /// Fail unless this device is in one of the slices; print its attributes.
        #[arg(long)]
        expect: Option<String>,
    },
    /// NodePrepareResources for one claim.
    Prepare {
        /// The plugin's registration socket (`<plugins_registry>/<driver>-reg.sock`).
        #[arg(long)]
        registration: PathBuf,
        /// NAMESPACE/NAME/UID.
        #[arg(long)]
        claim: String,
    },
    /// NodeUnprepareResources for one claim.
    Unprepare {
        /// The plugin's registration socket.
        #[arg(long)]
        registration: PathBuf,
        /// NAMESPACE/NAME/UID.
        #[arg(long)]
        claim: String,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    match Args::parse().cmd {
        Cmd::Slices {
            kubeconfig,
            node,
            driver,
            expect,
        } => slices(kubeconfig, &node, &driver, expect.as_deref()).await,
        Cmd::Prepare {
            registration,
            claim,
        } => {
            let id = claim_id(&claim)?;
            let mut k = register(&registration).await?;
            let mut r = k.prepare(std::slice::from_ref(&id)).await?;
            match r.remove(&id.uid) {
                Some(Ok(devices)) if !devices.is_empty() => {
                    for d in devices {
                        println!(
                            "prepared: request {} pool {} device {} -> CDI {}",
                            d.requests.join(","),
                            d.pool,
                            d.device,
                            d.cdi_ids.join(" ")
                        );
                    }
                    Ok(())
                }
                Some(Ok(_)) => bail!("claim {claim}: prepared with no devices"),
                Some(Err(e)) => bail!("claim {claim}: {e}"),
                None => bail!("claim {claim}: no answer for uid {}", id.uid),
            }
        }
        Cmd::Unprepare {
            registration,
            claim,
        } => {
            let id = claim_id(&claim)?;
            let mut k = register(&registration).await?;
            match k
                .unprepare(std::slice::from_ref(&id))
                .await?
                .remove(&id.uid)
            {
                Some(Ok(())) => {
                    println!("unprepared: claim {claim}");
                    Ok(())
                }
                Some(Err(e)) => bail!("claim {claim}: {e}"),
                None => bail!("claim {claim}: no answer for uid {}", id.uid),
            }
        }
    }
}

fn claim_id(s: &str) -> Result<ClaimId> {
    let mut it = s.split('/');
    match (it.next(), it.next(), it.next(), it.next()) {
        (Some(ns), Some(name), Some(uid), None)
            if !ns.is_empty() && !name.is_empty() && !uid.is_empty() =>
        {
            Ok(ClaimId {
                namespace: ns.into(),
                name: name.into(),
                uid: uid.into(),
            })
        }
        _ => bail!("--claim {s}: expected NAMESPACE/NAME/UID"),
    }
}

async fn register(registration: &std::path::Path) -> Result<DraKubelet> {
    let k = DraKubelet::register(registration)
        .await
        .with_context(|| format!("registering {}", registration.display()))?;
    println!(
        "registered: {} {} endpoint {} versions {}",
        k.info.r#type,
        k.info.name,
        k.info.endpoint,
        k.info.supported_versions.join(",")
    );
    Ok(k)
}

async fn slices(kubeconfig: PathBuf, node: &str, driver: &str, expect: Option<&str>) -> Result<()> {
    let kc = kube::config::Kubeconfig::read_from(&kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .context("kubeconfig")?;
    let client = kube::Client::try_from(config).context("API client")?;
    let api: Api<ResourceSlice> = Api::all(client);
    let lp = ListParams::default().fields(&format!("spec.nodeName={node},spec.driver={driver}"));
    let list = api.list(&lp).await.context("listing ResourceSlices")?;
    let mut total = 0;
    let mut found = None;
    for s in &list.items {
        let devices = s.spec.devices.as_deref().unwrap_or_default();
        total += devices.len();
        println!(
            "slice {}: pool {} generation {} ({} of the pool's slices), {} devices",
            s.metadata.name.as_deref().unwrap_or_default(),
            s.spec.pool.name,
            s.spec.pool.generation,
            s.spec.pool.resource_slice_count,
            devices.len()
        );
        if let Some(e) = expect {
            found = found.or_else(|| devices.iter().find(|d| d.name == e).cloned());
        }
    }
    println!("{} slices, {total} devices", list.items.len());
    if let Some(e) = expect {
        let Some(d) = found else {
            bail!("device {e} is in none of node {node}'s slices of {driver}");
        };
        println!("device {e}:");
        for (k, v) in d.attributes.unwrap_or_default() {
            let v = v
                .string
                .or(v.int.map(|i| i.to_string()))
                .or(v.bool.map(|b| b.to_string()))
                .or(v.version)
                .unwrap_or_default();
            println!("    {k} = {v}");
        }
    }
    Ok(())
}
