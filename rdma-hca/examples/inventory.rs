//! `cargo run --example inventory -- ROOT`: read a host tree and print counts (for
//! profiling discovery with strace or callgrind).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::env::args().nth(1).unwrap_or_else(|| "/".into());
    let inv = rdma_hca::Host::new(root).inventory()?;
    let vfs = inv.functions.values().filter(|f| f.is_vf()).count();
    println!(
        "{} PCI functions ({vfs} VFs), {} netdevs, {} RDMA devices, netns mode {:?}",
        inv.functions.len(),
        inv.netdevs.len(),
        inv.rdma_devices.len(),
        inv.netns_mode
    );
    Ok(())
}
