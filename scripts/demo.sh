#!/usr/bin/env bash
# The main job on a simulated ConnectX node: build, write a simulated dual-port
# ConnectX-6 Dx host (2 PFs x 8 VFs, RDMA devices, default route on the first PF) and
# show what the device plugin discovers there.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
./scripts/deps.sh build
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

echo "== building (release)"
cargo build --release -q -p device-plugin -p simhost
bin=target/release

work=$(mktemp -d /tmp/rdma-hca-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
"$bin/simhost" cx6dx "$work/host"
echo "== simulated host written to $work/host (sysfs, /dev/infiniband, /proc/net/route)"
echo
echo "== device-plugin discover --root $work/host"
"$bin/device-plugin" discover --root "$work/host"
