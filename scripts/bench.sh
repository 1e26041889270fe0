#!/usr/bin/env bash
# Measure the project and write docs/BENCHMARKS.md: discovery, Allocate, daemon RSS,
# re-registration after a kubelet restart, DRA (slices, NodePrepareResources, RSS with
# both interfaces), sriov ADD/DEL (Ethernet and InfiniBand), netlink round trips, binary
# sizes, and ADD/DEL on a real VF from the QEMU lab. Every figure has its target beside it.
#   ./scripts/bench.sh            # all (the lab part reuses its last results if present)
#   BENCH_LAB=1 ./scripts/bench.sh  # also (re)run the QEMU lab's latency scenario
#   BENCH_REPORT_ONLY=1 ./scripts/bench.sh  # rewrite the report from target/bench/ only
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
./scripts/deps.sh test
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

out=target/bench
mkdir -p "$out" docs
log() { printf '\n== %s\n' "$*" >&2; }

labres=${CARGO_TARGET_DIR:-target}/vmlab/results.txt
if [ "${BENCH_REPORT_ONLY:-0}" != 1 ]; then
log "release build"
cargo build --release -q -p device-plugin -p sriov-cni -p node-tests -p simhost

log "discovery (rdma-hca inventory; 64, 256, 1024 VFs)"
cargo bench -q -p rdma-hca --bench inventory 2>/dev/null | tee "$out/inventory.txt"

log "discovery instruction count (callgrind, 1024 VFs, one run)"
cargo build --release -q -p rdma-hca --example inventory
tree=$(mktemp -d /dev/shm/bench-host.XXXXXX)
trap 'rm -rf "$tree"' EXIT
target/release/simhost large "$tree/h"
valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/inventory "$tree/h" \
    2>&1 | grep -E "Collected" | tee "$out/callgrind.txt" || true
strace -c -o "$out/strace.txt" target/release/examples/inventory "$tree/h" >/dev/null 2>&1 || true

log "device plugin (discovery + pools, cold start, RSS, Allocate)"
cargo bench -q -p device-plugin 2>/dev/null | tee "$out/device-plugin.txt"

log "re-registration after kubelet restarts (100 restarts)"
cargo nextest run -p node-tests --test device_plugin_lifecycle --no-capture kubelet_restart 2>&1 \
    | grep -iE "re-?registration" | tee "$out/reregistration.txt" || true

log "daemon idle CPU over 60 s and re-registration on the 1024-VF host"
cargo bench -q -p node-tests --bench device_plugin_idle 2>/dev/null | tee "$out/idle.txt"

log "DRA ResourceSlices for 1024 VFs to the API server stand-in"
cargo bench -q -p node-tests --bench dra_publish 2>/dev/null | tee "$out/dra-publish.txt"

log "daemon RSS with both interfaces (device plugin + DRA), 1024 VFs"
cargo bench -q -p node-tests --bench dra_daemon_rss 2>/dev/null | tee "$out/dra-rss.txt"

log "sriov ADD/DEL (veth stand-in VF, real netns)"
cargo bench -q -p sriov-cni --bench add_del 2>/dev/null | tee "$out/sriov.txt"

if [ "${BENCH_LAB:-0}" = 1 ] || [ ! -f "$labres" ]; then
    log "QEMU lab latency scenario (real igb VF)"
    VMLAB_PROFILE=release VMLAB_ONLY=latency ./scripts/vmlab.sh || true
fi
# the bench profile writes its binaries to target/release too: put the release ones back
# for the size row
cargo build --release -q -p device-plugin -p sriov-cni
fi
lab=$(grep -hE "^metric: (cni_|exec_overhead)|^wall:|passed, " "$labres" 2>/dev/null || true)

