#!/usr/bin/env bash
# Install what the project needs on a fresh Debian machine (as root). Idempotent.
#   deps.sh build  - a Rust toolchain (>= 1.95) with rustfmt and clippy
#   deps.sh test   - build + what the tests exec: CNI plugins, iproute2, podman, busybox
set -euo pipefail
what=${1:-build}

log() { printf '[deps] %s\n' "$*" >&2; }

apt_install() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "apt-get install ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

# Rust: use the machine's toolchain; install rustup's stable only where there is none.
if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] || {
        apt_install ca-certificates curl gcc libc6-dev
        log "installing Rust with rustup"
        curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal >/dev/null
    }
    export PATH="$HOME/.cargo/bin:$PATH"
fi
if command -v rustup >/dev/null 2>&1; then
    for c in rustfmt clippy; do
        rustup component list --installed 2>/dev/null | grep -q "^$c" || {
            log "rustup component add $c"
            rustup component add "$c" >/dev/null 2>&1
        }
    done
fi
apt_install gcc pkg-config

if [ "$what" = test ]; then
    # host-local/static/tuning/portmap IPAM and meta plugins under /usr/lib/cni,
    # ip/netns for the privileged tests, podman (CNI backend) + busybox rootfs for the
    # real-runtime test, valgrind for instruction counts in benchmarks.
    # golang-go + golang-google-grpc-dev (grpc-go, built offline in GOPATH mode) and
    # python3-grpcio: gRPC clients that are not ours, dialling the daemon as kubelet does.
    apt_install iproute2 containernetworking-plugins podman busybox-static valgrind procps \
        golang-go golang-google-grpc-dev python3-grpcio
fi
