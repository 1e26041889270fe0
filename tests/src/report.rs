//! What the simulator's command-line front ends print, and how they read resource counts.

use crate::{DeviceList, Registration};
use proto::deviceplugin::v1beta1::ContainerAllocateResponse;

/// NUMA node ids as printed: comma-separated, `-` when there are none.
pub fn numa_nodes(ids: impl IntoIterator<Item = i64>) -> String {
    let ids: Vec<String> = ids.into_iter().map(|i| i.to_string()).collect();
    if ids.is_empty() {
        "-".into()
    } else {
        ids.join(",")
    }
}

/// `RESOURCE[:COUNT]` (count 1 when absent, at least 1). Resource names contain `/`,
/// never `:`, so the last `:` splits off the count.
pub fn resource_count(spec: &str) -> Result<(String, usize), String> {
    match spec.rsplit_once(':') {
        Some((r, n)) => {
            let n: usize = n
                .parse()
                .map_err(|_| format!("{spec}: count {n:?} is not a number"))?;
            if n == 0 {
                return Err(format!("{spec}: count must be at least 1"));
            }
            Ok((r.to_string(), n))
        }
        None => Ok((spec.to_string(), 1)),
    }
}

/// Prints one registration: resource, version, endpoint, path, time after `kubelet.sock`.
pub fn print_registration(r: &Registration) {
    let opts = &r.options;
    println!();
    println!(
        "registered {} (version {}, endpoint {}, via {:?}) {:.1} ms after kubelet.sock appeared",
        r.resource,
        r.request.version,
        r.endpoint.display(),
        r.via,
        r.since_socket.as_secs_f64() * 1e3
    );
    println!(
        "  options: preStartRequired={} getPreferredAllocationAvailable={}",
        opts.pre_start_required, opts.get_preferred_allocation_available
    );
}

/// Prints a device list, eliding the middle of long ones (a shared HCA lists 1000 IDs).
pub fn print_devices(resource: &str, list: &DeviceList) {
    println!(
        "  devices of {resource}: {} listed, {} healthy",
        list.devices.len(),
        list.healthy_count()
    );
    const SHOW: usize = 6;
    let n = list.devices.len();
    for (i, d) in list.devices.iter().enumerate() {
        if n > SHOW + 2 && i == SHOW / 2 {
            println!("    ... {} more ...", n - SHOW);
        }
        if n > SHOW + 2 && i >= SHOW / 2 && i < n - SHOW / 2 {
            continue;
        }
        let numa = numa_nodes(d.topology.iter().flat_map(|t| &t.nodes).map(|n| n.id));
        println!("    {:<24} {:<9} numa {numa}", d.id, d.health);
    }
}

/// Prints one container's Allocate response: envs, device specs, mounts, annotations, CDI.
pub fn print_response(r: &ContainerAllocateResponse) {
    let mut envs: Vec<_> = r.envs.iter().collect();
    envs.sort();
    println!("  envs:{}", if envs.is_empty() { " none" } else { "" });
    for (k, v) in envs {
        println!("    {k}={v}");
    }
    println!(
        "  device specs:{}",
        if r.devices.is_empty() { " none" } else { "" }
    );
    for d in &r.devices {
        println!(
            "    {} -> {} ({})",
            d.host_path, d.container_path, d.permissions
        );
    }
    if !r.mounts.is_empty() {
        println!("  mounts:");
        for m in &r.mounts {
            println!(
                "    {} -> {}{}",
                m.host_path,
                m.container_path,
                if m.read_only { " (ro)" } else { "" }
            );
        }
    }
    if !r.annotations.is_empty() {
        println!("  annotations:");
        let mut a: Vec<_> = r.annotations.iter().collect();
        a.sort();
        for (k, v) in a {
            println!("    {k}={v}");
        }
    }
    if !r.cdi_devices.is_empty() {
        println!("  CDI devices:");
        for c in &r.cdi_devices {
            println!("    {}", c.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::resource_count;

    #[test]
    fn resource_counts_parse() {
        assert_eq!(resource_count("rdma/hca").unwrap(), ("rdma/hca".into(), 1));
        assert_eq!(
            resource_count("intel.com/cx_vf:2").unwrap(),
            ("intel.com/cx_vf".into(), 2)
        );
        assert!(resource_count("rdma/hca:x").is_err());
        assert!(resource_count("rdma/hca:0").is_err());
    }
}