# --- pick the figures out of the raw outputs ---
pick() { grep -m1 -E "$1" "$2" 2>/dev/null | sed -E "s/.*$3.*/\1/; s/ \| /; /g; s/  +/ /g" || true; }
inv64=$(pick '^inventory +64 ' "$out/inventory.txt" 'p50 +([0-9.]+ms)')
inv256=$(pick '^inventory +256 ' "$out/inventory.txt" 'p50 +([0-9.]+ms)')
inv1024=$(pick '^inventory +1024 ' "$out/inventory.txt" 'p50 +([0-9.]+ms)')
disc_pools=$(pick '^discovery \+ pools' "$out/device-plugin.txt" 'median ([0-9.]+ ms)')
alloc=$(pick '^Allocate \(1 VF' "$out/device-plugin.txt" '(p50 [0-9.]+ ms p99 [0-9.]+ ms)')
alloc_hca=$(pick '^Allocate rdma/hca' "$out/device-plugin.txt" '(p50 [0-9.]+ ms p99 [0-9.]+ ms)')
rss=$(pick '^daemon RSS idle' "$out/device-plugin.txt" ': ([0-9]+ KiB)')
cold=$(pick '^cold start' "$out/device-plugin.txt" '(median [0-9.]+ ms)')
rereg=$(sed -nE 's/.*(median [0-9.]+ ms, worst [0-9.]+ ms).*/\1/p' "$out/reregistration.txt" 2>/dev/null | head -1 || true)
rereg_large=$(pick '^kubelet restarts \(Large' "$out/idle.txt" '(median [0-9.]+ ms, worst [0-9.]+ ms)')
idle=$(pick '^idle CPU' "$out/idle.txt" '= ([0-9.]+ % of one core)')
sr_in=$(pick '^in-process' "$out/sriov.txt" '(ADD p50.*)')
sr_cpu=$(pick '^in-process CPU' "$out/sriov.txt" '(ADD p50.*)')
sr_floor=$(pick '^kernel netns move' "$out/sriov.txt" '(ADD p50.*)')
sr_bin=$(pick '^binary +n=' "$out/sriov.txt" '(ADD p50.*)')
sr_ipam=$(pick '^binary\+host-local' "$out/sriov.txt" '(ADD p50.*)')
rtt=$(pick '^netlink round trips' "$out/sriov.txt" 'netlink round trips: (.*)')
instr=$(sed -E 's/.*Collected : ([0-9]+).*/\1/' "$out/callgrind.txt" 2>/dev/null || true)
syscalls=$(awk '/total/ {print $4}' "$out/strace.txt" 2>/dev/null || true)
dra_first=$(pick '^first publish' "$out/dra-publish.txt" '(p50 [0-9.]+ ms .* sent +[0-9]+ B)')
dra_change=$(pick '^one VF gone' "$out/dra-publish.txt" '(p50 [0-9.]+ ms .* sent +[0-9]+ B)')
dra_same=$(pick '^unchanged' "$out/dra-publish.txt" '(p50 [0-9.]+ ms .* sent +[0-9]+ B)')
dra_prep=$(pick '^  prepare ' "$out/device-plugin.txt" '(p50 [0-9.]+ ms +p99 [0-9.]+ ms)')
dra_unprep=$(pick '^  unprepare ' "$out/device-plugin.txt" '(p50 [0-9.]+ ms +p99 [0-9.]+ ms)')
dra_rss_dp=$(pick '^daemon RSS idle, device plugin only' "$out/dra-rss.txt" ': ([0-9]+ KiB \(anon [0-9]+ KiB)')
dra_rss=$(pick '^daemon RSS idle, device plugin \+ DRA' "$out/dra-rss.txt" ': ([0-9]+ KiB \(anon [0-9]+ KiB)')
dra_rss_claims=$(pick '^daemon RSS, device plugin \+ DRA with' "$out/dra-rss.txt" ': ([0-9]+ KiB \(anon [0-9]+ KiB)')
ib_in=$(pick '^in-process IB +n=' "$out/sriov.txt" '(ADD p50.*)')
ib_cpu=$(pick '^in-process IB CPU' "$out/sriov.txt" '(ADD p50.*)')
ib_bin=$(pick '^binary IB' "$out/sriov.txt" '(ADD p50.*)')
ib_rtt=$(pick '^IB netlink round trips' "$out/sriov.txt" 'IB netlink round trips: (.*)')
size() { stat -c %s "target/release/$1" 2>/dev/null | awk '{printf "%.1f MB", $1/1048576}'; }

