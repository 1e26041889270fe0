//! Discovery time of a whole host inventory, for the simulated profiles up to 1024 VFs.
//!
//! `cargo bench -p rdma-hca` prints min / p50 / p99 per profile. Run under
//! `valgrind --tool=callgrind` (with `BENCH_ITERS=1`) for a repeatable instruction count.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rdma_hca::Host;
use simhost::{PfSpec, Profile, SimHost, VfBinding};
use std::time::{Duration, Instant};

fn large_with(pfs: u32, vfs: usize) -> Vec<PfSpec> {
    let (mut spec, _) = Profile::Large.spec();
    spec.truncate(pfs as usize);
    for pf in &mut spec {
        pf.vfs = vec![VfBinding::Mlx5; vfs];
    }
    spec
}

fn main() {
    let iters: usize = std::env::var("BENCH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    // pfs x vfs-per-pf: 64, 256 and 1024 VFs
    for (pfs, vfs) in [(4u32, 16usize), (4, 64), (16, 64)] {
        let dir = simhost::tempdir().unwrap();
        let sim =
            SimHost::create_with(dir.path(), large_with(pfs, vfs), Some("enp16s0f0")).unwrap();
        let host = Host::new(sim.root());
        let inv = host.inventory().unwrap(); // warm the dentry cache
        let nvf = inv.functions.values().filter(|f| f.is_vf()).count();
        assert_eq!(nvf, pfs as usize * vfs);
        let mut times: Vec<Duration> = (0..iters)
            .map(|_| {
                let t = Instant::now();
                let inv = host.inventory().unwrap();
                let e = t.elapsed();
                std::hint::black_box(inv);
                e
            })
            .collect();
        times.sort();
        let pct = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
        println!(
            "inventory {nvf:>5} VFs: min {:>8.2?}  p50 {:>8.2?}  p99 {:>8.2?}  ({iters} runs)",
            times[0],
            pct(0.50),
            pct(0.99)
        );
    }
}
