#!/usr/bin/env bash
# The main job on a simulated ConnectX node: build, write a simulated dual-port
# ConnectX-6 Dx host (2 PFs x 8 VFs, RDMA devices, default route on the first PF), show
# what the device plugin discovers there, then run the daemon against a simulated kubelet:
# registration, device lists, one Allocate for rdma/hca and one for a VF.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
./scripts/deps.sh build
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

echo "== building (release)"
cargo build --release -q -p device-plugin -p simhost -p node-tests --bin device-plugin --bin simhost --bin kubelet-sim
bin=$PWD/target/release

work=$(mktemp -d /tmp/rdma-hca-demo.XXXXXX)
daemon=
cleanup() {
    [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. a simulated ConnectX-6 Dx node at $work/host (sysfs, /dev/infiniband, /proc/net/route)"
"$bin/simhost" cx6dx "$work/host"

step "2. device-plugin discover --root $work/host   (embedded default config: rdma/hca + rdma/vhca)"
"$bin/device-plugin" discover --root "$work/host"

step "3. the daemon against a simulated kubelet (device-plugin dir $work/dp)"
mkdir -p "$work/dp" "$work/devinfo"
"$bin/kubelet-sim" --dir "$work/dp" --expect rdma/hca,rdma/vhca \
    --allocate rdma/hca --allocate rdma/vhca --timeout 20 &
sim=$!
# the daemon retries Register until kubelet.sock is there, so the start order does not matter
"$bin/device-plugin" --root "$work/host" --device-plugin-path "$work/dp" \
    --device-info-dir "$work/devinfo" --log-level info 2> "$work/daemon.log" &
daemon=$!
rc=0
wait "$sim" || rc=$?

step "4. what the daemon logged"
cat "$work/daemon.log"

step "5. device-info files written for multus (Network Plumbing WG device-info 1.1.0)"
for f in "$work"/devinfo/*; do [ -e "$f" ] && { echo "$f"; cat "$f"; echo; }; done

kill "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null || true; daemon=
exit $rc