{
echo "# Benchmarks"
echo
echo "Written by \`./scripts/bench.sh\` on $(date -u +%Y-%m-%d) ($(nproc) cores, $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg) at the end)."
echo "Raw outputs are in \`target/bench/\`. Simulated hosts live on tmpfs (\`/dev/shm\`)."
echo
echo "| what | measured | target |"
echo "|---|---|---|"
echo "| discovery, 64 VFs (inventory p50) | ${inv64:-n/a} | |"
echo "| discovery, 256 VFs (inventory p50) | ${inv256:-n/a} | |"
echo "| discovery, 1024 VFs (inventory p50) | ${inv1024:-n/a} | < 50 ms |"
echo "| discovery, 1024 VFs: instructions / syscalls (callgrind, strace) | ${instr:-n/a} / ${syscalls:-n/a} | |"
echo "| discovery + pools, 1024 VFs (median) | ${disc_pools:-n/a} | < 50 ms |"
echo "| Allocate, 1 VF of 1024 (10k calls, unix socket) | ${alloc:-n/a} | p99 < 1 ms |"
echo "| Allocate, rdma/hca (10k calls) | ${alloc_hca:-n/a} | |"
echo "| DRA NodePrepareResources, 1 VF of 1024 (dra.sock v1, in-process ClaimSource; unprepare after the semicolon) | ${dra_prep:-n/a}; ${dra_unprep:-n/a} | p99 < 5 ms |"
echo "| daemon RSS idle, 1024 VFs + 1000 shared IDs (bench-profile binary, thin LTO) | ${rss:-n/a} | < 15 MB |"
echo "| daemon RSS, device plugin only, 1024 VFs (release binary, kubelet simulator) | ${dra_rss_dp:-n/a}${dra_rss_dp:+)} | |"
echo "| daemon RSS, device plugin + DRA, 1024 VFs (release binary; 8 slices published, DRA registered) | ${dra_rss:-n/a}${dra_rss:+)} | < 20 MiB |"
echo "| daemon RSS, device plugin + DRA, 100 claims prepared | ${dra_rss_claims:-n/a}${dra_rss_claims:+)} | < 20 MiB |"
echo "| cold start to all resources registered, 1024 VFs | ${cold:-n/a} | |"
echo "| re-registration after kubelet restart (100 restarts, cx6dx) | ${rereg:-n/a} | < 1 s |"
echo "| re-registration after kubelet restart (20 restarts, 1024 VFs) | ${rereg_large:-n/a} | < 1 s |"
echo "| daemon idle CPU over 60 s, 1024 VFs | ${idle:-n/a} | no busy polling |"
echo "| DRA: publish ResourceSlices, 1024 VFs (8 slices, stand-in over loopback) | ${dra_first:-n/a} | |"
echo "| DRA: one VF gone, 1024 VFs (generation bump, 8 updates) | ${dra_change:-n/a} | |"
echo "| DRA: resync with nothing changed, 1024 VFs (1 list, no write) | ${dra_same:-n/a} | |"
echo "| sriov ADD/DEL in process, no IPAM (veth stand-in) | ${sr_in:-n/a} | ADD p50 < 5 ms |"
echo "| sriov ADD/DEL in process: CPU time of the thread (user + system) | ${sr_cpu:-n/a} | |"
echo "| kernel floor: the bare netns move in (ADD) and back (DEL), same veth | ${sr_floor:-n/a} | (kernel RCU waits) |"
echo "| sriov ADD/DEL, binary, no IPAM | ${sr_bin:-n/a} | |"
echo "| sriov ADD/DEL, binary + host-local | ${sr_ipam:-n/a} | |"
echo "| netlink round trips | ${rtt:-n/a} | minimal, no dumps |"
echo "| sriov ADD/DEL, InfiniBand VF on the fake's IB model, in process, no IPAM (GUIDs + rebind; the fake's bind returns at once, a real mlx5 probe adds its own time) | ${ib_in:-n/a} | |"
echo "| sriov ADD/DEL, InfiniBand VF, in process: CPU time of the thread | ${ib_cpu:-n/a} | |"
echo "| sriov ADD/DEL, InfiniBand VF, binary, no IPAM | ${ib_bin:-n/a} | |"
echo "| netlink round trips, InfiniBand VF | ${ib_rtt:-n/a} | |"
echo "| binary size: device-plugin / sriov | $(size device-plugin) / $(size sriov) | |"
echo
echo "Where a figure misses its target: \`sriov\` ADD without IPAM cannot reach 5 ms wall time on"
echo "this kernel, because moving a netdev into another netns (\`__dev_change_net_namespace\`)"
echo "waits for RCU (\`synchronize_net\`, \`rcu_barrier\`); the \"kernel floor\" row is that move alone,"
echo "done with the same netlink code, and ADD's own CPU time is the row above it."
echo "Discovery's wall time is mostly the kernel's, answering ~27k sysfs syscalls, so it moves"
echo "with the machine and its kernel (43 ms on the 2026-12-05 VM, with the same instruction"
echo "count); compare the callgrind instruction count across machines."
echo
echo "## Real VF (QEMU lab, igb under TCG)"
echo
echo '```'
echo "${lab:-no lab results: run ./scripts/vmlab.sh}"
echo '```'
echo
echo "## Raw"
for f in inventory device-plugin reregistration idle dra-publish dra-rss sriov; do
    echo
    echo "### $f"
    echo '```'
    cat "$out/$f.txt" 2>/dev/null || echo "(missing)"
    echo '```'
done
} > docs/BENCHMARKS.md
log "wrote docs/BENCHMARKS.md"
cat docs/BENCHMARKS.md
